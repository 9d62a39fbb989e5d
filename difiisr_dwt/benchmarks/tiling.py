"""Tiling benchmark: time and peak memory of the tiled pipeline against output size.

Each size runs in a fresh Python process, so that one size's peak cannot hide in another's heap;
the child reports its own resident-memory peak during the call (see :func:`measure_peak_rss`).
Run as ``python -m difiisr_dwt.benchmarks.tiling '<json spec>'`` it is that child.
``BenchConfig.tiling_isolate=False`` measures in this process instead (smoke tests: no interpreter start per
size).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import torch

import difiisr_dwt
from difiisr_dwt.benchmarks import BenchConfig
from difiisr_dwt.benchmarks.timing import measure_peak_rss
from difiisr_dwt.presets import build_pipeline

logger = logging.getLogger(__name__)

PEAK_RATIO_LIMIT = 2.0  # pass: peak at the largest size at most twice the peak at the smallest


def _run_child(spec: dict) -> dict:
    """One size in this process: build the pipeline, upscale a random image once, report."""
    torch.set_num_threads(spec["threads"])
    pipe = build_pipeline(spec["preset"], seed=spec["seed"])
    lr_side = spec["size"] // pipe.upscale_factor
    rng = np.random.default_rng(spec["seed"])
    lr_image = PIL.Image.fromarray(rng.integers(0, 256, (lr_side, lr_side, 3), dtype=np.uint8))

    pipe.enable_unet_tiling(tile_size=spec["tile_size"], tile_overlap=spec["tile_overlap"])
    pipe.enable_decode_tiling(tile_size=spec["decode_tile_size"], tile_overlap=spec["decode_tile_overlap"])

    def call() -> float:
        start = time.perf_counter()
        pipe(lr_image, num_inference_steps=spec["steps"], generator=torch.Generator().manual_seed(spec["seed"]))
        return time.perf_counter() - start

    seconds, memory = measure_peak_rss(call)
    return {"size": spec["size"], "seconds": seconds, **memory}


def _run_isolated(spec: dict) -> dict:
    """:func:`_run_child` in a fresh interpreter."""
    # The child must import this very package (a checkout on PYTHONPATH too), not another install.
    root = os.path.dirname(os.path.dirname(os.path.abspath(difiisr_dwt.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "difiisr_dwt.benchmarks.tiling", json.dumps(spec)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        size = spec["size"]
        raise RuntimeError(f"Tiling benchmark at {size}x{size} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_tiling(config: BenchConfig, threads: int = 2) -> dict:
    """Upscale one random square image per output size (``size / 4`` LR pixels) with tiling.

    Reads from ``config``: ``tiling_sizes`` (output sides in pixels, multiples of 4), ``tiling_preset``,
    ``tiling_steps``, ``tile_size`` / ``tile_overlap`` (diffusion tiling in LR pixels, ``tile_size`` a multiple
    of the UNet's), ``decode_tile_size`` / ``decode_tile_overlap`` (VQ-decode tiling in latent pixels),
    ``seed`` (weights, input and noise) and ``tiling_isolate`` (one child process per size for honest peaks;
    False runs them here, one after another).

    Args:
        config: the benchmark settings.
        threads: torch threads of each size's run.

    Returns:
        ``{"settings", "sizes": [{"size", "seconds", "peak_rss_mb", "start_rss_mb", "peak_over_start_mb"}],
        "acceptance"}``.
    """
    settings = {
        "preset": config.tiling_preset, "steps": config.tiling_steps, "tile_size": config.tile_size,
        "tile_overlap": config.tile_overlap, "decode_tile_size": config.decode_tile_size,
        "decode_tile_overlap": config.decode_tile_overlap, "threads": threads, "seed": config.seed,
        "isolated": config.tiling_isolate,
    }
    rows = []
    for size in config.tiling_sizes:
        spec = {**settings, "size": size}
        rows.append(_run_isolated(spec) if config.tiling_isolate else _run_child(spec))
        logger.info("tiling: %dx%d: %.2f s, peak over start %s MB", size, size, rows[-1]["seconds"],
                    rows[-1]["peak_over_start_mb"])

    first, last = rows[0], rows[-1]
    acceptance = {"sizes": [first["size"], last["size"]], "limit": PEAK_RATIO_LIMIT}
    for key in ("peak_rss_mb", "peak_over_start_mb"):
        if first[key] and last[key] is not None:
            acceptance[f"{key}_ratio"] = last[key] / first[key]
    ratio = acceptance.get("peak_over_start_mb_ratio")
    acceptance["ok"] = None if ratio is None else ratio <= PEAK_RATIO_LIMIT
    return {"settings": settings, "sizes": rows, "acceptance": acceptance}


if __name__ == "__main__":
    print(json.dumps(_run_child(json.loads(sys.argv[1]))))
