"""Stage 2: train the latent adapter ``A`` (``dwt_encoder.adapter``, and only it) so that
``A(Enc(x)) ~ E(x)``: the frozen VQ encoder's latent of an HR crop, carried into the wavelet space,
should match the crop's DWT. The diffusion stage defines its clean state as ``s_0 = A(Enc(x))``, so the
sampler stays consistent however accurate ``A`` is; a better ``A`` puts ``s_0`` nearer the true
wavelet bands that the condition ``s_lr`` also lives in.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from difiisr_dwt.presets import build_dwt_encoder
from difiisr_dwt.training.stage import Stage, freeze, load_dwt_encoder, load_vqvae
from difiisr_dwt.training.validation import load_validation_set


class AdapterStage(Stage):
    name = "adapter"
    component_name = "dwt_encoder"

    def __init__(self, args: argparse.Namespace, accelerator):
        super().__init__(args, accelerator)
        self.vqvae = load_vqvae(args).to(accelerator.device)
        freeze(self.vqvae)
        encoder = load_dwt_encoder(args) if args.dwt_encoder_model_name_or_path else build_dwt_encoder(args.preset)
        if encoder.config.latent_channels != self.vqvae.config.latent_channels:
            raise ValueError(f"The DWT encoder's latent_channels ({encoder.config.latent_channels}) differ from the "
                             f"VQ model's ({self.vqvae.config.latent_channels}).")
        freeze(encoder)
        encoder.adapter.requires_grad_(True).train()
        self.component = encoder.to(accelerator.device)
        self.module = encoder.adapter

    @torch.no_grad()
    def targets(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Enc(x), E(x))`` for HR images in [-1, 1]."""
        return self.vqvae.encode(hr).latents, self.component.encode(hr)

    def training_step(self, module, batch, generator, step):
        latents, bands = self.targets(batch["hr"])
        pred = module(latents).float()
        channels = self.component.config.in_channels
        return {"loss": F.mse_loss(pred, bands.float()),
                "mse_ll": F.mse_loss(pred[:, :channels].detach(), bands[:, :channels].float())}

    @torch.no_grad()
    def validate(self, step: int, output_dir: str) -> dict[str, float]:
        """MSE of ``A(Enc(x))`` against ``E(x)`` and that error relative to the bands' variance."""
        device = self.accelerator.device
        self.module.eval()
        errors, relative = [], []
        for _, hr in load_validation_set(self.args):
            hr_t = torch.from_numpy(hr).permute(2, 0, 1)[None].to(device) * 2 - 1
            latents, bands = self.targets(hr_t)
            mse = F.mse_loss(self.component.project_latent(latents), bands)
            errors.append(float(mse))
            relative.append(float(mse / bands.var()))
        self.module.train()
        return {"mse": sum(errors) / len(errors), "relative_mse": sum(relative) / len(relative)}
