"""VQ decoders compared: decode time per output megapixel, peak memory, and reconstruction ceiling.

The decoder is most of a CPU call of the pipeline; this measures what a decoder design costs and what it
can give back:

- **cost**: seconds per output megapixel of ``vqvae.decode`` on random latents at each LR size (the latent
  of a VQ-f4 model is as large as the LR), median of ``--repeats`` calls after a warm-up, the models
  taking turns (the order alternates each round) so that a drift of a shared machine's speed hits every
  model alike; and the memory one decode needs (peak resident set during the call minus the resident set
  before it). A design whose cost grows linearly with the
  pixels has the same s/MP at every size.
- **ceiling**: every HR image of a folder (or file list) encoded by the *reference* encoder (``--encoder``,
  the latent space the UNet predicts in; unquantised, as the pipeline decodes), decoded by each model and
  measured against the HR (PSNR_Y / SSIM_Y / LPIPS-alex, like ``difiisr-dwt eval``), with the PIL-bicubic
  x4 of the LR as the baseline row; each also after the pipeline's fidelity step (10 rounds of
  back-projection onto the PIL-bicubic LR, on the luma; ``+ BP`` rows; ``bicubic + BP`` is classical
  back-projection). It bounds what the whole pipeline can reach with that decoder.

``python -m difiisr_dwt.benchmarks.decoder MODEL [MODEL ...] --encoder REF [--hr DIR --file-list F] [--json OUT]``
(each MODEL a ``VQModel`` folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from difiisr_dwt.benchmarks.timing import measure_peak_rss
from difiisr_dwt.commands import int_at_least
from difiisr_dwt.errors import ArgumentParser, ModelLoadError, report_errors
from difiisr_dwt.evaluation import (
    MetricSettings,
    bicubic_down,
    bicubic_up,
    image_metrics,
    list_hr,
    load_8bit,
    modcrop,
    to_rgb_array,
)
from difiisr_dwt.options import add_lpips_backbone_dir
from difiisr_dwt.pipelines.pipeline_difiisr_dwt import channels_last_on_cpu

CEILING_METRICS = ("psnr_y", "ssim_y", "lpips_alex")


def _load(folder: str):
    from diffusers import VQModel

    check_vq_folder(folder)
    try:
        return VQModel.from_pretrained(folder).eval()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:  # diffusers' are many lines
        raise ModelLoadError(f"cannot load the VQModel {folder}: {str(error).splitlines()[0]}") from error


def check_vq_folder(folder: str | Path) -> None:
    """Raise :class:`~difiisr_dwt.errors.ModelLoadError` unless ``folder`` looks like a ``VQModel`` folder
    (a ``config.json`` naming ``VQModel``): checked for every model before any work."""
    config = Path(folder) / "config.json"
    if not Path(folder).is_dir():
        raise ModelLoadError(f"cannot load the VQModel {folder}: no such folder")
    try:
        class_name = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        raise ModelLoadError(f"cannot load the VQModel {folder}: no readable config.json (is it a VQModel "
                             "folder, e.g. a pipeline's vqvae/?)") from None
    if class_name != "VQModel":
        raise ModelLoadError(f"cannot load the VQModel {folder}: its config.json is a {class_name}, not a VQModel")


@torch.no_grad()
def _decode(vqvae, latents: torch.Tensor) -> torch.Tensor:
    # in the memory layout the pipeline decodes in
    return vqvae.decode(channels_last_on_cpu(latents), force_not_quantize=True).sample.contiguous()


def decode_seconds(folders: list[str], lr_sizes: list[tuple[int, int]], repeats: int = 3, seed: int = 0
                   ) -> dict[str, dict[str, float]]:
    """``{folder: {"WxH": seconds per output megapixel}}``, median of ``repeats`` calls after one warm-up.

    Args:
        lr_sizes: ``(width, height)`` of the LR (= the latent) of each measured size.
    """
    models = {folder: _load(folder) for folder in folders}
    results: dict[str, dict[str, float]] = {folder: {} for folder in folders}
    generator = torch.Generator().manual_seed(seed)
    for width, height in lr_sizes:
        channels = next(iter(models.values())).config.latent_channels
        latents = torch.randn(1, channels, height, width, generator=generator)
        megapixels = 16 * width * height / 1e6
        times: dict[str, list[float]] = {folder: [] for folder in folders}
        for folder in folders:
            _decode(models[folder], latents)  # warm-up
        for round_index in range(repeats):
            order = folders if round_index % 2 == 0 else folders[::-1]
            for folder in order:
                start = time.perf_counter()
                _decode(models[folder], latents)
                times[folder].append(time.perf_counter() - start)
        for folder in folders:
            results[folder][f"{width}x{height}"] = statistics.median(times[folder]) / megapixels
    return results


def peak_memory_mb(folder: str, lr_size: tuple[int, int], seed: int = 0) -> float | None:
    """Memory one decode at ``lr_size`` (width, height) needs: peak resident memory during the call minus the
    resident memory before it, in MB (:func:`~difiisr_dwt.benchmarks.timing.measure_peak_rss`); ``None`` where
    the peak cannot be reset."""
    vqvae = _load(folder)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, vqvae.config.latent_channels, lr_size[1], lr_size[0], generator=generator)
    _, memory = measure_peak_rss(lambda: _decode(vqvae, latents))
    return memory["peak_over_start_mb"]


@torch.no_grad()
def reconstruction_ceiling(folders: list[str], encoder: str, hr_dir: Path, file_list: Path | None = None,
                           limit: int | None = None, lpips_backbone_dir: str | None = None,
                           metrics: tuple[str, ...] = CEILING_METRICS) -> dict[str, dict[str, float]]:
    """Mean metrics of ``decode_m(encode_ref(HR))`` for each model ``m``, and of bicubic x4, over the HR images,
    each with and without back-projection onto the LR.

    Returns:
        ``{"bicubic" or folder, and the same + " + BP": {metric: mean, "images": n}}``.
    """
    from difiisr_dwt.pipelines.fidelity import back_project

    reference = _load(encoder)
    models = {folder: _load(folder) for folder in folders}
    settings = MetricSettings(metrics=metrics, lpips_backbone_dir=lpips_backbone_dir)
    scores: dict[str, dict[str, list[float]]] = {}
    for path in list_hr(hr_dir, file_list, limit):
        hr_image = modcrop(load_8bit(path))
        hr, lr_image = to_rgb_array(hr_image), bicubic_down(hr_image)
        lr_luma = _tensor(to_rgb_array(lr_image)).mean(dim=1, keepdim=True)
        decoded = {"bicubic": _tensor(to_rgb_array(bicubic_up(lr_image)))}
        latents = reference.encode(_tensor(hr)).latents
        for folder, vqvae in models.items():
            decoded[folder] = _decode(vqvae, latents).clamp(-1, 1)
        for name, sr in decoded.items():
            projected = back_project(sr.mean(dim=1, keepdim=True), lr_luma, 10).expand(-1, 3, -1, -1)
            for suffix, image in (("", sr), (" + BP", projected)):
                for key, value in image_metrics(_uint8(image), hr, settings).items():
                    scores.setdefault(name + suffix, {}).setdefault(key, []).append(value)
    return {name: {**{k: float(np.mean(v)) for k, v in values.items()}, "images": len(next(iter(values.values())))}
            for name, values in scores.items()}


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def _uint8(image: torch.Tensor) -> np.ndarray:
    return np.rint((image[0].clamp(-1, 1).permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)


def _lr_sizes(text: str) -> list[tuple[int, int]]:
    """An argparse ``type``: ``WxH[,WxH...]`` of positive integers."""
    try:
        sizes = [(int(w), int(h)) for w, h in (item.split("x") for item in text.split(",") if item)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH[,WxH...], e.g. 160x128,640x512, got {text!r}") from None
    if not sizes or min(min(size) for size in sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes WxH[,WxH...], got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    """The command line; every failure is one ``error:`` line (exit status 2), found before any work where it can be."""
    return report_errors(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = ArgumentParser(prog="python -m difiisr_dwt.benchmarks.decoder", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="VQModel folders to compare")
    p.add_argument("--encoder", help="VQModel folder whose encoder makes the latents (ceiling; default: the first)")
    p.add_argument("--lr-sizes", type=_lr_sizes, default="160x128,640x512",
                   help="LR (latent) sizes WxH of the cost section")
    p.add_argument("--repeats", type=int_at_least(1), default=3)
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--hr", type=Path, help="HR folder of the ceiling section (skipped without it)")
    p.add_argument("--file-list", type=Path)
    p.add_argument("--limit", type=int_at_least(1))
    add_lpips_backbone_dir(p)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    sizes = args.lr_sizes
    # Every input is checked before the cost section, which takes minutes: the models, the HR images and the
    # LPIPS backbone of the ceiling (it used to fail only when the ceiling started).
    for folder in dict.fromkeys([*args.models, *([args.encoder] if args.encoder else [])]):
        check_vq_folder(folder)
    if args.hr is not None:
        from difiisr_dwt.metrics import load_lpips

        list_hr(args.hr, args.file_list, args.limit)
        if any(name.startswith("lpips") for name in CEILING_METRICS):
            load_lpips("alex", args.lpips_backbone_dir)  # cached: the ceiling reuses it
    report: dict[str, object] = {"threads": torch.get_num_threads()}
    if not args.skip_cost:
        report["decode_s_per_mp"] = decode_seconds(args.models, sizes, args.repeats)
        print(json.dumps({"decode_s_per_mp": report["decode_s_per_mp"]}), flush=True)
    if not args.skip_memory:
        report["peak_mb"] = {m: {f"{w}x{h}": peak_memory_mb(m, (w, h)) for w, h in sizes} for m in args.models}
        print(json.dumps({"peak_mb": report["peak_mb"]}), flush=True)
    if args.hr is not None:
        report["ceiling"] = reconstruction_ceiling(args.models, args.encoder or args.models[0], args.hr,
                                                   args.file_list, args.limit, args.lpips_backbone_dir)
        print(json.dumps({"ceiling": report["ceiling"]}), flush=True)
    if args.json is not None:
        from difiisr_dwt.io import write_text_atomic

        write_text_atomic(json.dumps(report, indent=2), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
