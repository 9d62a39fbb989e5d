"""Stage 4: fine-tune the VQ decoder on what the sampler gives it, judged after the fidelity step.

The autoencoder stage teaches the decoder ``D(Enc(x)) -> x``: exact latents of the HR. At inference the
decoder gets the UNet's prediction ``z0_hat`` instead, which misses part of the HR's detail and carries
the sampler's errors, and the user gets ``F(D(z0_hat), y)``, the pipeline's fidelity step ``F`` (flat-detail
shrinkage, then iterative back-projection onto the input ``y``; both linear in the decoded image). This
stage trains ``D`` for that: for an HR crop ``x`` and its LR ``y`` (``--degradation``),

- ``z0_hat`` = the frozen pipeline's sampler on ``y`` (its default steps and noise, seeded per step);
- ``sr = F(D(z0_hat), y)``, with the pipeline's own :meth:`~DifIISRDWTPipeline.apply_lr_consistency`
  and its default ``input_noise_level``: the loss sees exactly the output a user gets;
- loss: ``L1(luma(sr), luma(x)) + w_lpips LPIPS(sr, x) + w_raw L1(D(z0_hat), x)``; the raw term
  (``--raw_decoder_l1_weight``) keeps the decoder's own levels right for ``lr_consistency=False``.

Only the decoder (``post_quant_conv`` and ``decoder``) is trained: the encoder, codebook, adapter and UNet
stay as they are, so the latent space the UNet was trained in does not move. The idea is the decoder
fine-tuning on generated latents of consistency-aware SR decoders (e.g. the "decoder fine-tuning" of
Stable Diffusion x4 / SD-VAE variants) with the data-consistency step of DDNM / ResShift's fidelity
inside the loss.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel, VQModel
from torch import nn

from difiisr_dwt.degradations import degrade
from difiisr_dwt.loading import pipeline_call_defaults
from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline
from difiisr_dwt.presets import build_scheduler
from difiisr_dwt.training.diffusion import DiffusionStage
from difiisr_dwt.training.stage import (
    freeze,
    load_component,
    load_dwt_encoder,
    load_lpips_model,
    load_vqvae,
)


class DecoderTrainer(nn.Module):
    """What DDP wraps: the VQ decoder from (unquantised) latents to pixels."""

    def __init__(self, vqvae: VQModel):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """`(B, c, h, w)` latents -> `(B, 3, 4h, 4w)` pixels in about [-1, 1]."""
        return self.vqvae.decode(latents, force_not_quantize=True).sample


class DecoderStage(DiffusionStage):
    """Fine-tunes ``vqvae``'s decoder; validation and the saved ``pipeline/`` folder are the diffusion
    stage's (the whole pipeline with the new decoder)."""

    name = "decoder"
    component_name = "vqvae"

    def __init__(self, args: argparse.Namespace, accelerator):  # noqa: D107 - the diffusion stage's set-up, swapped
        self.args, self.accelerator = args, accelerator
        device = accelerator.device
        vqvae = load_vqvae(args)
        self.dwt_encoder = load_dwt_encoder(args).to(device)
        unet = load_component(UNet2DModel, args.unet_model_name_or_path, None, "--unet_model_name_or_path", args)
        freeze(unet, self.dwt_encoder, vqvae.encoder, vqvae.quant_conv, vqvae.quantize)
        vqvae.decoder.train()
        self.vqvae = self.component = vqvae.to(device)
        self.unet = unet.to(device)
        self.module = DecoderTrainer(self.vqvae)
        self.scheduler = build_scheduler()
        # unquantised decode, as the pipelines this project ships (quantize_decode=False)
        self.pipeline = DifIISRDWTPipeline(self.dwt_encoder, unet, self.vqvae, self.scheduler, quantize_decode=False)
        self.pipeline.set_progress_bar_config(disable=True)
        # the UNet's training crops are not known here: global attention unless given
        self.use_attention_window(args.unet_attention_window or None,
                                  f"--unet_attention_window {args.unet_attention_window}")
        defaults = pipeline_call_defaults()
        self.sampling = {key: defaults[key] for key in ("num_inference_steps", "noise_scale", "prior_noise_scale")}
        self.input_noise_level = defaults["input_noise_level"]
        self.lpips = load_lpips_model(args, device) if args.lpips_weight > 0 else None
        self._bicubic_scores: dict[str, float] | None = None

    def trainable_parameters(self):
        return [p for p in self.module.parameters() if p.requires_grad]

    @torch.no_grad()
    def sample_latents(self, lr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``z0_hat`` of a batch of LR `(B, 3, h, w)` in [-1, 1]: the pipeline's sampling loop with its defaults."""
        pipe = self.pipeline
        pipe._noise_scale, pipe._prior_noise_scale = self.sampling["noise_scale"], self.sampling["prior_noise_scale"]
        pipe.scheduler.set_timesteps(self.sampling["num_inference_steps"], device=lr.device)
        _, lr_condition = pipe.prepare_condition(lr)
        latents = pipe.denoise(lr_condition, pipe.scheduler.timesteps, generator, None, [])
        return latents[..., : lr.shape[-2], : lr.shape[-1]]

    def training_step(self, module, batch, generator, step):
        hr = batch["hr"]
        lr = batch["lr"] if "lr" in batch else degrade(hr, self.args.degradation, generator)
        z0_hat = self.sample_latents(lr, generator)
        raw = module(z0_hat).float()
        hr_luma = hr.float().mean(dim=1, keepdim=True)
        sr = self.fidelity_luma(raw, lr)
        losses = {"l1": F.l1_loss(sr, hr_luma)}
        if self.args.raw_decoder_l1_weight > 0:
            losses["raw_l1"] = self.args.raw_decoder_l1_weight * F.l1_loss(raw, hr.float())
        if self.lpips is not None:
            losses["lpips"] = self.args.lpips_weight * self.lpips(sr.clamp(-1, 1).expand(-1, 3, -1, -1),
                                                                  hr.float()).mean()
        losses["loss"] = sum(losses.values())
        return losses
