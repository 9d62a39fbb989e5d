"""difiisr-dwt library code that never ships to the Hub: data, degradations, losses, metrics,
release tooling and the command line. The model itself lives in the three top-level Hub files
(``pipeline_difiisr_dwt``, ``modeling_dwt_encoder``, ``scheduler_resshift``)."""

from pathlib import Path

__version__ = "0.1.0"

#: The embedded default model (Hub layout), used when no ``--model`` is given.
DEFAULT_MODEL = str(Path(__file__).resolve().parent.parent / "hub" / "difiisr-dwt-tiny")
