"""Load a DifIISR-DWT pipeline from a local folder or a Hub repo id."""

from __future__ import annotations

from pathlib import Path

import torch

from difiisr_dwt import DEFAULT_MODEL

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_pipeline(model: str | None = None, device: str | None = None, dtype: str = "float32"):
    """``DiffusionPipeline.from_pretrained(model, trust_remote_code=True)`` on ``device``.

    Args:
        model: a folder in the Hub layout (``model_index.json`` + code files) or a Hub repo id;
            ``None`` is the embedded default model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``/``"auto"`` picks CUDA when present.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (half precision on CPU is slow but works).
    """
    from diffusers import DiffusionPipeline

    if model is None and not (Path(DEFAULT_MODEL) / "model_index.json").is_file():
        raise FileNotFoundError(f"The embedded default model is missing at {DEFAULT_MODEL}; pass --model PATH_OR_REPO.")
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}.")
    pipe = DiffusionPipeline.from_pretrained(model or DEFAULT_MODEL, trust_remote_code=True, dtype=DTYPES[dtype])
    return pipe.to(resolve_device(device))
