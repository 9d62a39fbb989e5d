"""Load a DifIISR-DWT pipeline from a local folder or a Hub repo id, with this package's own classes.

A model folder carries code files (``pipeline_difiisr_dwt.py`` and its siblings ``image_processor.py``,
``tiling.py``, ``fidelity.py``, ``attention.py``, ``saving.py``; ``dwt_encoder/modeling_dwt_encoder.py``;
``scheduler/scheduler_resshift.py``)
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


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:N`` / ``mps`` / ``xpu:N`` where present."""
    import torch

    found = ["cpu"]
    for kind in ("cuda", "xpu", "mps"):
        backend = getattr(torch, kind, None)
        if backend is None or not backend.is_available():
            continue
        count = backend.device_count() if hasattr(backend, "device_count") else 1
        found += [kind] if kind == "mps" else [f"{kind}:{index}" for index in range(count)]
    return found


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``, checked against this machine before anything is loaded.

    ``None`` / ``"auto"`` is the first CUDA device when present, else the CPU.

    Raises:
        UsageError: a string that names no device (``"foo"``), or a device this machine does not have
            (``"cuda"`` without CUDA, ``"cuda:3"`` with two GPUs); the message lists the available ones.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"device {str(device)!r} is not a device name; available here: "
                         f"{', '.join(available_devices())}") from None
    if parsed.type in ("cpu", "meta"):
        return parsed
    backend = getattr(torch, parsed.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise UsageError(f"device {str(device)!r}: this machine has no {parsed.type} device (or this torch "
                         f"build cannot use it); available here: {', '.join(available_devices())}")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise UsageError(f"device {str(device)!r}: this machine has {count} {parsed.type} device(s); available "
                         f"here: {', '.join(available_devices())}")
    return parsed


def device_argument(text: str) -> str:
    """An argparse ``type`` for ``--device``: the text itself, once :func:`resolve_device` accepts it, so
    that a device the machine lacks is refused before any data or model is loaded."""
    if text != "auto":
        try:
            resolve_device(text)
        except UsageError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return text


def pipeline_class() -> type:
    """The installed ``DifIISRDWTPipeline`` class (imports torch and diffusers)."""
    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline

    return DifIISRDWTPipeline


def pipeline_call_defaults() -> dict[str, object]:
    """The keyword defaults of the installed pipeline's ``__call__`` (``num_inference_steps``, ``noise_scale``...):
    the one source of the defaults that ``--help``, the demo and the README show (the README is tested
    against it)."""
    import inspect

    parameters = inspect.signature(pipeline_class().__call__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def pipeline_fingerprint(pipe) -> str:
    """SHA-256 (hex) of a pipeline's weights: every tensor of its ``torch.nn.Module`` components (component and
    parameter name, shape, values as float32), in sorted order. Two loads of the same weights give the same
    digest, however they were saved; other weights, or the same ones run in half precision, another.
    ``eval --json`` records it and ``export`` checks a model card's figures against it."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, component in sorted(pipe.components.items()):
        if isinstance(component, torch.nn.Module):
            for key, tensor in sorted(component.state_dict().items()):
                digest.update(f"{name}.{key}:{tuple(tensor.shape)};".encode())
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def add_model_arguments(parser: argparse.ArgumentParser, model_group=None, model_help: str | None = None) -> None:
    """Add ``--model``, ``--device``, ``--dtype`` and ``--trust-remote-code`` (read by :func:`load_pipeline_from_args`).

    Args:
        model_group: where ``--model`` goes instead of ``parser`` (e.g. a mutually exclusive group).
        model_help: ``--model``'s help, when the command's default differs from the embedded model.
    """
    (model_group or parser).add_argument(
        "--model", default=None, help=model_help or "pipeline folder or Hub repo id (default: the embedded model)")
    parser.add_argument("--device", default="auto", type=device_argument,
                        help="cpu, cuda, cuda:N, mps or auto (default: the first GPU when present)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--trust-remote-code", "--trust_remote_code", action="store_true",
                        help="run the code files inside the --model folder or repo instead of this package's "
                        "classes; only for models whose code you trust")


def load_pipeline_from_args(args: argparse.Namespace):
    """:func:`load_pipeline` with the flags of :func:`add_model_arguments`."""
    return load_pipeline(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)


def load_pipeline(model: str | os.PathLike | None = None, device: str | None = None, dtype: str = "float32",
                  trust_remote_code: bool = False):
    """A ``DifIISRDWTPipeline`` of ``model`` on ``device``, its progress bar on (on the CPU it decodes in
    channels-last layout by itself: ``DifIISRDWTPipeline.decode_channels_last``).

    Args:
        model: a folder in the Hub layout (``model_index.json`` + component folders) or a Hub repo id
            (downloaded with ``huggingface_hub.snapshot_download``; ``HF_HUB_OFFLINE=1`` uses the cache
            only); ``None`` is the embedded default model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``/``"auto"`` picks CUDA when present.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (half precision on CPU is slow but works).
        trust_remote_code: run the folder's own code files (``DiffusionPipeline.from_pretrained(...,
            trust_remote_code=True)``) instead of the installed classes.

    Raises:
        UsageError: an unknown ``dtype``, or a ``device`` this machine does not have (see :func:`resolve_device`).
        ModelLoadError: a missing folder, an unknown or unreachable repo id, or a folder that is not a
            DifIISR-DWT pipeline (the message names the model and the reason).
    """
    if dtype not in DTYPES:
        raise UsageError(f"Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}.")
    if model is None and not (Path(DEFAULT_MODEL) / "model_index.json").is_file():
        raise ModelLoadError(f"The embedded default model is missing at {DEFAULT_MODEL}; pass --model PATH_OR_REPO.")
    import torch

    from difiisr_dwt.release import ReleaseError

    target = resolve_device(device)  # a device the machine lacks fails before the weights load
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
    if target.type != "cpu" or torch_dtype != torch.float16:
        return pipe.to(target)
    # diffusers warns that float16 pipelines "will fail" on the CPU; these run (checked in tests/test_devices.py)
    from diffusers.utils import logging as diffusers_logging

    logger.warning("float16 on the CPU runs, but many times slower than float32 (bfloat16 or float32 for CPUs).")
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return pipe.to(target)
    finally:
        diffusers_logging.set_verbosity(verbosity)


def could_be_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repo id (``name`` or ``namespace/name``); a path such as
    ``/abs/dir``, ``./dir``, ``~/dir`` or ``out/ae/vqvae`` does not, so its absence is a missing folder.
    Neither does ``runs/nope`` when ``runs`` is a local folder: a namespace that exists here names a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "~")) or "\\" in name:
        return False
    if "/" in name and Path(name.split("/", 1)[0]).is_dir():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _local_folder(model: str) -> Path:
    """``model`` itself when it is a folder, else the snapshot of the Hub repo id ``model``."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"cannot load the model {model}: a file, not a pipeline folder or Hub repo id")
    if not could_be_repo_id(model):
        raise ModelLoadError(f"cannot load the model {model}: no such folder")
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
