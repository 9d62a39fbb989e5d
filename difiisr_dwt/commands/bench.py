"""``difiisr-dwt bench``: encoder, end-to-end and tiling benchmarks (random weights), training throughput, a
pipeline's accelerator path and its CPU cost against Real-ESRGAN, as markdown + JSON.

Benchmarks, all in this process (tiling: one child process per size). With random weights: DWT vs VQ-f4
encoder; this pipeline vs the same pipeline started from the VQ encoder and diffusers'
LDMSuperResolutionPipeline; tiled time and peak memory vs output size. On request: samples/s of the diffusion
training stage (train), a trained pipeline's accelerator path (gpu: determinism, CPU/device agreement,
half precision, offload, speed) and its CPU cost (cost: whole-process CPU time against Real-ESRGAN x4plus,
per-component split, decode time per output megapixel and peak memory without tiling; one fresh process per
size and per command).

The default sections take a quarter of an hour or more on a 2-core CPU (end-to-end is most of it);
``--quick`` is a seconds-long smoke run. With ``--json`` the file is rewritten after each section, so an
interrupted run keeps what finished (``meta.complete`` is false until the last section is done).

Examples::

    difiisr-dwt bench --json bench.json                          # encoder, end-to-end, tiling (15+ min on 2 cores)
    difiisr-dwt bench --quick --json bench.json                  # the same with tiny models: seconds
    difiisr-dwt bench --section gpu --model PIPELINE --device cuda
    difiisr-dwt bench --section cost --model PIPELINE --json cost.json   # CPU cost vs Real-ESRGAN x4plus
    difiisr-dwt bench --section cost --cost-frames LR_DIR --realesrgan realesrgan_torch.py   # an installed package
    difiisr-dwt bench --section train -- --train_data_dir IR_DIR --lpips_backbone_dir shared/lpips
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from difiisr_dwt.benchmarks import DEFAULT_SECTIONS, FULL, QUICK, SECTIONS, run_benchmarks
from difiisr_dwt.benchmarks.report import format_markdown
from difiisr_dwt.commands import int_at_least
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import InputGuard, write_text_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``difiisr-dwt bench`` (the parser itself comes from :mod:`difiisr_dwt.cli`)."""
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes (a smoke test, seconds)")
    parser.add_argument(
        "--section", "--only", dest="sections", action="append", choices=SECTIONS, default=None,
        help=f"run only this section (repeatable; default: {', '.join(DEFAULT_SECTIONS)}, a quarter of an hour "
        "or more on a 2-core CPU; --quick takes seconds)",
    )
    parser.add_argument("--threads", type=int_at_least(1), default=None,
                        help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--repeats", type=int_at_least(1), default=None,
        help="runs per end-to-end configuration (medians are used; default 6)",
    )
    parser.add_argument(
        "--e2e-size", type=int_at_least(32, multiple_of=32), default=None, metavar="PX",
        help="end-to-end output side in pixels (default 256; a multiple of 32, so that every preset's UNet fits)",
    )
    train = parser.add_argument_group("train section")
    train.add_argument("--train-steps", type=int, default=None, metavar="N", help="timed training steps (default 20)")
    train.add_argument("--train-warmup-steps", type=int, default=None, metavar="N",
                       help="untimed steps first, a pass over the loader's cache (default 25)")
    train.add_argument("train_args", nargs="*", metavar="-- TRAIN_FLAGS",
                       help="train_accelerate.py flags after '--': the data (--train_data_dir ...), "
                       "--lpips_backbone_dir, --dataloader_num_workers...; they win over the bench's own")
    gpu = parser.add_argument_group("gpu and cost sections")
    gpu.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    gpu.add_argument("--device", default="cuda", help="device of the accelerator checks (default cuda)")
    gpu.add_argument("--realesrgan", default=None, metavar="SCRIPT",
                     help="cost section: Real-ESRGAN x4plus runner (default ../shared/tools/realesrgan_torch.py, "
                     "relative to the working directory)")
    gpu.add_argument("--cost-frames", nargs="+", action="extend", default=None, metavar="PATH",
                     help="cost section: LR frames, folders or image files (default: the checkout's "
                     "examples/images, which an installed package lacks)")
    gpu.add_argument("--cost-threads", type=int_at_least(1), default=None, metavar="N",
                     help="cost section: torch threads of every measured run (default 2)")
    gpu.add_argument("--no-whole-process", dest="whole_process", action="store_false",
                     help="cost section: skip the whole-process comparison with Real-ESRGAN")
    gpu.add_argument("--size-timeout", type=int_at_least(1), default=None, metavar="S",
                     help="cost section: seconds one LR size without tiling may run before its row reports the cap "
                     "instead of figures (default 1800)")


def run(args: argparse.Namespace) -> int:
    if args.json is not None:  # never over the model the gpu section reads
        InputGuard().add_models(args.model).check(args.json, "--json")
    config = QUICK if args.quick else FULL
    if args.repeats is not None:
        config = replace(config, repeats=args.repeats)
    if args.e2e_size is not None:
        config = replace(config, e2e_lr_size=(args.e2e_size // 4, args.e2e_size // 4))
    sections = tuple(dict.fromkeys(args.sections)) if args.sections else DEFAULT_SECTIONS
    if "gpu" in sections:  # the only section that takes --device: refuse one the machine lacks before any work
        from difiisr_dwt.loading import resolve_device

        resolve_device(args.device)
    config = replace(config, **_train_settings(args, sections), **_cost_inputs(args, sections),
                     gpu_model=args.model, gpu_device=args.device, cost_whole_process=args.whole_process)
    if args.cost_threads is not None:
        config = replace(config, cost_threads=args.cost_threads)
    if args.size_timeout is not None:
        config = replace(config, cost_size_timeout_s=float(args.size_timeout))
    # Progress on stderr: the full run takes minutes; the tables go to stdout at the end.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[bench %(asctime)s] %(message)s", "%H:%M:%S"))
    package_logger = logging.getLogger("difiisr_dwt.benchmarks")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)

    def write_json(results: dict, complete: bool) -> None:
        if args.json is not None:  # atomic: an interrupt never leaves half a file
            results["meta"].update(argv=sys.argv, complete=complete)
            write_text_atomic(json.dumps(results, indent=2) + "\n", args.json)

    try:
        # after each section too: an interrupted or failed run keeps the sections it finished
        results = run_benchmarks(config, sections, threads=args.threads,
                                 on_section=lambda partial: write_json(partial, complete=False))
    finally:
        package_logger.removeHandler(handler)
    results["meta"]["argv"] = sys.argv
    print(format_markdown(results))
    if args.json is not None:
        write_json(results, complete=True)
        print(f"Wrote {args.json}")
    return 0


def _cost_inputs(args: argparse.Namespace, sections: tuple[str, ...]) -> dict:
    """``cost_frames`` and ``cost_realesrgan`` of :class:`~difiisr_dwt.benchmarks.BenchConfig`, checked before
    any work: the frames exist (the default, the checkout's examples, does not after a wheel install) and so
    does the Real-ESRGAN runner when the whole-process comparison runs."""
    if "cost" not in sections:
        if args.cost_frames or args.realesrgan:
            raise UsageError("--cost-frames and --realesrgan need --section cost")
        return {}
    from difiisr_dwt.benchmarks.cost import default_realesrgan, frame_files

    # absolute: the children that read them may run in another working directory
    frames = tuple(str(path.resolve()) for path in frame_files(args.cost_frames or ()))
    script = Path(args.realesrgan).resolve() if args.realesrgan else None
    if args.whole_process and script is not None and not script.is_file():
        raise UsageError(f"--realesrgan {args.realesrgan}: no such file (the Real-ESRGAN x4plus runner, "
                         "realesrgan_torch.py; --no-whole-process skips the comparison)")
    if args.whole_process and script is None and not default_realesrgan().is_file():
        raise UsageError(f"no Real-ESRGAN runner at {default_realesrgan()} (the default: "
                         "../shared/tools/realesrgan_torch.py of the working directory, or $DIFIISR_SHARED/tools/): "
                         "pass --realesrgan SCRIPT, or --no-whole-process to skip the comparison")
    return {"cost_frames": frames, "cost_realesrgan": str(script) if script else None}


def _train_settings(args: argparse.Namespace, sections: tuple[str, ...]) -> dict:
    """The ``train_*`` fields of :class:`~difiisr_dwt.benchmarks.BenchConfig` that the flags set."""
    given = {"train_steps": args.train_steps, "train_warmup_steps": args.train_warmup_steps}
    given = {field: value for field, value in given.items() if value is not None}
    if "train" not in sections and (args.train_args or given):
        raise UsageError("training flags, --train-steps and --train-warmup-steps need --section train")
    if given.get("train_steps", 1) < 1:
        raise UsageError(f"--train-steps must be >= 1, got {args.train_steps}")
    if given.get("train_warmup_steps", 0) < 0:
        raise UsageError(f"--train-warmup-steps must be >= 0, got {args.train_warmup_steps}")
    return {"train_args": tuple(args.train_args), **given}
