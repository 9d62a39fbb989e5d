"""The package's error types and its one error boundary.

Commands raise; :func:`report_errors` (used by :func:`difiisr_dwt.cli.main` and ``train_accelerate.py``)
prints each failure as one ``error: ...`` line on stderr and turns it into the exit status: 2 for bad
arguments or inputs, 1 when some files failed after the others were processed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class DifIISRError(Exception):
    """A failure the user can act on; its message names the problem (and the file, once)."""

    exit_code = 2


class UsageError(DifIISRError, ValueError):
    """Bad arguments or inputs found before any work starts (exit status 2)."""


class ModelLoadError(DifIISRError):
    """A model folder or repo id that cannot be loaded as the component it is asked for (exit status 2)."""


class PartialFailure(DifIISRError):
    """Some inputs failed after the others were processed (exit status 1); each was reported already."""

    exit_code = 1


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose argument errors read like every other failure: one ``error:`` line, then where the
    options are listed (the full usage of ``upscale`` is some twenty lines, which buried the error).

    Subparsers made by ``add_subparsers`` are of the same class, so one parser serves a whole CLI.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\nRun '{self.prog} --help' for the options.\n")


def report_errors(run: Callable[[], int | None]) -> int:
    """Call ``run`` and return its exit status; the package's errors and OS errors (unreadable or
    unwritable paths, a full disk) become one ``error: ...`` line on stderr and their exit status.

    Anything else is a bug and keeps its traceback.
    """
    try:
        return int(run() or 0)
    except DifIISRError as error:
        if str(error):  # a PartialFailure may have reported each file already
            print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # e.g. "[Errno 13] Permission denied: 'out/a.json'": the path is in the message
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
