"""What a training stage provides to the shared loop in :mod:`difiisr_dwt.training.loop`."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from diffusers import VQModel
from torch import nn

from difiisr_dwt.errors import ModelLoadError, UsageError
from difiisr_dwt.metrics import load_lpips
from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder
from difiisr_dwt.training.checkpointing import save_folder_atomic


class Stage:
    """One trained component and how to compute its losses.

    Subclasses set, in ``__init__``:

    - ``component`` (`ModelMixin`): the model saved in checkpoints and at the end, ``component_name``
      its folder name;
    - ``module`` (`nn.Module`): what ``accelerator.prepare`` wraps (DDP) and the loss runs through;
      it shares its parameters with ``component``.
    """

    name: str = ""
    component_name: str = ""
    component: nn.Module
    module: nn.Module
    #: ``DistributedDataParallel`` options of this stage (``DistributedDataParallelKwargs``).
    ddp_options: dict = {}

    def __init__(self, args: argparse.Namespace, accelerator):
        self.args, self.accelerator = args, accelerator

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters the optimiser and the EMA see (``module``'s by default)."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def training_step(self, module: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator,
                      step: int) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch: ``{"loss": total, <term>: value, ...}`` (scalar tensors)."""
        raise NotImplementedError

    def after_optimizer_step(self, module: nn.Module, optimizer, batch: dict[str, torch.Tensor], step: int
                             ) -> dict[str, float]:
        """Hook after each optimiser step (``step`` = steps done); returns extra values to log."""
        return {}

    def state(self) -> dict:
        """JSON-serialisable stage state stored in checkpoints."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def validate(self, step: int, output_dir: str) -> dict[str, float]:
        """Validation metrics (main process only, EMA weights in place); may save an image grid."""
        return {}

    @classmethod
    def final_folders(cls) -> list[str]:
        """The folder names :meth:`save_final` writes into ``--output_dir``."""
        return [cls.component_name]

    def save_final(self, output_dir: str) -> list[str]:
        """Write the stage's loadable output folders (EMA weights in place); returns their paths."""
        return [save_folder_atomic(self.component.save_pretrained, os.path.join(output_dir, self.component_name))]


def load_component(cls: type, path: str, subfolder: str | None, flag: str, args: argparse.Namespace):
    """``cls.from_pretrained(path, subfolder=...)`` after checking that a local folder holds a ``cls``.

    A local folder's ``config.json`` names its class (``_class_name``); reading it first turns a wrong
    folder (a ``dwt_encoder/`` given as the VQ model, a training output folder instead of its component
    subfolder) into a message saying what is there and what ``flag`` needs, instead of a failure deep
    inside loading.

    Raises:
        UsageError: a path that does not exist and is no Hub repo id (``/abs/dir``, ``./dir``, ``a/b/c``), a
            local folder without ``config.json`` or holding another class.
        ModelLoadError: anything else ``from_pretrained`` rejects (a Hub repo id that cannot be fetched...).
    """
    from difiisr_dwt.loading import could_be_repo_id

    folder = Path(path, subfolder or "")
    if not Path(path).exists() and not could_be_repo_id(str(path)):
        raise UsageError(f"{flag} {path}: no such folder")
    if Path(path).exists():  # else a Hub repo id: diffusers checks it
        config = folder / "config.json"
        found = _class_name(config) if config.is_file() else None
        if found != cls.__name__:
            inside = [p.parent.name for p in sorted(folder.glob("*/config.json")) if _class_name(p) == cls.__name__]
            subfolder_flag = flag.replace("model_name_or_path", "subfolder")
            alternative = f", or {subfolder_flag} {inside[0]}" if inside and hasattr(args, subfolder_flag[2:]) else ""
            hint = f"; the {cls.__name__} is in {folder / inside[0]} (pass that folder{alternative})" if inside else ""
            what = f"holds a {found}" if config.is_file() else "has no config.json"
            raise UsageError(f"{flag} {folder} {what}; {flag} needs a {cls.__name__} folder{hint}")
    try:
        return cls.from_pretrained(path, subfolder=subfolder, revision=args.revision, cache_dir=args.cache_dir)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{flag} {folder}: cannot load a {cls.__name__} ({error})") from error


def _class_name(config: Path) -> str | None:
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


def load_vqvae(args: argparse.Namespace) -> VQModel:
    """``--vqvae_model_name_or_path`` (folder or Hub repo, ``--vqvae_subfolder`` aware)."""
    return load_component(VQModel, args.vqvae_model_name_or_path, args.vqvae_subfolder,
                          "--vqvae_model_name_or_path", args)


def load_dwt_encoder(args: argparse.Namespace) -> DWTEncoder:
    """``--dwt_encoder_model_name_or_path`` (folder or Hub repo, ``--dwt_encoder_subfolder`` aware)."""
    return load_component(DWTEncoder, args.dwt_encoder_model_name_or_path, args.dwt_encoder_subfolder,
                          "--dwt_encoder_model_name_or_path", args)


def load_lpips_model(args: argparse.Namespace, device: torch.device, net: str | None = None) -> nn.Module:
    return load_lpips(net or args.lpips_net, weights=args.lpips_backbone_dir, device=device)


def freeze(*models: nn.Module) -> None:
    for model in models:
        model.requires_grad_(False)
        model.eval()
