"""Subcommands of the ``difiisr-dwt`` CLI (see :mod:`difiisr_dwt.cli`)."""
