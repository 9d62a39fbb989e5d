"""One module per ``difiisr-dwt`` subcommand, and the argument types they share."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(low: int, multiple_of: int = 1) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= low`` (and a multiple of ``multiple_of``), else a usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or value % multiple_of:
            what = f"a multiple of {multiple_of} >= {low}" if multiple_of > 1 else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse
