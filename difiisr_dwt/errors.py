"""The package's own error types: the CLI boundary (:func:`difiisr_dwt.cli.main`) prints each as one
``error: ...`` line and exits with :attr:`DifIISRError.exit_code`."""

from __future__ import annotations


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
