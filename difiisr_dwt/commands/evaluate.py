"""``difiisr-dwt eval``: PSNR_Y / SSIM_Y / LPIPS of x4 results against HR images, with a bicubic baseline.

Measure x4 super-resolution against HR images: PSNR and SSIM on the BasicSR Y channel, LPIPS (AlexNet, VGG) on
RGB; grayscale images count as three equal channels. Files pair by name (LR/SR names may add a suffix such as
x4 or _x4). Without --lr, LR is made from HR (cropped to a multiple of 4) by PIL bicubic /4, the DifIISR/M3FD
protocol; every method is measured against that cropped HR (an SR at the full HR size is cropped the same
way). With --noisy-lr that LR gets sensor noise (Gaussian, sigma 2 grey levels, and a per-column
offset, sigma 1.5; :class:`difiisr_dwt.evaluation.SensorNoise` has the exact recipe). Every method sees the
same LR and is measured against the clean HR; --save-lr writes those LR for other tools. A model run always
gets the bicubic baseline (PIL bicubic x4 of the same LR) as a second row; --back-projection adds classical
iterative back-projection (10 rounds from bicubic, no model).
Radiometric HR files (16-bit / float TIFF, 16-bit PNG, FLIR R-JPEG) are measured in their units instead: LR =
bicubic /4 in float, LR error, level drift, MAE / RMSE against the HR, in counts or kelvin (--range LOW HIGH
for the model).

Examples::

    # the model (default: the embedded one) on LR made from HR by PIL bicubic /4, with the bicubic baseline
    difiisr-dwt eval --hr shared/data/ir/roadscene --file-list shared/data/ir/roadscene_val.txt \\
        --model PATH --seed 0 --json out.json --grid grid.png
    # results someone else produced, paired with HR by file name
    difiisr-dwt eval --hr HR_DIR --sr SR_DIR --bicubic --csv out.csv
    # noisy LR: bicubic, back-projection and the embedded model, and the LR saved for another method (e.g.
    # Real-ESRGAN), whose results are then measured on the same LR with --sr
    difiisr-dwt eval --hr shared/data/ir/tno --noisy-lr --back-projection --default-model --save-lr noisy_lr/
    difiisr-dwt eval --hr shared/data/ir/tno --noisy-lr --sr realesrgan_out/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from difiisr_dwt import DEFAULT_MODEL
from difiisr_dwt.commands import int_at_least
from difiisr_dwt.evaluation import METRICS, SensorNoise
from difiisr_dwt.io import IMAGE_SUFFIXES, InputGuard, write_text_atomic
from difiisr_dwt.loading import add_model_arguments
from difiisr_dwt.options import add_lpips_backbone_dir, add_sampling_arguments, apply_sampling_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``difiisr-dwt eval`` (the parser itself comes from :mod:`difiisr_dwt.cli`)."""
    parser.add_argument("--hr", required=True, type=Path, help="folder of HR (ground-truth) images")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--sr", type=Path, default=None, help="folder of x4 results to measure (method 'sr')")
    parser.add_argument("--lr", type=Path, default=None,
                        help="folder of LR inputs (default: made from HR by PIL bicubic /4)")
    add_model_arguments(parser, model_group=source, model_help="pipeline folder or Hub repo id to run on LR (default: "
                        "the embedded model, unless --sr is given or --bicubic / --back-projection alone ask for "
                        "baselines only)")
    # a flag, not a --model value: any name could also be a folder or a Hub repo id
    source.add_argument("--default-model", "--default_model", dest="model", action="store_const",
                        const=DEFAULT_MODEL, help="run the embedded default model (the one upscale uses without "
                        "--model), also beside --bicubic / --back-projection")
    parser.add_argument("--bicubic", action="store_true",
                        help="measure the bicubic baseline; given without --model it is the only method")
    parser.add_argument("--back-projection", "--back_projection", action="store_true",
                        help="also measure classical iterative back-projection (10 rounds of "
                        "SR += up(LR - down(SR)) from bicubic, no model); without --model, no model runs")
    noise = parser.add_argument_group(
        "noisy LR", "LR made from HR by PIL bicubic /4, then sensor noise (numpy, one seeded stream per image "
        "name; see difiisr_dwt.evaluation.SensorNoise), clipped and rounded to 8 bit; metrics against the clean HR")
    noise.add_argument("--noisy-lr", "--noisy_lr", action="store_true", help="add the noise below to the LR")
    noise.add_argument("--noise-sigma", "--noise_sigma", type=float, default=None, metavar="GREY",
                       help=f"per-pixel Gaussian noise, grey levels (default {SensorNoise.sigma})")
    noise.add_argument("--column-noise-sigma", "--column_noise_sigma", type=float, default=None,
                       metavar="GREY",
                       help=f"per-column offset (stripes), grey levels (default {SensorNoise.column_sigma})")
    noise.add_argument("--noise-seed", "--noise_seed", type=int_at_least(0), default=None,
                       help=f"numpy seed of the noise (default {SensorNoise.seed})")
    parser.add_argument("--save-lr", "--save_lr", type=Path, default=None, metavar="DIR",
                        help="write the LR made from HR (noisy with --noisy-lr) to DIR as <HR name>.png")
    parser.add_argument("--file-list", "--file_list", type=Path, default=None,
                        help="text file of HR file names to use, one per line (e.g. roadscene_val.txt)")
    parser.add_argument("--limit", type=int_at_least(1), default=None, help="use only the first N HR images")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help=f"comma-separated subset of {','.join(METRICS)} (default: all)")
    parser.add_argument("--crop-border", "--crop_border", type=int_at_least(0), default=0,
                        help="pixels removed from each side before measuring (default 0)")
    add_lpips_backbone_dir(parser, dashes=True)
    add_sampling_arguments(parser)
    parser.add_argument("--json", type=Path, default=None, help="write {method: {mean, max, images, protocol}} as "
                        "JSON (protocol: the images, the LR, for the model its weights and settings)")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per (method, image) as CSV")
    parser.add_argument("--grid", type=Path, default=None,
                        help="write a PNG of crops side by side (bicubic | model/sr | HR)")
    parser.add_argument("--grid-images", "--grid_images", type=int_at_least(1), default=4,
                        help="rows of the grid: the first N images (default 4)")
    parser.add_argument("--summary-only", action="store_true", help="print only the mean rows")


def select_methods(args: argparse.Namespace) -> list[str]:
    """``bicubic`` when asked for or as a model's baseline, ``back_projection`` when asked for; ``model``
    unless ``--sr`` is given or only baselines are asked for (``--bicubic`` / ``--back-projection`` alone)."""
    baselines = ["bicubic"] if args.bicubic else []
    baselines += ["back_projection"] if getattr(args, "back_projection", False) else []
    if args.sr is not None:
        return [*baselines, "sr"]
    if baselines and args.model is None:
        return baselines
    return ["bicubic", *(m for m in baselines if m != "bicubic"), "model"]


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write the reports; bad options or inputs raise (exit 2 at the CLI boundary)."""
    from tqdm.auto import tqdm

    from difiisr_dwt import evaluation as ev

    # the reports may not land on what is measured: the HR/LR/SR folders, the file list, the model
    guard = InputGuard(files=[args.file_list] if args.file_list else [],
                       folders=[args.hr, args.lr, args.sr, args.lpips_backbone_dir]).add_models(args.model)
    guard.check_options({"--json": args.json, "--csv": args.csv, "--grid": args.grid, "--save-lr": args.save_lr})
    if args.grid is not None and args.grid.suffix.lower() not in IMAGE_SUFFIXES:  # found before the model runs
        raise ev.EvaluationError(f"--grid {args.grid}: not an image file name (use .png)")
    if args.lr is not None and (args.noisy_lr or args.save_lr is not None):
        raise ev.EvaluationError("--noisy-lr and --save-lr make LR from HR; they cannot go with --lr")
    lr_noise = _sensor_noise(args)
    metrics = ev.parse_metrics(args.metrics)
    methods = select_methods(args)
    hr_paths = ev.list_hr(args.hr, args.file_list, args.limit)
    if _is_radiometric(hr_paths[0]):
        return _run_radiometric(args, hr_paths, methods)
    needs_lr = bool(set(ev.LR_METHODS) & set(methods))
    lr_paths = ev.pair_files(hr_paths, args.lr, "--lr") if needs_lr and args.lr is not None else None
    sr_paths = ev.pair_files(hr_paths, args.sr, "--sr") if args.sr is not None else None
    device = None
    if any(m.startswith("lpips") for m in metrics) or "model" in methods:
        from difiisr_dwt.loading import resolve_device

        device = resolve_device(args.device)
    if any(m.startswith("lpips") for m in metrics):
        from difiisr_dwt.metrics import load_lpips

        for name in metrics:  # fail before the (slow) model run when a backbone is missing
            if name.startswith("lpips"):
                load_lpips(name.split("_")[1], args.lpips_backbone_dir, device)
    upscale, protocol, model_protocol = None, _protocol(args, hr_paths, lr_noise, metrics), {}
    if "model" in methods:
        upscale, model_protocol = _model_upscaler(args)
    settings = ev.MetricSettings(metrics=metrics, crop_border=args.crop_border,
                                 lpips_backbone_dir=args.lpips_backbone_dir, device=device)
    results, grid_rows = ev.evaluate(
        hr_paths, methods, lr_paths=lr_paths, sr_paths=sr_paths, upscale=upscale, settings=settings,
        grid_images=args.grid_images if args.grid is not None else 0,
        progress=lambda it: tqdm(it, desc="eval", unit="img", disable=None),
        lr_noise=lr_noise, save_lr_dir=args.save_lr,
    )

    print(ev.markdown_table(results, per_image=not args.summary_only))
    if args.json is not None:
        protocols = {method: {**protocol, **(model_protocol if method == "model" else {})} for method in results}
        write_text_atomic(ev.to_json(results, protocols), args.json)
        print(f"wrote {args.json}")
    if args.csv is not None:
        write_text_atomic(ev.to_csv(results), args.csv)
        print(f"wrote {args.csv}")
    if args.grid is not None and grid_rows:
        ev.save_grid(ev.comparison_grid(grid_rows), args.grid)
        print(f"wrote {args.grid}")
    return 0


def _sensor_noise(args: argparse.Namespace) -> SensorNoise | None:
    """The :class:`SensorNoise` of ``--noisy-lr`` (defaults for the sigmas not given), else ``None``."""
    from difiisr_dwt.errors import UsageError

    given = {field: getattr(args, option) for field, option in
             [("sigma", "noise_sigma"), ("column_sigma", "column_noise_sigma"), ("seed", "noise_seed")]
             if getattr(args, option) is not None}
    if not args.noisy_lr:
        if given:
            raise UsageError("--noise-sigma, --column-noise-sigma and --noise-seed need --noisy-lr")
        return None
    return SensorNoise(**given)


def _protocol(args: argparse.Namespace, hr_paths: list[Path], lr_noise: SensorNoise | None,
              metrics: tuple[str, ...]) -> dict:
    """What ``--json`` records beside the figures, so that a report (``export``'s model card) can say how
    they were measured: the images, how their LR was made, the metrics' settings."""
    import dataclasses

    from difiisr_dwt.evaluation import list_hr

    available = len(list_hr(args.hr, args.file_list)) if args.limit is not None else len(hr_paths)
    return {
        "hr": str(args.hr), "file_list": None if args.file_list is None else str(args.file_list),
        "limit": args.limit if available > len(hr_paths) else None,  # only when it left images out
        "images": len(hr_paths), "images_available": available,
        "lr": "folder" if args.lr is not None else "bicubic", "lr_folder": None if args.lr is None else str(args.lr),
        "noise": None if lr_noise is None else dataclasses.asdict(lr_noise),
        "sr": None if args.sr is None else str(args.sr), "crop_border": args.crop_border, "metrics": list(metrics),
    }


def _model_upscaler(args: argparse.Namespace):
    """``(upscale, protocol)``: LR PIL image -> x4 PIL image with the pipeline of ``--model`` (every image starts
    from ``--seed``), and what the ``--json`` protocol records of it (the model, its weights' fingerprint, the
    call's settings)."""
    import torch

    from difiisr_dwt.loading import pipeline_call_defaults, pipeline_fingerprint

    pipe, sampling = _pipeline_and_sampling(args)

    def upscale(image):
        generator = torch.Generator("cpu").manual_seed(args.seed)
        return pipe(image, generator=generator, **sampling).images[0]

    call = {k: v for k, v in {**pipeline_call_defaults(), **sampling}.items()
            if k in ("num_inference_steps", "noise_scale", "prior_noise_scale", "lr_consistency", "input_noise_level")}
    protocol = {"model": str(args.model), "model_fingerprint": pipeline_fingerprint(pipe), "dtype": args.dtype,
                "seed": args.seed, "call": call,
                "attention_windows": {"unet": pipe.config.get("unet_attention_window"),
                                      "decoder": pipe.config.get("decoder_attention_window")}}
    return upscale, protocol


def _is_radiometric(path: Path) -> bool:
    from difiisr_dwt.radiometric import read_radiometric

    try:
        return read_radiometric(path) is not None
    except Exception:  # an unreadable file is reported by the path that reads it
        return False


def _run_radiometric(args: argparse.Namespace, hr_paths: list[Path], methods: list[str]) -> int:
    """Radiometric HR files: LR = bicubic /4 in float, every figure in counts or kelvin
    (:mod:`difiisr_dwt.radiometric_eval`)."""
    from tqdm.auto import tqdm

    from difiisr_dwt import evaluation as ev
    from difiisr_dwt import radiometric_eval as rev
    from difiisr_dwt.radiometric import parse_value_range

    if args.sr is not None or args.lr is not None:
        raise ev.EvaluationError("radiometric HR files: LR is made from HR in float (bicubic /4); --lr and --sr "
                                 "are for 8-bit images")
    if args.noisy_lr or args.save_lr is not None:
        raise ev.EvaluationError("radiometric HR files: --noisy-lr and --save-lr are for 8-bit images (the noise "
                                 "recipe is in grey levels)")
    value_range = parse_value_range(args.value_range)
    upscale = None
    if "model" in methods:
        pipe, sampling = _pipeline_and_sampling(args)
        sampling.pop("value_range", None)
        upscale = rev.pipeline_upscaler(pipe, args.seed, **sampling)
    results, unit = rev.evaluate_radiometric(
        hr_paths, methods, upscale, value_range, progress=lambda it: tqdm(it, desc="eval", unit="img", disable=None)
    )
    print(f"radiometric HR ({unit}); LR = bicubic /4 in float; model range: "
          + (f"{value_range[0]:g}..{value_range[1]:g}" if value_range else "each LR's own min..max"))
    print(rev.markdown_table(results, unit, per_image=not args.summary_only))
    if args.json is not None:
        import json

        report = {"unit": unit, "value_range": value_range, "methods": json.loads(ev.to_json(results))}
        write_text_atomic(json.dumps(report, indent=2) + "\n", args.json)
        print(f"wrote {args.json}")
    if args.csv is not None:
        write_text_atomic(ev.to_csv(results), args.csv)
        print(f"wrote {args.csv}")
    return 0


def _pipeline_and_sampling(args: argparse.Namespace):
    """The ``--model`` pipeline (no progress bar) and the ``__call__`` keywords of the sampling options."""
    from difiisr_dwt.errors import UsageError
    from difiisr_dwt.loading import load_pipeline_from_args

    pipe = load_pipeline_from_args(args)
    pipe.set_progress_bar_config(disable=True)
    try:
        return pipe, apply_sampling_arguments(pipe, args)
    except ValueError as error:  # a tile size the UNet cannot take
        raise UsageError(str(error)) from error
