"""Archive throughput: images/s of ``difiisr-dwt upscale`` for batch sizes (1 vs 4 vs 16 same-size
frames per pipeline call) and for process counts (1 vs 2 ``accelerate launch`` processes), each
reported as a ratio to the first, measured in one run.

Batch sizes run in this process on one loaded pipeline, in rounds whose order alternates (1 4 16,
16 4 1, ...) so that a drift of the machine's speed hits every size alike; each ratio is the median
of its per-round ratios. Process counts run the real command (``python -m difiisr_dwt.cli upscale``,
or ``accelerate launch --multi_gpu --num_processes P -m difiisr_dwt.cli upscale``) over the same
frames and read each process's compute time from its manifest, so start-up and model loading are
left out; the CPU threads are split evenly between the processes.

``python -m difiisr_dwt.benchmarks.archive [--quick] [--json OUT]`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import PIL.Image

logger = logging.getLogger(__name__)


@dataclass
class ArchiveBenchConfig:
    """What to measure. ``model=None`` with ``preset=None`` is the embedded default model."""

    model: str | None = None  # a pipeline folder or repo id
    preset: str | None = None  # or freshly initialised weights of this preset (quick runs)
    lr_size: tuple[int, int] = (160, 128)  # (width, height) of every LR frame
    steps: int | None = 1  # None: the pipeline's default
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    frames: int = 16  # per batch-size measurement: a multiple of every batch size
    rounds: int = 3
    processes: tuple[int, ...] = (1, 2)
    process_frames: int = 16
    process_batch_size: int = 1
    process_rounds: int = 2
    device: str = "cpu"  # "cuda": batches on the GPU; processes then need one GPU each
    threads: int | None = None  # torch threads for the batches, shared by the processes (default: all cores)
    seed: int = 0


QUICK_ARCHIVE = ArchiveBenchConfig(preset="test", lr_size=(16, 16), batch_sizes=(1, 4), frames=4, rounds=1,
                                   processes=(1, 2), process_frames=4, process_rounds=1)


def _frames(config: ArchiveBenchConfig, count: int) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(config.seed)
    width, height = config.lr_size
    return [PIL.Image.fromarray((rng.random((height, width)) * 255).astype(np.uint8)) for _ in range(count)]


def _model_folder(config: ArchiveBenchConfig, scratch: Path) -> str | None:
    """The model as the CLI takes it: a preset is saved to a folder first."""
    if config.preset is None:
        return config.model
    from difiisr_dwt.presets import build_pipeline

    folder = scratch / "model"
    build_pipeline(config.preset, seed=config.seed).save_pretrained(folder)
    return str(folder)


def bench_batches(config: ArchiveBenchConfig) -> dict:
    """Images/s per batch size on one pipeline, and each size's median per-round ratio to the first."""
    from difiisr_dwt.archive import UpscaleOptions, upscale_frames
    from difiisr_dwt.loading import load_pipeline

    if any(config.frames % b for b in config.batch_sizes):
        raise ValueError(f"frames={config.frames} must be a multiple of every batch size {config.batch_sizes}")
    if config.preset is not None:
        from difiisr_dwt.presets import build_pipeline

        pipe = build_pipeline(config.preset, seed=config.seed).to(config.device)
    else:
        pipe = load_pipeline(config.model, device=config.device)
    pipe.set_progress_bar_config(disable=True)
    frames = _frames(config, config.frames)
    upscale_frames(pipe, frames[:1], UpscaleOptions(pipeline_options=_steps(config)))  # warm-up: first-call allocations
    rates: dict[int, list[float]] = {b: [] for b in config.batch_sizes}
    for round_index, batch in _alternating(config.batch_sizes, config.rounds):
        options = UpscaleOptions(batch_size=batch, seed=config.seed, pipeline_options=_steps(config))
        start = time.perf_counter()
        for first in range(0, len(frames), batch):
            upscale_frames(pipe, frames[first : first + batch], options)
        rates[batch].append(len(frames) / (time.perf_counter() - start))
        logger.info("archive: batch %d, round %d: %.3f images/s", batch, round_index, rates[batch][-1])
    return _rate_summary(rates)


def _alternating(values: tuple[int, ...], rounds: int) -> Iterator[tuple[int, int]]:
    """``(round, value)`` pairs, the order reversed every other round (A B C, C B A, ...)."""
    for round_index in range(rounds):
        for value in values if round_index % 2 == 0 else tuple(reversed(values)):
            yield round_index, value


def _rate_summary(rates: dict[int, list[float]]) -> dict[str, dict]:
    """Per key: median images/s, and the median of its per-round ratios to the first key's."""
    base = rates[next(iter(rates))]
    return {
        str(key): {"images_per_s": statistics.median(values),
                   "ratio": statistics.median(r / r0 for r, r0 in zip(values, base)),
                   "rounds_images_per_s": values}
        for key, values in rates.items()
    }


def bench_processes(config: ArchiveBenchConfig, scratch: Path) -> dict:
    """Images/s of the upscale command per process count (compute time of the slowest process), and
    each count's median per-round ratio to the first."""
    model = _model_folder(config, scratch)
    folder = scratch / "frames"
    folder.mkdir(exist_ok=True)
    for index, frame in enumerate(_frames(config, config.process_frames)):
        frame.save(folder / f"frame{index:05d}.png")
    threads = config.threads or os.cpu_count() or 1
    rates: dict[int, list[float]] = {p: [] for p in config.processes}
    wall: dict[int, list[float]] = {p: [] for p in config.processes}
    for round_index, count in _alternating(config.processes, config.process_rounds):
        manifest = scratch / f"manifest_{count}.json"
        command = [sys.executable, "-m", "difiisr_dwt.cli", "upscale", str(folder), "-o",
                   str(scratch / f"out{count}"), "--overwrite", "--manifest", str(manifest),
                   "--batch-size", str(config.process_batch_size), "--seed", str(config.seed)]
        if count > 1:
            command[:3] = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(count), "--num_machines",
                           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "difiisr_dwt.cli"]
        command += (["--model", model] if model else []) + (["--steps", str(config.steps)] if config.steps else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // count, 1))}
        if config.device == "cpu":
            env["ACCELERATE_USE_CPU"] = "1"
            command += ["--device", "cpu"] if count == 1 else []
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=3600)
        wall[count].append(time.perf_counter() - start)
        summary = json.loads(manifest.read_text())["summary"]
        rates[count].append(summary["written"] / max(summary["rank_seconds"]))
        logger.info("archive: %d process(es), round %d: %.3f images/s", count, round_index, rates[count][-1])
    result = _rate_summary(rates)
    for count in config.processes:
        result[str(count)].update(threads_per_process=max(threads // count, 1),
                                  wall_s_with_startup=statistics.median(wall[count]))
    return result


def bench_archive(config: ArchiveBenchConfig) -> dict:
    """Both measurements, JSON-ready: ``{"config", "batches": {B: {...}}, "processes": {P: {...}}}``."""
    import torch

    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    result: dict = {"config": asdict(config), "torch_threads": torch.get_num_threads(),
                    "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None}
    with tempfile.TemporaryDirectory(prefix="difiisr_archive_bench_") as scratch:
        try:
            result["batches"] = bench_batches(config)
        finally:
            torch.set_num_threads(previous_threads)
        if not config.processes:
            result["processes"] = {"skipped": "not measured"}
        elif config.device != "cpu" and torch.cuda.device_count() < max(config.processes):
            result["processes"] = {"skipped": f"needs {max(config.processes)} GPUs, found {torch.cuda.device_count()}"}
        else:
            result["processes"] = bench_processes(config, Path(scratch))
    result["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return result


def format_archive(result: dict) -> str:
    """Markdown tables of :func:`bench_archive`'s result."""
    config = result["config"]
    width, height = config["lr_size"]
    lines = [f"### Archive throughput ({width}x{height} LR, {config['steps'] or 'default'} step(s), "
             f"{config['device']})", "", "| batch size | images/s | vs batch " f"{config['batch_sizes'][0]} |",
             "|---:|---:|---:|"]
    lines += [f"| {b} | {r['images_per_s']:.3f} | {r['ratio']:.2f}x |" for b, r in result["batches"].items()]
    if "skipped" in result["processes"]:
        lines += ["", f"Processes: {result['processes']['skipped']}."]
    else:
        lines += ["", f"| processes | images/s | vs {config['processes'][0]} | threads each |", "|---:|---:|---:|---:|"]
        lines += [f"| {p} | {r['images_per_s']:.3f} | {r['ratio']:.2f}x | {r['threads_per_process']} |"
                  for p, r in result["processes"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="test-preset weights, tiny frames (seconds)")
    parser.add_argument("--model", default=None, help="pipeline folder or repo id (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 1)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-processes", action="store_true", help="measure batch sizes only")
    parser.add_argument("--process-frames", type=int, default=None, help="frames per process-count measurement")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--frames", type=int, default=None, help="frames per batch-size measurement")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    changes = {"model": args.model, "steps": args.steps, "rounds": args.rounds, "device": args.device,
               "threads": args.threads}
    if args.batch_sizes:
        changes.update(batch_sizes=tuple(args.batch_sizes), frames=int(np.lcm.reduce(args.batch_sizes)))
    if args.frames:
        changes["frames"] = args.frames
    if args.process_frames:
        changes["process_frames"] = args.process_frames
    if args.no_processes:
        changes["processes"] = ()
    config = replace(QUICK_ARCHIVE if args.quick else ArchiveBenchConfig(),
                     **{k: v for k, v in changes.items() if v is not None})
    logging.basicConfig(level=logging.INFO, format="[archive %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    result = bench_archive(config)
    print(format_archive(result))
    if args.json is not None:
        from difiisr_dwt.io import write_text_atomic

        write_text_atomic(json.dumps(result, indent=2) + "\n", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _steps(config) -> dict:
    """The pipeline's keyword arguments for ``config.steps`` (``None``: the pipeline's default)."""
    return {} if config.steps is None else {"num_inference_steps": config.steps}
