"""``difiisr-dwt`` command line: one subcommand per module in :mod:`difiisr_dwt.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module; each module defines ``add_parser(subparsers)`` that sets ``func``.
COMMANDS = {
    "upscale": "difiisr_dwt.commands.upscale",
    "eval": "difiisr_dwt.commands.evaluate",
    "bench": "difiisr_dwt.commands.bench",
    "export": "difiisr_dwt.commands.export",
    "convert-vq": "difiisr_dwt.commands.convert_vq",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="difiisr-dwt", description="x4 infrared super-resolution (DifIISR-DWT).")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
