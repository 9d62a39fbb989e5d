"""difiisr-dwt library code that never ships to the Hub: data, degradations, losses, metrics,
release tooling and the command line. The model itself lives in the three top-level Hub files
(``pipeline_difiisr_dwt``, ``modeling_dwt_encoder``, ``scheduler_resshift``)."""

from pathlib import Path

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent
# A checkout (editable install, PYTHONPATH) has it beside the package; a wheel ships it inside (setup.py).
_DEFAULT_MODEL_PLACES = (_HERE.parent / "hub" / "difiisr-dwt-tiny", _HERE / "default_model")

#: The embedded default model (Hub layout), used when no ``--model`` is given.
DEFAULT_MODEL = str(next((p for p in _DEFAULT_MODEL_PLACES if (p / "model_index.json").is_file()),
                         _DEFAULT_MODEL_PLACES[0]))
