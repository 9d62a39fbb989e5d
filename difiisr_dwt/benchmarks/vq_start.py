"""The comparison pipeline: DifIISR-DWT whose start state comes from the VQ encoder instead of the DWT.

``VQStartEncoder`` stands in for the ``dwt_encoder`` component: ``encode(x) = A(Enc(x))`` (the
state that training aims ``A`` at), everything else delegated. Built into an unchanged
``DifIISRDWTPipeline`` it gives a pipeline with the same UNet, adapter, scheduler and decoder that
differs only in how ``s_lr`` is computed, which is the saving the DWT encoder claims.
"""

from __future__ import annotations

import torch
from diffusers import VQModel
from torch import nn

from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder
from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline


class VQStartEncoder(nn.Module):
    """``encode(images) = A(Enc(images))``: the VQ-f4 encoder followed by the DWT encoder's adapter.

    Args:
        dwt_encoder (`DWTEncoder`): supplies the adapter ``A`` and the state layout.
        vqvae (`VQModel`): supplies the encoder ``Enc`` (latents before quantisation, as in ResShift).
    """

    def __init__(self, dwt_encoder: DWTEncoder, vqvae: VQModel):
        super().__init__()
        self.dwt_encoder = dwt_encoder
        self.vqvae = vqvae

    @property
    def out_channels(self) -> int:
        return self.dwt_encoder.out_channels

    @property
    def downsample_factor(self) -> int:
        return self.dwt_encoder.downsample_factor

    @property
    def dtype(self) -> torch.dtype:
        return self.dwt_encoder.dtype

    @property
    def device(self) -> torch.device:
        return self.dwt_encoder.device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` in [-1, 1] -> `(B, 7C, H/4, W/4)`."""
        latents = self.vqvae.encode(images.to(self.vqvae.dtype)).latents
        return self.dwt_encoder.project_latent(latents.to(self.dtype))

    def project_latent(self, latents: torch.Tensor) -> torch.Tensor:
        return self.dwt_encoder.project_latent(latents)


def vq_start_pipeline(pipe: DifIISRDWTPipeline, scheduler) -> DifIISRDWTPipeline:
    """A copy of ``pipe`` (same component objects) whose ``s_lr`` comes from ``A(Enc(.))``.

    Args:
        pipe: the DWT pipeline.
        scheduler: a scheduler of its own, so the two pipelines never share timestep state.
    """
    vq_pipe = DifIISRDWTPipeline(
        dwt_encoder=VQStartEncoder(pipe.dwt_encoder, pipe.vqvae), unet=pipe.unet, vqvae=pipe.vqvae,
        scheduler=scheduler, quantize_decode=pipe.config.quantize_decode,
    )
    vq_pipe.set_progress_bar_config(disable=True)
    return vq_pipe
