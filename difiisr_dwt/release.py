"""Hub releases: export a trained pipeline folder, check its code files against the sources, upload it.

A release folder is what ``DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)``
loads: ``model_index.json`` in diffusers' remote-code list form, one folder per component with its
config and safetensors weights, the code files and a model card. The code files are this package's
model modules, written under the names the Hub folder has always had (:func:`release_code_files`):

==========================================  ==================================================
release file                                package module
==========================================  ==================================================
``pipeline_difiisr_dwt.py``                 ``difiisr_dwt/pipelines/pipeline_difiisr_dwt.py``
``image_processor.py``, ``tiling.py``,      ``difiisr_dwt/pipelines/`` (same names; the pipeline
``fidelity.py``, ``attention.py``,          file imports them relatively)
``saving.py``
``dwt_encoder/modeling_dwt_encoder.py``     ``difiisr_dwt/models/modeling_dwt_encoder.py``
``scheduler/scheduler_resshift.py``         ``difiisr_dwt/schedulers/scheduling_resshift.py``
==========================================  ==================================================

They must equal the installed modules byte for byte; :func:`check_release` says where they drift.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import InputGuard, replace_dir
from difiisr_dwt.model_card import ReleaseInfo, render_model_card

# component -> class the current code expects in model_index.json
COMPONENTS = {"dwt_encoder": "DWTEncoder", "unet": "UNet2DModel", "vqvae": "VQModel", "scheduler": "ResShiftScheduler"}
PIPELINE_CLASS = "DifIISRDWTPipeline"
# Never uploaded: training state, pickles, temporary and cache files.
UPLOAD_IGNORE = ["checkpoint-*", "*/checkpoint-*", "checkpoints/*", "*/checkpoints/*", "*.ckpt", "*.pth", "*.pt",
                 "*.bin", "*.pkl", "*.tmp", "*.pyc", "__pycache__/*", "*/__pycache__/*", ".*", "*/.*"]


class ReleaseError(UsageError):
    """A pipeline or release folder that cannot be exported, checked or uploaded as asked."""


def _read_index(folder: Path) -> dict:
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ReleaseError(f"{folder}: not a pipeline folder (no model_index.json)")
    try:
        return json.loads(index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ReleaseError(f"{index_path}: not valid JSON ({error})") from error


def named_code_files(index: dict) -> list[str]:
    """Release-relative paths of the remote-code files ``model_index.json`` names (pipeline and components)."""
    files = []
    class_name = index.get("_class_name")
    if isinstance(class_name, list) and len(class_name) == 2:
        files.append(f"{class_name[0]}.py")
    for name, value in index.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2):
            continue
        if value[0] not in ("diffusers", "transformers", None):
            files.append(f"{name}/{value[0]}.py")
    return files


def release_code_files() -> dict[str, Path]:
    """Release-relative path -> installed package module of every code file a release carries: the
    pipeline file and its sibling files at the root, each custom component's module in its folder."""
    from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder
    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline
    from difiisr_dwt.schedulers.scheduling_resshift import ResShiftScheduler

    files = DifIISRDWTPipeline.code_files({"dwt_encoder": DWTEncoder, "scheduler": ResShiftScheduler})
    return {relative: Path(source) for relative, source in files.items()}


def check_release(folder: str | os.PathLike) -> list[str]:
    """Problems that make ``folder`` differ from a release of the installed package (empty: none).

    Checks that ``model_index.json`` names the pipeline in list form and no code file the package
    lacks, that every file of :func:`release_code_files` (the pipeline's sibling files too) exists
    and is byte-identical to its package module, and that no other ``.py`` file is there.

    Args:
        folder: the release folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: not a folder"]
    try:
        index = _read_index(folder)
    except ReleaseError as error:
        return [str(error)]
    problems = []
    if not (isinstance(index.get("_class_name"), list) and index["_class_name"][-1] == PIPELINE_CLASS):
        problems.append(
            f"{folder}/model_index.json: _class_name is {index.get('_class_name')!r}, not the remote-code list "
            f"form ['pipeline_difiisr_dwt', '{PIPELINE_CLASS}']"
        )
    expected, named = release_code_files(), named_code_files(index)
    problems += [f"{relative}: model_index.json names it, but the package has no such code file"
                 for relative in named if relative not in expected]
    for relative, source in sorted(expected.items()):
        release_file = folder / relative
        if not release_file.is_file():
            problems.append(f"{relative}: missing (source {source})")
        elif release_file.read_bytes() != source.read_bytes():
            problems.append(f"{relative}: differs from {source} ({_first_difference(release_file, source)})")
    stray = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*.py")
        if p.relative_to(folder).as_posix() not in expected and not any(part.startswith(".") for part in p.parts)
    )
    problems += [f"{relative}: a code file the release does not carry" for relative in stray if relative not in named]
    return problems


def _first_difference(a: Path, b: Path) -> str:
    lines_a, lines_b = a.read_text(encoding="utf-8").splitlines(), b.read_text(encoding="utf-8").splitlines()
    for number, (line_a, line_b) in enumerate(zip(lines_a, lines_b), start=1):
        if line_a != line_b:
            return f"first difference at line {number}"
    return f"{len(lines_a)} vs {len(lines_b)} lines"


def load_pipeline_folder(folder: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """Load a pipeline folder (a training output or a release) with the classes of the current sources.

    Unlike ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``, which would run the
    code files inside ``folder``, this checks that the weights and configs fit the code about to ship.
    """
    from diffusers import UNet2DModel, VQModel

    from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder
    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline
    from difiisr_dwt.schedulers.scheduling_resshift import ResShiftScheduler

    folder = Path(folder)
    index = _read_index(folder)
    class_name = index.get("_class_name")
    if (class_name[-1] if isinstance(class_name, list) else class_name) != PIPELINE_CLASS:
        raise ReleaseError(f"{folder}: model_index.json describes {class_name!r}, not a {PIPELINE_CLASS}")
    for name, expected in COMPONENTS.items():
        entry = index.get(name)
        if not (isinstance(entry, list) and entry[-1] == expected):
            raise ReleaseError(f"{folder}/model_index.json: component {name!r} is {entry!r}, expected a {expected}")
        if not (folder / name).is_dir():
            raise ReleaseError(f"{folder}: component folder {name}/ is missing")
    config = {key: value for key, value in index.items() if not key.startswith("_") and key not in COMPONENTS}
    accepted = inspect.signature(DifIISRDWTPipeline.__init__).parameters
    unknown = sorted(set(config) - set(accepted))
    if unknown:  # settings of a newer release (e.g. unet_attention_window): this code runs without them
        warnings.warn(f"{folder}/model_index.json: {unknown} not known to this version of difiisr-dwt; ignored "
                      "(upgrade difiisr-dwt to use them)", stacklevel=2)
        config = {key: value for key, value in config.items() if key not in unknown}
    pipe = DifIISRDWTPipeline(
        dwt_encoder=DWTEncoder.from_pretrained(folder, subfolder="dwt_encoder", torch_dtype=torch_dtype),
        unet=UNet2DModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch_dtype),
        vqvae=VQModel.from_pretrained(folder, subfolder="vqvae", torch_dtype=torch_dtype),
        scheduler=ResShiftScheduler.from_pretrained(folder, subfolder="scheduler"),
        **config,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_weights(folder: Path, pipe, variant: str | None = None) -> None:
    """Reload ``folder``'s weights (optionally a variant) and compare them with ``pipe``'s, tensor by tensor."""
    from diffusers import UNet2DModel, VQModel

    from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder

    for name, cls in (("dwt_encoder", DWTEncoder), ("unet", UNet2DModel), ("vqvae", VQModel)):
        loaded = cls.from_pretrained(folder, subfolder=name, variant=variant, torch_dtype=getattr(pipe, name).dtype)
        saved, expected = loaded.state_dict(), getattr(pipe, name).state_dict()
        if saved.keys() != expected.keys() or any(not torch.equal(saved[k], expected[k]) for k in expected):
            raise ReleaseError(f"{folder}/{name}: weights read back differ from the exported ones")


def export_release(
    source: str | os.PathLike,
    out: str | os.PathLike,
    info: ReleaseInfo | None = None,
    evaluations: dict[str, dict] | None = None,
    variant: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the Hub release of the pipeline folder ``source`` to ``out``, atomically.

    Everything is written to a temporary folder beside ``out`` and renamed into place at the end, so an
    interrupted export never leaves a half-written release under ``out``. Replacing an earlier release
    (``overwrite``) replaces only the files a release consists of (:func:`is_release_file`); every other
    file of ``out`` (notes, figures) is carried into the new folder unchanged.

    Args:
        source: a pipeline folder (``save_pretrained`` output, e.g. training's ``OUTPUT_DIR/pipeline``).
        out: the release folder to write.
        info: model card metadata.
        evaluations: label -> methods of an ``eval --json`` file (:func:`~difiisr_dwt.model_card.load_eval_json`).
        variant: ``"fp16"`` also writes ``*.fp16.safetensors`` weights (diffusers' variant convention).
        overwrite: replace an existing release at ``out``.

    Raises:
        ReleaseError: ``out`` exists without ``overwrite``, is not a pipeline folder, or is, lies inside or
            holds ``source``.
    """
    source, out = Path(source), Path(out)
    problem = InputGuard(folders=[source]).problem(out, replaces_folder=True)
    if problem is not None:
        raise ReleaseError(f"--out {out} {problem}; export never writes into the pipeline folder it reads: "
                           "choose another --out")
    if variant not in (None, "fp16"):
        raise ReleaseError(f"variant {variant!r} is not supported; use 'fp16'")
    if out.exists() and not overwrite:
        raise ReleaseError(f"{out} already exists; pass --overwrite to replace it")
    if out.exists() and not (out / "model_index.json").is_file():
        raise ReleaseError(f"{out} exists and is not a pipeline folder (no model_index.json); refusing to replace it")
    pipe = load_pipeline_folder(source, torch_dtype=torch.float32)  # the release's main weights are float32
    info = info or ReleaseInfo()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)  # with the package's code files (release_code_files)
        _check_weights(tmp, pipe)
        card = render_model_card(pipe, tmp, info, evaluations or {}, variant=variant)
        if variant:  # diffusers' way to half precision: load the float32 weights with torch_dtype
            half = load_pipeline_folder(tmp, torch_dtype=torch.float16)
            half.save_pretrained(tmp, safe_serialization=True, variant=variant)
            _check_weights(tmp, half, variant=variant)
        card.save(tmp / "README.md")
        for image in info.images:  # figures the card shows (e.g. a plot), beside README.md
            shutil.copyfile(image, tmp / Path(image).name)
        problems = check_release(tmp)
        if problems:
            raise ReleaseError("the export does not match the sources:\n  " + "\n  ".join(problems))
        stale = [p.relative_to(out).as_posix() for p in out.rglob("*")] if out.is_dir() else []
        stale = [relative for relative in stale if not (tmp / relative).exists() and is_release_file(out, relative)]
        replace_dir(tmp, out, keep_others=True, drop=stale)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


#: What :func:`export_release` writes into a component folder (configs and weights, every variant).
_COMPONENT_FILES = ("config.json", "scheduler_config.json", "diffusion_pytorch_model*.safetensors")


def is_release_file(folder: Path, relative: str) -> bool:
    """Whether ``relative`` (``/``-separated) is one of the files an export writes into a release ``folder``:
    ``model_index.json``, ``README.md``, the code files (:func:`release_code_files`, and those its
    ``model_index.json`` names), and each component's configs and weights. An export replacing ``folder``
    drops such files it no longer writes (an earlier fp16 variant) and keeps every other file."""
    parts = relative.split("/")
    if relative in ("model_index.json", "README.md"):
        return True
    if len(parts) == 2 and parts[0] in COMPONENTS and any(fnmatch.fnmatch(parts[1], p) for p in _COMPONENT_FILES):
        return True
    if relative in release_code_files():
        return True
    try:
        return relative in named_code_files(_read_index(folder))
    except ReleaseError:
        return False


def upload_files(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """``(path, bytes)`` of the files :func:`push_release` uploads: huggingface_hub's own selection
    (``filter_repo_objects`` with :data:`UPLOAD_IGNORE` and its default ignores)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("**/*")) if p.is_file()}
    kept = filter_repo_objects(files, ignore_patterns=UPLOAD_IGNORE + DEFAULT_IGNORE_PATTERNS)
    return [(relative, files[relative].stat().st_size) for relative in kept]


def push_release(folder: str | os.PathLike, repo_id: str, private: bool = False,
                 commit_message: str = "Upload DifIISR-DWT pipeline") -> str:
    """Check ``folder`` against the sources, create ``repo_id`` if needed and upload the release.

    Returns:
        The URL of the commit.
    """
    from huggingface_hub import HfApi

    problems = check_release(folder)
    if problems:
        raise ReleaseError(f"{folder} is not a release of the current sources:\n  " + "\n  ".join(problems))
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                               ignore_patterns=list(UPLOAD_IGNORE), commit_message=commit_message)
    return getattr(commit, "commit_url", str(commit))
