"""difiisr-dwt: x4 infrared super-resolution as a diffusers pipeline.

The model's code is in ``difiisr_dwt.pipelines`` (``DifIISRDWTPipeline`` and its image processor,
tiling and fidelity step), ``difiisr_dwt.models`` (``DWTEncoder``) and ``difiisr_dwt.schedulers``
(``ResShiftScheduler``); ``difiisr-dwt export`` writes these modules into a Hub folder as its code
files. The rest (data, degradations, losses, metrics, release tooling, the command line) never ships
to the Hub. The three classes are importable from here, loaded on first use (``import difiisr_dwt``
does not import torch)::

    from difiisr_dwt import DifIISRDWTPipeline, DWTEncoder, ResShiftScheduler
"""

from importlib import import_module
from pathlib import Path

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent
# A checkout (editable install, PYTHONPATH) has it beside the package; a wheel ships it inside (setup.py).
_DEFAULT_MODEL_PLACES = (_HERE.parent / "hub" / "difiisr-dwt-tiny", _HERE / "default_model")

#: The embedded default model (Hub layout), used when no ``--model`` is given.
DEFAULT_MODEL = str(next((p for p in _DEFAULT_MODEL_PLACES if (p / "model_index.json").is_file()),
                         _DEFAULT_MODEL_PLACES[0]))

# public class -> the module that defines it (imported lazily, PEP 562)
_LAZY = {
    "DifIISRDWTPipeline": "difiisr_dwt.pipelines.pipeline_difiisr_dwt",
    "DifIISRDWTPipelineOutput": "difiisr_dwt.pipelines.pipeline_difiisr_dwt",
    "IRImageProcessor": "difiisr_dwt.pipelines.image_processor",
    "DWTEncoder": "difiisr_dwt.models.modeling_dwt_encoder",
    "ResShiftScheduler": "difiisr_dwt.schedulers.scheduling_resshift",
}
__all__ = ["DEFAULT_MODEL", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'difiisr_dwt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
