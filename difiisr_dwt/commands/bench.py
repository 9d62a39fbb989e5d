"""``difiisr-dwt bench``: encoder, end-to-end and tiling benchmarks (random weights), markdown + JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from difiisr_dwt.benchmarks import FULL, QUICK, SECTIONS, run_benchmarks
from difiisr_dwt.benchmarks.report import format_markdown
from difiisr_dwt.commands import int_at_least
from difiisr_dwt.io import write_text_atomic


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the DWT encoder, the pipeline and tiling against VQ-encoder baselines",
        description=(
            "Benchmarks with random weights, all in this process (tiling: one child process per size): "
            "DWT vs VQ-f4 encoder; this pipeline vs the same pipeline started from the VQ encoder and "
            "diffusers' LDMSuperResolutionPipeline; tiled time and peak memory vs output size."
        ),
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes (a smoke test, seconds)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, default=None, help="run only this section (repeatable)"
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = QUICK if args.quick else FULL
    if args.repeats is not None:
        config = replace(config, repeats=args.repeats)
    if args.e2e_size is not None:
        config = replace(config, e2e_lr_size=(args.e2e_size // 4, args.e2e_size // 4))
    sections = tuple(dict.fromkeys(args.only)) if args.only else SECTIONS
    # Progress on stderr: the full run takes minutes; the tables go to stdout at the end.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[bench %(asctime)s] %(message)s", "%H:%M:%S"))
    package_logger = logging.getLogger("difiisr_dwt.benchmarks")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        results = run_benchmarks(config, sections, threads=args.threads)
    finally:
        package_logger.removeHandler(handler)
    results["meta"]["argv"] = sys.argv
    print(format_markdown(results))
    if args.json is not None:
        write_text_atomic(json.dumps(results, indent=2) + "\n", args.json)
        print(f"Wrote {args.json}")
    return 0
