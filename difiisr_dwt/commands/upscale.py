"""``difiisr-dwt upscale INPUT... -o OUTDIR``: x4 super-resolve image files, folders or globs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "upscale",
        help="x4 super-resolve images (files, folders or globs)",
        description="x4 super-resolve infrared images. Grayscale stays grayscale, 16-bit stays 16-bit. "
        "A file that cannot be read or processed is reported and skipped; the exit status is 1 if any failed.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output_dir", "--output-dir", required=True, type=Path, help="folder for results")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=15, help="sampling steps, 1..T (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--tile", type=int, default=None, help="diffusion tile size in LR pixels (default: none)")
    parser.add_argument("--tile-overlap", type=int, default=16, help="overlap of diffusion tiles in LR pixels")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--suffix", default="_x4", help="appended to each output's file stem (default _x4)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    parser.set_defaults(func=run)
    return parser


def output_path(path: Path, output_dir: Path, suffix: str) -> Path:
    # PNG keeps 16-bit grayscale and is lossless; TIFF inputs stay TIFF.
    ext = ".tif" if path.suffix.lower() in (".tif", ".tiff") else ".png"
    return output_dir / f"{path.stem}{suffix}{ext}"


def run(args: argparse.Namespace) -> int:
    import torch

    from difiisr_dwt.io import ImageReadError, collect_inputs, read_image, save_image_atomic
    from difiisr_dwt.loading import load_pipeline

    paths = collect_inputs(args.inputs)
    if not paths:
        print("error: no input images found", file=sys.stderr)
        return 2
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    pipe.set_progress_bar_config(disable=True)  # one bar over files, not one per image
    failures = 0
    for path in tqdm(paths, desc="upscale", unit="img"):
        target = output_path(path, args.output_dir, args.suffix)
        if target.exists() and not args.overwrite:
            tqdm.write(f"skip {path}: {target} exists (use --overwrite)")
            continue
        try:
            image = read_image(path)
            generator = torch.Generator("cpu").manual_seed(args.seed)
            result = pipe(
                image, num_inference_steps=args.steps, generator=generator, tile_size=args.tile,
                tile_overlap=args.tile_overlap,
            ).images[0]
            save_image_atomic(result, target)
        except (ImageReadError, ValueError, OSError) as error:
            failures += 1
            tqdm.write(f"error: {path}: {error}", file=sys.stderr)
    done = len(paths) - failures
    print(f"{done} of {len(paths)} images written to {args.output_dir}" + (f", {failures} failed" if failures else ""))
    return 1 if failures else 0
