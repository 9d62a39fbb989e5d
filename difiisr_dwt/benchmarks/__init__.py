"""Benchmarks of ``difiisr-dwt bench``: encoder, end-to-end and tiling, one module each.

:func:`run_benchmarks` runs the chosen sections in this process (tiling starts one child process per
size) and returns a JSON-ready dict; :func:`difiisr_dwt.benchmarks.report.format_markdown` renders it.
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import asdict, dataclass, field

SECTIONS = ("encoder", "end-to-end", "tiling")


@dataclass
class BenchConfig:
    """What to measure. :data:`FULL` is the honest comparison; :data:`QUICK` a seconds-long smoke run."""

    encoder_preset: str = "full"
    encoder_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(256, 256), (768, 1024)])
    fast_seconds: float = 2.0  # time budget per millisecond-scale op
    vq_seconds: float = 10.0  # time budget per VQ-encoder size (one call always runs)
    e2e_preset: str = "full"
    e2e_lr_size: tuple[int, int] = (64, 64)  # output 256x256
    steps: tuple[int, ...] = (1, 4, 15)
    ldm_steps: int = 100
    repeats: int = 6  # per pipeline and step count, alternating A B B A; medians (1-step runs vary ~4%)
    component_seconds: float = 6.0
    tiling_preset: str = "tiny"
    tiling_sizes: tuple[int, ...] = (512, 1024, 2048)
    tiling_steps: int = 15
    tile_size: int = 64
    tile_overlap: int = 16
    decode_tile_size: int = 128
    decode_tile_overlap: int = 16
    tiling_isolate: bool = True  # one fresh process per size
    seed: int = 0


FULL = BenchConfig()
QUICK = BenchConfig(
    encoder_preset="test", encoder_sizes=[(32, 32), (48, 64)], fast_seconds=0.1, vq_seconds=0.2,
    e2e_preset="test", e2e_lr_size=(8, 8), ldm_steps=100, repeats=1, component_seconds=0.2,
    tiling_preset="test", tiling_sizes=(32, 64), tiling_steps=2, tile_size=4, tile_overlap=2,
    decode_tile_size=4, decode_tile_overlap=2, tiling_isolate=False,
)


def run_benchmarks(config: BenchConfig, sections: tuple[str, ...] = SECTIONS, threads: int | None = None) -> dict:
    """Run ``sections`` of ``config``.

    Args:
        config: sizes, presets and repeats.
        sections: names from :data:`SECTIONS`.
        threads: torch threads while benchmarking (and of the tiling children); the previous count
            is restored afterwards. ``None`` keeps the current count.
    """
    import torch

    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"Unknown benchmark sections {unknown}; choose from {SECTIONS}.")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_sections(config, sections)
    finally:
        torch.set_num_threads(previous_threads)


def _run_sections(config: BenchConfig, sections: tuple[str, ...]) -> dict:
    import torch

    from difiisr_dwt.benchmarks.encoder import bench_encoder
    from difiisr_dwt.benchmarks.end_to_end import bench_end_to_end
    from difiisr_dwt.benchmarks.tiling import bench_tiling

    results: dict = {
        "meta": {
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
            "device": "cpu",
            "config": asdict(config),
        }
    }
    if "encoder" in sections:
        results["encoder"] = bench_encoder(
            config.encoder_sizes, config.encoder_preset, fast_seconds=config.fast_seconds,
            vq_seconds=config.vq_seconds, seed=config.seed,
        )
    if "end-to-end" in sections:
        results["end_to_end"] = bench_end_to_end(
            config.e2e_preset, config.e2e_lr_size, config.steps, config.ldm_steps, config.repeats,
            component_seconds=config.component_seconds, seed=config.seed,
        )
    if "tiling" in sections:
        results["tiling"] = bench_tiling(
            config.tiling_sizes, config.tiling_preset, config.tiling_steps, config.tile_size, config.tile_overlap,
            config.decode_tile_size, config.decode_tile_overlap, threads=torch.get_num_threads(), seed=config.seed,
            isolate=config.tiling_isolate,
        )
    results["meta"]["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return results
