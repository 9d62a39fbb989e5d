"""Load a DifIISR-DWT pipeline from a local folder or a Hub repo id, with this package's own classes.

A model folder carries code files (``pipeline_difiisr_dwt.py`` and its siblings ``image_processor.py``,
``tiling.py``, ``fidelity.py``; ``dwt_encoder/modeling_dwt_encoder.py``; ``scheduler/scheduler_resshift.py``)
so that ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`` works without this package.
Running them would run whatever someone put there, so by default the folder's weights and configs are
loaded into the installed classes (modules inside the ``difiisr_dwt`` package, which a same-named file in
the working directory cannot shadow) and its code files are only compared with the installed ones (a
difference is logged as a warning naming the file). The folder's own code runs only with
``trust_remote_code=True`` (``--trust-remote-code`` on the command line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from difiisr_dwt import DEFAULT_MODEL
from difiisr_dwt.errors import ModelLoadError, UsageError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# --dtype -> torch attribute; names only, so that building the CLI's parsers does not import torch
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
# What a repo id download fetches: configs, float32 safetensors weights and the code files (compared, not run).
SNAPSHOT_PATTERNS = ["model_index.json", "*.py", "*/*.py", "*/config.json", "*/scheduler_config.json",
                     "*/diffusion_pytorch_model.safetensors"]


def resolve_device(device: str | None) -> torch.device:
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def add_model_arguments(parser: argparse.ArgumentParser, model_group=None, model_help: str | None = None) -> None:
    """Add ``--model``, ``--device``, ``--dtype`` and ``--trust-remote-code`` (read by :func:`load_pipeline_from_args`).

    Args:
        model_group: where ``--model`` goes instead of ``parser`` (e.g. a mutually exclusive group).
        model_help: ``--model``'s help, when the command's default differs from the embedded model.
    """
    (model_group or parser).add_argument(
        "--model", default=None, help=model_help or "pipeline folder or Hub repo id (default: the embedded model)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--trust-remote-code", "--trust_remote_code", action="store_true",
                        help="run the code files inside the --model folder or repo instead of this package's "
                        "classes; only for models whose code you trust")


def load_pipeline_from_args(args: argparse.Namespace):
    """:func:`load_pipeline` with the flags of :func:`add_model_arguments`."""
    return load_pipeline(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)


def load_pipeline(model: str | os.PathLike | None = None, device: str | None = None, dtype: str = "float32",
                  trust_remote_code: bool = False):
    """A ``DifIISRDWTPipeline`` of ``model`` on ``device``, its progress bar on.

    Args:
        model: a folder in the Hub layout (``model_index.json`` + component folders) or a Hub repo id
            (downloaded with ``huggingface_hub.snapshot_download``; ``HF_HUB_OFFLINE=1`` uses the cache
            only); ``None`` is the embedded default model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``/``"auto"`` picks CUDA when present.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (half precision on CPU is slow but works).
        trust_remote_code: run the folder's own code files (``DiffusionPipeline.from_pretrained(...,
            trust_remote_code=True)``) instead of the installed classes.

    Raises:
        UsageError: an unknown ``dtype``.
        ModelLoadError: a missing folder, an unknown or unreachable repo id, or a folder that is not a
            DifIISR-DWT pipeline (the message names the model and the reason).
    """
    if dtype not in DTYPES:
        raise UsageError(f"Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}.")
    if model is None and not (Path(DEFAULT_MODEL) / "model_index.json").is_file():
        raise ModelLoadError(f"The embedded default model is missing at {DEFAULT_MODEL}; pass --model PATH_OR_REPO.")
    import torch

    from difiisr_dwt.release import ReleaseError

    model, torch_dtype = str(model or DEFAULT_MODEL), getattr(torch, DTYPES[dtype])
    try:
        if trust_remote_code:
            from diffusers import DiffusionPipeline

            pipe = DiffusionPipeline.from_pretrained(model, trust_remote_code=True, dtype=torch_dtype)
        else:
            pipe = _load_with_installed_classes(_local_folder(model), torch_dtype)
    except ModelLoadError:
        raise
    except ReleaseError as error:  # its message starts with the folder already
        raise ModelLoadError(f"cannot load the model: {error}") from error
    except (OSError, ValueError, KeyError, TypeError) as error:  # diffusers/hub errors name what is missing
        raise ModelLoadError(f"cannot load the model {model}: {error}") from error
    pipe.set_progress_bar_config()  # diffusers' default (a bar per call); commands may turn it off
    return pipe.to(resolve_device(device))


def _local_folder(model: str) -> Path:
    """``model`` itself when it is a folder, else the snapshot of the Hub repo id ``model``."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"cannot load the model {model}: a file, not a pipeline folder or Hub repo id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=SNAPSHOT_PATTERNS))
    except Exception as error:  # not a repo id, offline without a cached copy, unknown repo, no access
        raise ModelLoadError(f"cannot load the model {model}: no such folder, and not a Hub repo that could be "
                             f"fetched ({type(error).__name__}: {error})") from error


def _load_with_installed_classes(folder: Path, torch_dtype: torch.dtype):
    """The folder's weights and configs in the installed classes; its code files are compared, never run."""
    from difiisr_dwt.release import load_pipeline_folder, release_code_files

    if not (folder / "model_index.json").is_file():
        config = folder / "config.json"
        held = json.loads(config.read_text(encoding="utf-8")).get("_class_name") if config.is_file() else None
        what = f"it holds one component, a {held}" if held else "no model_index.json"
        raise ModelLoadError(f"cannot load the model {folder}: not a pipeline folder ({what})")
    pipe = load_pipeline_folder(folder, torch_dtype=torch_dtype)  # checks model_index.json's classes first
    package_root = Path(__file__).resolve().parent.parent
    for relative, installed in release_code_files().items():
        shipped = folder / relative
        if shipped.is_file() and shipped.read_bytes() != installed.read_bytes():
            logger.warning("%s differs from the installed %s; it was not run (the installed code was used). "
                           "Pass --trust-remote-code to run the folder's own code.", shipped,
                           installed.resolve().relative_to(package_root).as_posix())
    return pipe
