"""What a training stage provides to the shared loop in :mod:`difiisr_dwt.training.loop`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

import torch
from diffusers import VQModel
from torch import nn

from difiisr_dwt.metrics import load_lpips
from difiisr_dwt.training.checkpointing import save_folder_atomic
from modeling_dwt_encoder import DWTEncoder


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

    def save_final(self, output_dir: str) -> list[str]:
        """Write the stage's loadable output folders (EMA weights in place); returns their paths."""
        return [save_folder_atomic(self.component.save_pretrained, os.path.join(output_dir, self.component_name))]


def load_vqvae(args: argparse.Namespace) -> VQModel:
    """``--vqvae_model_name_or_path`` (folder or Hub repo, ``--vqvae_subfolder`` aware)."""
    kwargs = {"revision": args.revision, "cache_dir": args.cache_dir}
    if args.vqvae_subfolder:
        kwargs["subfolder"] = args.vqvae_subfolder
    return VQModel.from_pretrained(args.vqvae_model_name_or_path, **kwargs)


def load_dwt_encoder(args: argparse.Namespace) -> DWTEncoder:
    kwargs = {"revision": args.revision, "cache_dir": args.cache_dir}
    if args.dwt_encoder_subfolder:
        kwargs["subfolder"] = args.dwt_encoder_subfolder
    return DWTEncoder.from_pretrained(args.dwt_encoder_model_name_or_path, **kwargs)


def load_lpips_model(args: argparse.Namespace, device: torch.device, net: str | None = None) -> nn.Module:
    return load_lpips(net or args.lpips_net, weights=args.lpips_backbone_dir, device=device)


def freeze(*models: nn.Module) -> None:
    for model in models:
        model.requires_grad_(False)
        model.eval()
