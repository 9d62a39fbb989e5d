"""Atomic training checkpoints on top of ``accelerator.save_state`` / ``load_state``.

A checkpoint is written into a hidden temporary folder and renamed to ``checkpoint-<step>`` only when
every process has finished writing, so a kill during a save never leaves a ``checkpoint-*`` folder
that cannot load; ``latest`` only considers complete folders (with ``training_state.json``).

The trained component is saved by a save hook as a ``save_pretrained`` folder (safetensors) instead
of accelerate's flat ``model.safetensors``; the EMA weights as a second folder of the same component.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import safetensors.torch
import torch
from diffusers.training_utils import EMAModel

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import InputGuard, replace_dir, write_atomic, write_text_atomic

logger = logging.getLogger(__name__)


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed from: damaged, incomplete, or another stage's or preset's."""


STATE_FILE = "training_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def run_identity(stage: str, preset: str) -> dict[str, str]:
    """What a checkpoint records about its run, and what a resume must match: the stage and the preset."""
    return {"training_stage": stage, "preset": preset}


def damaged_file(checkpoint: str | os.PathLike) -> str | None:
    """The first file of ``checkpoint`` that does not read back, with the reason (``None``: all read).

    Cheap checks that catch truncation, the damage a full disk or a killed copy leaves: JSON parses,
    a safetensors header covers the whole file, a ``torch.save`` zip archive has its central directory
    (which is written last). ``training_state.json`` must also hold the step.
    """
    from safetensors import safe_open

    for path in sorted(Path(checkpoint).rglob("*")):
        if not path.is_file():
            continue
        try:
            if path.suffix == ".json":
                state = json.loads(path.read_text(encoding="utf-8"))
                if path.name == STATE_FILE and not isinstance(state.get("step"), int):
                    raise ValueError("no integer 'step'")
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix in (".bin", ".pkl", ".pt", ".pth"):
                with zipfile.ZipFile(path) as archive:
                    archive.infolist()
        except Exception as error:  # any reader's failure means: this file cannot be resumed from
            return f"{path} ({type(error).__name__}: {error})"
    return None


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from: str | None,
                       identity: dict[str, str] | None = None) -> Path | None:
    """The checkpoint to resume from, checked.

    ``"latest"`` is the newest complete checkpoint of ``output_dir`` that reads back: a damaged newer one
    is skipped with a warning naming the damaged file (``None`` when there is no checkpoint, so a first
    run with ``--resume_from_checkpoint latest`` starts fresh). A path is that checkpoint.

    Args:
        identity: :func:`run_identity` of this run; a checkpoint recording another stage or preset is refused.

    Raises:
        CheckpointError: no complete checkpoint at the given path, a damaged one (naming the file and an
            older checkpoint to use), every checkpoint damaged, or another stage's or preset's checkpoint.
    """
    if resume_from is None:
        return None
    if resume_from == "latest":
        checkpoints = [path for _, path in reversed(list_checkpoints(output_dir))]
        if not checkpoints:
            return None
        damaged = []
        for path in checkpoints:
            problem = damaged_file(path)
            if problem is None:
                break
            damaged.append(problem)
            logger.warning("Skipping the damaged checkpoint %s: %s does not read back", path.name, problem)
        else:
            raise CheckpointError(f"every checkpoint in {output_dir} is damaged ({'; '.join(damaged)}); remove "
                                  "them, or resume from a copy, to continue")
    else:
        path, candidates = _locate_checkpoint(output_dir, resume_from)
        if not path.exists():
            looked = " and ".join(str(c) for c in candidates)
            raise CheckpointError(f"--resume_from_checkpoint {resume_from}: no such checkpoint folder (looked for "
                                  f"{looked})")
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(f"--resume_from_checkpoint {resume_from}: {path} is not a complete checkpoint "
                                  f"(no {STATE_FILE}).")
        problem = damaged_file(path)
        if problem is not None:
            older = [p for _, p in list_checkpoints(path.parent) if p != path and damaged_file(p) is None]
            hint = f"; the newest complete one is {older[-1]}" if older else ""
            raise CheckpointError(f"--resume_from_checkpoint {resume_from}: {problem} is damaged{hint}")
    _check_identity(path, identity)
    return path


def _locate_checkpoint(output_dir: str | os.PathLike, resume_from: str) -> tuple[Path, list[Path]]:
    """Where ``--resume_from_checkpoint PATH`` is: ``(the first of the places that exists, else the last; the
    places)``. The places are PATH itself, and for a relative PATH that does not exist, PATH inside
    ``--output_dir`` too (``checkpoint-500``)."""
    path = Path(resume_from)
    candidates = [path] if path.is_absolute() or path.exists() else [path, Path(output_dir) / resume_from]
    return next((c for c in candidates if c.exists()), candidates[-1]), candidates


def _describe(identity: dict) -> str:
    return f"the {identity.get('training_stage', '?')} stage with --preset {identity.get('preset', '?')}"


def _other_run(checkpoint: Path, identity: dict[str, str] | None) -> dict | None:
    """The identity ``checkpoint`` records when it differs from ``identity`` (``None``: the same run, or
    nothing recorded: checkpoints saved before stage and preset were)."""
    saved = read_training_state(checkpoint)
    recorded = {key: saved[key] for key in (identity or {}) if key in saved}
    return recorded if recorded and recorded != {key: identity[key] for key in recorded} else None


def _check_identity(checkpoint: Path, identity: dict[str, str] | None) -> None:
    recorded = _other_run(checkpoint, identity)
    if recorded is not None:
        raise CheckpointError(f"{checkpoint} was saved by {_describe(recorded)}; this run is {_describe(identity)}. "
                              "Resume it with those flags, or give this run its own --output_dir.")


def check_earlier_run(output_dir: str | os.PathLike, identity: dict[str, str], resume_from: str | None) -> None:
    """Refuse an ``--output_dir`` holding checkpoints that this run would overwrite or mix with its own.

    Another stage's or preset's checkpoints are always refused (a new run would replace ``checkpoint-<step>``
    folders, ``curves.csv`` and ``run_summary.json`` of that run); those of this stage and preset unless the
    run resumes (a fresh run would interleave its checkpoints with the earlier run's, and ``latest`` would then
    pick the wrong one); without checkpoints, a fresh run is refused where an earlier run's ``curves.csv`` or
    ``run_summary.json`` is left. A damaged ``training_state.json`` is left to :func:`resolve_checkpoint`.

    Raises:
        CheckpointError: naming the folder, the checkpoints and the run that saved them.
    """
    checkpoints = list_checkpoints(output_dir)
    others: dict[str, list[str]] = {}
    for _, path in checkpoints:
        try:
            recorded = _other_run(path, identity)
        except (OSError, ValueError):
            continue
        if recorded is not None:
            others.setdefault(_describe(recorded), []).append(path.name)
    if others:
        held = "; ".join(f"{_names(names)} saved by {who}" for who, names in others.items())
        raise CheckpointError(f"--output_dir {output_dir} holds another run's checkpoints ({held}); this run is "
                              f"{_describe(identity)}. Give this run its own --output_dir, or resume that run with "
                              "its flags.")
    leftovers = [name for name in ("curves.csv", "run_summary.json") if (Path(output_dir) / name).is_file()]
    if not checkpoints and leftovers and resume_from is None:  # a finished run whose checkpoints were removed
        raise CheckpointError(f"--output_dir {output_dir} holds an earlier run's {' and '.join(leftovers)} (no "
                              "checkpoints left to tell which stage); a new run would replace them. Give it its own "
                              "--output_dir, or remove those files.")
    if checkpoints and resume_from is None:
        raise CheckpointError(f"--output_dir {output_dir} holds checkpoints of an earlier run of {_describe(identity)} "
                              f"({_names([p.name for _, p in checkpoints])}): pass --resume_from_checkpoint latest to "
                              "continue it, or give a new run its own --output_dir.")


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}, {len(names)} in all"


def read_training_state(checkpoint: str | os.PathLike) -> dict:
    with open(Path(checkpoint) / STATE_FILE, encoding="utf-8") as f:
        return json.load(f)


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict,
                    total_limit: int | None = None) -> Path:
    """Save the accelerate state at ``step`` atomically; call on every process.

    Args:
        state: JSON-serialisable training state (the step and anything needed to resume).
        total_limit: keep at most this many checkpoints (the oldest are removed after the save).
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed save
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's RNG file is written
    if accelerator.is_main_process:
        write_text_atomic(json.dumps({"step": step, **state}, indent=2), tmp / STATE_FILE)
        replace_dir(tmp, final)  # a resumed run passing an old step again replaces the stale copy
        if total_limit is not None:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("Saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def save_folder_atomic(save_fn, path: str | os.PathLike) -> str:
    """Call ``save_fn(tmp_folder)`` (e.g. a ``save_pretrained``) and rename the result to ``path``.

    Files of an existing ``path`` that ``save_fn`` does not write (notes) are kept.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_fn(str(tmp))
    replace_dir(tmp, path, keep_others=True)
    return str(path)


#: Files of ``--output_dir`` that training writes (replaced when they exist).
OUTPUT_FILES = ("curves.csv", "curves.png", "validation.jsonl", "run_summary.json")


def check_output_dir(args, final_folders: list[str]) -> None:
    """Refuse, before anything loads, an ``--output_dir`` whose writes would land on what the run reads.

    The inputs are the component folders (``--vqvae_model_name_or_path``, ``--dwt_encoder_model_name_or_path``,
    ``--unet_model_name_or_path``), the data folders and file lists and ``--lpips_backbone_dir``.
    ``--output_dir`` may not lie inside one of them; the folders training replaces as a whole
    (``final_folders``, e.g. ``unet`` and ``pipeline``; ``checkpoint-<step>``, which
    ``--checkpoints_total_limit`` also deletes; ``validation``, the logging folder) may not hold one,
    except the checkpoint a run resumes from; and the files of :data:`OUTPUT_FILES` may not be one.

    Raises:
        UsageError: naming the option, the target and the input.
    """
    def subfolder(path, sub):
        return None if path is None else os.path.join(path, sub) if sub else path

    dataset = args.dataset_name if args.dataset_name and os.path.isdir(args.dataset_name) else None
    guard = InputGuard(
        files=[f for f in (args.train_file_list, args.validation_file_list) if f],
        folders=[subfolder(args.vqvae_model_name_or_path, args.vqvae_subfolder),
                 subfolder(args.dwt_encoder_model_name_or_path, args.dwt_encoder_subfolder),
                 args.unet_model_name_or_path, args.train_data_dir, args.lr_data_dir, args.validation_data_dir,
                 args.lpips_backbone_dir, dataset],
    )
    output_dir = Path(args.output_dir)
    guard.check(output_dir, "--output_dir")
    resume = args.resume_from_checkpoint
    resumed = None if resume in (None, "latest") else os.path.realpath(
        _locate_checkpoint(output_dir, resume)[0])
    replaced = [*final_folders, "validation", args.logging_dir]
    if output_dir.is_dir():
        replaced += [p.name for p in output_dir.iterdir() if _CHECKPOINT_RE.match(p.name)]
    # inputs inside a checkpoint-<step> folder that does not exist yet: a save at that step would replace them
    for _, folder in guard.folders:
        relative = os.path.relpath(folder, os.path.realpath(output_dir)).split(os.sep)[0]
        if _CHECKPOINT_RE.match(relative):
            replaced.append(relative)
    for name in dict.fromkeys(replaced):
        target = output_dir / name
        if os.path.realpath(target) == resumed:
            continue
        guard.check(target, "--output_dir", replaces_folder=True)
    for name in OUTPUT_FILES:
        guard.check(output_dir / name, "--output_dir")


def _ema_meta_path(folder: Path) -> Path:
    return folder / "ema_state.json"


def register_hooks(accelerator, component, name: str, ema: EMAModel | None, trainable) -> None:
    """Save/load hooks writing ``save_pretrained`` folders instead of accelerate's model files.

    Args:
        component: the `ModelMixin` whose folder is saved (``VQModel``, ``DWTEncoder``, ``UNet2DModel``);
            the prepared modules share their parameters with it.
        name: its folder name in the checkpoint (``<name>`` and ``<name>_ema``).
        ema: the EMA of ``trainable``'s parameters, or ``None``.
        trainable: a callable returning the parameters the EMA tracks (in order).
    """

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            component.save_pretrained(os.path.join(output_dir, name))
            if ema is not None:
                folder = Path(output_dir) / f"{name}_ema"
                ema.store(trainable())
                ema.copy_to(trainable())
                component.save_pretrained(folder)
                ema.restore(trainable())
                meta = {k: v for k, v in ema.state_dict().items() if k not in ("shadow_params", "collected_params")}
                write_text_atomic(json.dumps(meta, indent=2), _ema_meta_path(folder))
        while weights:  # the folders above replace accelerate's own model files
            weights.pop()

    def load_hook(models, input_dir):
        while models:
            models.pop()
        if not os.path.isdir(os.path.join(input_dir, name)):  # else diffusers would try the Hub with this path
            found = sorted(p.name for p in Path(input_dir).iterdir() if (p / "config.json").is_file())
            raise CheckpointError(f"{input_dir} has no {name}/ folder (it holds {found or 'none'}): it is a "
                                  f"checkpoint of another stage")
        loaded = type(component).from_pretrained(os.path.join(input_dir, name))
        component.load_state_dict(loaded.state_dict())
        if ema is not None:
            folder = Path(input_dir) / f"{name}_ema"
            loaded = type(component).from_pretrained(folder)
            # the EMA tracks a subset of the component's parameters: map them by name
            by_id = {id(p): n for n, p in component.named_parameters()}
            ema_params = dict(loaded.named_parameters())
            shadow = [ema_params[by_id[id(p)]].detach().clone() for p in trainable()]
            with open(_ema_meta_path(folder), encoding="utf-8") as f:
                meta = json.load(f)
            ema.load_state_dict({**meta, "shadow_params": shadow})
            ema.to(next(iter(trainable())).device)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def dump_rank_weights(module: torch.nn.Module, output_dir: str | os.PathLike, rank: int) -> Path:
    """Write this process's trained weights to ``OUTPUT_DIR/rank_weights/rank<r>.safetensors`` (tests compare
    them across ranks: accelerate itself only saves from the main process)."""
    path = Path(output_dir) / "rank_weights" / f"rank{rank}.safetensors"
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_atomic(path, lambda f: f.write(safetensors.torch.save(tensors)))
    return path
