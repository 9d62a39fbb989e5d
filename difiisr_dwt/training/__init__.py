"""Training of the four DifIISR-DWT stages with accelerate (entry point: ``train_accelerate.py``)."""

from __future__ import annotations

import importlib

# --stage -> "module:class"; imported lazily so that one stage's dependencies never load for another.
STAGE_CLASSES = {
    "autoencoder": "difiisr_dwt.training.autoencoder:AutoencoderStage",
    "adapter": "difiisr_dwt.training.adapter:AdapterStage",
    "diffusion": "difiisr_dwt.training.diffusion:DiffusionStage",
    "decoder": "difiisr_dwt.training.decoder:DecoderStage",
}


def get_stage(name: str):
    """The :class:`~difiisr_dwt.training.stage.Stage` subclass of ``--stage name``."""
    if name not in STAGE_CLASSES:
        raise ValueError(f"Unknown stage {name!r}; choose one of {sorted(STAGE_CLASSES)}.")
    module, cls = STAGE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)
