"""Benchmarks of ``difiisr-dwt bench``, one module per section.

CPU sections, random weights: ``encoder`` (DWT vs VQ-f4 encoder), ``end-to-end`` (this pipeline vs the
same pipeline started from the VQ encoder and diffusers' LDM x4 pipeline), ``tiling`` (time and peak memory
against output size). On request: ``train`` (samples/s of the diffusion training stage; needs training data)
``gpu`` (a trained pipeline's accelerator path: determinism, CPU/device agreement, half precision, offload)
and ``cost`` (a trained pipeline's CPU cost: whole-process CPU time against Real-ESRGAN x4plus, the
per-component split, decode time per output megapixel and peak memory without tiling, the start-up
stages of a fresh process, the decode's channels-last layout against the contiguous one).

:func:`run_benchmarks` runs the chosen sections in this process (tiling starts one child process per size)
and returns a JSON-ready dict; :func:`difiisr_dwt.benchmarks.report.format_markdown` renders it. Every
section reads its settings from one :class:`BenchConfig`.
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

#: Every section, in run order; :data:`DEFAULT_SECTIONS` run when none is named.
SECTIONS = ("encoder", "end-to-end", "tiling", "train", "gpu", "cost")
DEFAULT_SECTIONS = ("encoder", "end-to-end", "tiling")
#: section -> (module of this package, function) that runs it; its results go under the name with "_" for "-".
_RUNNERS = {"encoder": ("encoder", "bench_encoder"), "end-to-end": ("end_to_end", "bench_end_to_end"),
            "tiling": ("tiling", "bench_tiling"), "train": ("train_throughput", "bench_training"),
            "gpu": ("gpu_check", "bench_gpu"), "cost": ("cost", "bench_cost")}


@dataclass
class BenchConfig:
    """What to measure. :data:`FULL` is the honest comparison; :data:`QUICK` a seconds-long smoke run."""

    seed: int = 0  # weights, inputs and sampling noise
    # encoder
    encoder_preset: str = "full"
    encoder_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(256, 256), (768, 1024)])
    fast_repeats: int = 50  # per millisecond-scale op (median taken)
    fast_seconds: float = 2.0  # time budget per millisecond-scale op
    vq_repeats: int = 3
    vq_seconds: float = 10.0  # time budget per VQ-encoder size (one call always runs)
    # end-to-end
    e2e_preset: str = "full"
    e2e_lr_size: tuple[int, int] = (64, 64)  # output 256x256
    steps: tuple[int, ...] = (1, 4, 15)
    ldm_steps: int = 100
    repeats: int = 6  # per pipeline and step count, alternating A B B A; medians (1-step runs vary ~4%)
    component_repeats: int = 2  # separate timing of each component (fastest kept)
    component_seconds: float = 6.0
    # tiling
    tiling_preset: str = "tiny"
    tiling_sizes: tuple[int, ...] = (512, 1024, 2048)
    tiling_steps: int = 15
    tile_size: int = 64
    tile_overlap: int = 16
    decode_tile_size: int = 160  # the pipeline default (enable_decode_tiling)
    decode_tile_overlap: int = 16
    tiling_isolate: bool = True  # one fresh process per size
    # train: the diffusion stage of train_accelerate.py, fresh VQ and DWT-encoder folders unless train_args name some
    train_preset: str = "tiny"
    train_batch_size: int = 8
    train_resolution: int = 64
    train_steps: int = 20  # timed steps
    train_warmup_steps: int = 25  # untimed steps first: the loader decodes every image once, lazy set-up
    train_args: tuple[str, ...] = ()  # more train_accelerate.py flags (data, --lpips_backbone_dir, workers...)
    # gpu and cost
    gpu_model: str | None = None  # pipeline folder or Hub repo id; None is the embedded default model
    gpu_device: str = "cuda"
    gpu_quick: bool = False  # a 64x64 crop, 2 steps, one timed call each, no large input
    # cost: the default call of gpu_model on CPU (difiisr_dwt.benchmarks.cost)
    cost_threads: int = 2
    cost_repeats: int = 2  # timed whole-process runs per command (after one warm-up run)
    cost_component_repeats: int = 3  # default calls of the in-process split (after one warm-up call)
    cost_folder_sizes: tuple[int, ...] = (1, 6)  # frames per folder of the whole-process comparison
    cost_sizes: tuple[tuple[int, int], ...] = ((160, 128), (640, 512))  # LR (width, height), no tiling
    cost_realesrgan: str | None = None  # realesrgan_torch.py; None: ../shared/tools/realesrgan_torch.py of the cwd
    cost_frames: tuple[str, ...] = ()  # LR frames (folders or image files); (): the checkout's examples/images
    cost_whole_process: bool = True
    cost_isolate: bool = True  # one fresh process per size (honest peaks)
    cost_timeout_s: float = 7200.0  # per child process
    cost_size_timeout_s: float = 1800.0  # per size without tiling: beyond it the row says so (attention decoders)
    cost_startup: bool = True  # the start-up stages of a fresh process and the decode-layout comparison


FULL = BenchConfig()
QUICK = BenchConfig(
    encoder_preset="test", encoder_sizes=[(32, 32), (48, 64)], fast_seconds=0.1, vq_seconds=0.2,
    e2e_preset="test", e2e_lr_size=(8, 8), ldm_steps=100, repeats=1, component_seconds=0.2,
    tiling_preset="test", tiling_sizes=(32, 64), tiling_steps=2, tile_size=4, tile_overlap=2,
    decode_tile_size=4, decode_tile_overlap=2, tiling_isolate=False,
    train_preset="test", train_batch_size=2, train_steps=2, train_warmup_steps=1, gpu_quick=True,
    cost_repeats=1, cost_component_repeats=1, cost_folder_sizes=(1, 2), cost_sizes=((16, 16), (32, 24)),
    cost_isolate=False,
)


def run_benchmarks(config: BenchConfig, sections: tuple[str, ...] = DEFAULT_SECTIONS,
                   threads: int | None = None, on_section: Callable[[dict], None] | None = None) -> dict:
    """Run ``sections`` of ``config``.

    Args:
        config: sizes, presets, repeats and each section's inputs.
        sections: names from :data:`SECTIONS`.
        threads: torch threads while benchmarking (and of the tiling children); the previous count
            is restored afterwards. ``None`` keeps the current count.
        on_section: called with the results so far after each section, and after each part of the long
            ``cost`` section (``bench --json`` saves them, so that an interrupted run keeps what it finished).

    Returns:
        ``{"meta": {...}, <section>: {...}}`` with ``end_to_end`` as the key of ``end-to-end``.

    Raises:
        ValueError: an unknown section.
    """
    import torch  # here, not at the top: `difiisr-dwt bench --help` reads this module's names without torch

    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"Unknown benchmark sections {unknown}; choose from {SECTIONS}.")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_sections(config, sections, on_section or (lambda results: None))
    finally:
        torch.set_num_threads(previous_threads)


def _run_sections(config: BenchConfig, sections: tuple[str, ...], on_section: Callable[[dict], None]) -> dict:
    import torch

    results: dict = {
        "meta": {
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
            "device": config.gpu_device if "gpu" in sections else "cpu",
            "config": asdict(config),
        }
    }
    # Each section's module is imported only when it runs: diffusers, accelerate and the training code are
    # seconds of start-up that a single section does not need.
    for section in SECTIONS:
        if section in sections:
            module, function = _RUNNERS[section]
            run = getattr(importlib.import_module(f"difiisr_dwt.benchmarks.{module}"), function)
            key = section.replace("-", "_")

            def progress(partial: dict, key: str = key) -> None:  # a long section's finished parts, saved as they come
                results[key] = partial
                on_section(results)

            extra = {"tiling": {"threads": torch.get_num_threads()}, "cost": {"progress": progress}}.get(section, {})
            results[key] = run(config, **extra)
            on_section(results)
    results["meta"]["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return results
