"""Stage 3: train the UNet of the residual-shifting diffusion in wavelet space (``E`` the DWT encoder, ``A``
the adapter from VQ latents to the wavelet state, ``Enc`` / ``D`` the VQ encoder and decoder).

For an HR crop ``x`` and its LR ``y``:

- condition ``s_lr = E(bicubic_x4(y))``, computed by the pipeline's own ``prepare_condition``;
- clean state ``s_0 = A(z_0)`` with ``z_0 = Enc(x)`` (VQ encoder and adapter frozen);
- ``s_t = s_0 + eta_t (s_lr - s_0) + kappa sqrt(eta_t) noise`` (``scheduler.add_noise``);
- ``z0_hat = UNet(cat(scale(s_t), s_lr), t)``;
- loss: ``||z0_hat - z_0||^2`` plus, on ``D(z0_hat)``, LPIPS (weight ramped), Sobel edges, FFT and pixel L1,
  each scaled by the timestep weight.

With ``--image_loss_after_fidelity`` the image-space terms are measured on ``F(D(z0_hat), y)``, the output of
the pipeline's own fidelity step (:meth:`DifIISRDWTPipeline.apply_lr_consistency` with its default
``input_noise_level``; linear in the decoded image, so the gradient passes): the UNet is judged on what the
user gets after back-projection, which keeps the low frequencies of the input whatever the UNet predicts.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from diffusers import UNet2DModel

from difiisr_dwt.degradations import degrade
from difiisr_dwt.evaluation import image_metrics
from difiisr_dwt.loading import pipeline_call_defaults
from difiisr_dwt.losses import ImageLosses, diffusion_loss, ramp
from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline
from difiisr_dwt.presets import build_scheduler, build_unet
from difiisr_dwt.training.checkpointing import save_folder_atomic
from difiisr_dwt.training.stage import (
    Stage,
    freeze,
    load_component,
    load_dwt_encoder,
    load_lpips_model,
    load_vqvae,
)
from difiisr_dwt.training.validation import (
    load_validation_set,
    pil_bicubic_lr,
    pil_bicubic_up,
    save_validation_grid,
    validation_metric_settings,
)


class DiffusionStage(Stage):
    name = "diffusion"
    component_name = "unet"

    def __init__(self, args: argparse.Namespace, accelerator):
        super().__init__(args, accelerator)
        device = accelerator.device
        self.vqvae = load_vqvae(args).to(device)
        self.dwt_encoder = load_dwt_encoder(args).to(device)
        freeze(self.vqvae, self.dwt_encoder)
        if args.unet_model_name_or_path:
            unet = load_component(UNet2DModel, args.unet_model_name_or_path, None, "--unet_model_name_or_path", args)
        else:
            unet = build_unet(args.preset, self.dwt_encoder, self.vqvae.config.latent_channels)
        if args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        self.component = self.module = unet.to(device)
        self.scheduler = build_scheduler()
        self.pipeline = DifIISRDWTPipeline(self.dwt_encoder, unet, self.vqvae, self.scheduler,
                                           quantize_decode=not args.no_quantize_decode)
        self.pipeline.set_progress_bar_config(disable=True)
        lr_size = args.resolution // self.pipeline.upscale_factor
        if lr_size % self.pipeline.unet_size_multiple:
            raise ValueError(f"--resolution {args.resolution} gives {lr_size}-pixel LR crops; the UNet needs a "
                             f"multiple of {self.pipeline.unet_size_multiple} (use a multiple of "
                             f"{self.pipeline.unet_size_multiple * self.pipeline.upscale_factor}).")
        # windows of the crops' LR side: at training size each attention map is one window (the same as global)
        window = lr_size if args.unet_attention_window is None else args.unet_attention_window or None
        self.use_attention_window(window, f"--unet_attention_window {window} (default: --resolution / 4)")
        lpips = load_lpips_model(args, device) if args.lpips_weight > 0 else None
        self.image_losses = ImageLosses(lpips, edge_weight=args.edge_weight, fft_weight=args.fft_weight,
                                        l1_weight=args.image_l1_weight)
        self.input_noise_level = pipeline_call_defaults()["input_noise_level"]
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        self._bicubic_scores: dict[str, float] | None = None

    def use_attention_window(self, window: int | None, option: str) -> None:
        """UNet window attention of ``window`` LR pixels for validation and the saved pipeline (``None``: global;
        the pipeline records it in its config); a bad size raises a ValueError naming ``option``."""
        if window is None:
            return
        try:
            self.pipeline.enable_unet_window_attention(window)
        except ValueError as error:
            raise ValueError(f"{option}: {error}") from None

    def fidelity_luma(self, decoded: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """``F(D(z), y)``: the pipeline's fidelity step (its default ``input_noise_level``) on the luma of the
        decoded images `(B, 3, 4h, 4w)` (clamped to [-1, 1]) against the LR `(B, 3, h, w)`; `(B, 1, 4h, 4w)`.
        Linear in ``decoded``, so the gradient passes."""
        return self.pipeline.apply_lr_consistency(decoded.float().clamp(-1, 1).mean(dim=1, keepdim=True),
                                                  lr.float().mean(dim=1, keepdim=True), self.input_noise_level)

    @torch.no_grad()
    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``(hr, lr, z_0, s_0, s_lr)`` of a batch: LR made by the degradation unless paired LR is given."""
        hr = batch["hr"]
        lr = batch["lr"] if "lr" in batch else degrade(hr, self.args.degradation, generator)
        _, s_lr = self.pipeline.prepare_condition(lr)
        z0 = self.vqvae.encode(hr).latents.float()
        s0 = self.dwt_encoder.project_latent(z0).float()
        return hr, lr, z0, s0, s_lr

    def training_step(self, module, batch, generator, step):
        hr, lr, z0, s0, s_lr = self.prepare(batch, generator)
        device = s0.device
        timesteps = torch.randint(0, self.num_train_timesteps, (s0.shape[0],), generator=generator, device=device)
        noise = torch.randn(s0.shape, generator=generator, device=device)
        s_t = self.scheduler.add_noise(s0, noise, timesteps, s_lr)
        model_input = torch.cat([self.scheduler.scale_model_input(s_t, timesteps), s_lr], dim=1)
        z0_hat = module(model_input, timesteps).sample.float()

        terms = {}
        if self.image_losses.active:
            n = max(1, round(self.args.image_loss_batch_fraction * z0_hat.shape[0]))
            decoded = self.vqvae.decode(z0_hat[:n], force_not_quantize=True).sample
            if self.args.image_loss_after_fidelity:
                decoded = self.fidelity_luma(decoded, lr[:n]).expand(-1, 3, -1, -1)
                hr = hr[:n].float().mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
            terms = self.image_losses(decoded, hr[:n])
        args = self.args
        weights = {"lpips": ramp(step, args.lpips_weight_start, args.lpips_weight, args.lpips_ramp_steps),
                   "edge": args.edge_weight, "fft": args.fft_weight, "l1": args.image_l1_weight}
        return diffusion_loss(z0_hat, z0, timesteps, self.num_train_timesteps, terms, weights)

    @torch.no_grad()
    def validate(self, step: int, output_dir: str) -> dict[str, float]:
        """Full sampling (``--validation_inference_steps``) on PIL-bicubic LR of the validation crops."""
        self.module.eval()
        scores: dict[str, list[float]] = {}
        bicubic: dict[str, list[float]] = {}
        rows = []
        settings = validation_metric_settings(self.args)
        for index, (_, hr) in enumerate(load_validation_set(self.args)):
            hr_u8 = np.rint(hr * 255).astype(np.uint8)
            lr_u8 = pil_bicubic_lr(hr_u8)
            generator = torch.Generator(device=self.accelerator.device).manual_seed(self.args.seed + index)
            sr = self.pipeline(lr_u8, num_inference_steps=self.args.validation_inference_steps, generator=generator,
                               output_type="np").images[0]
            sr_u8 = np.rint(sr * 255).astype(np.uint8)
            for key, value in image_metrics(sr_u8, hr_u8, settings).items():
                scores.setdefault(key, []).append(value)
            up = pil_bicubic_up(lr_u8)
            if self._bicubic_scores is None:
                for key, value in image_metrics(up, hr_u8, settings).items():
                    bicubic.setdefault(key, []).append(value)
            rows.append([lr_u8, up, sr_u8, hr_u8])
        self.module.train()
        if self._bicubic_scores is None:
            self._bicubic_scores = {f"bicubic_{k}": sum(v) / len(v) for k, v in bicubic.items()}
        save_validation_grid(rows, output_dir, step, ["LR", "bicubic", "SR", "HR"])
        return {**{k: sum(v) / len(v) for k, v in scores.items()}, **self._bicubic_scores}

    @classmethod
    def final_folders(cls) -> list[str]:
        return [*super().final_folders(), "pipeline"]

    def save_final(self, output_dir: str) -> list[str]:
        """The UNet folder and the whole pipeline (Hub layout) in ``OUTPUT_DIR/pipeline``."""
        folders = super().save_final(output_dir)
        # self.pipeline holds the trained UNet itself (self.component), so it saves the weights in place
        folders.append(save_folder_atomic(self.pipeline.save_pretrained, os.path.join(output_dir, "pipeline")))
        return folders
