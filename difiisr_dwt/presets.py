"""Model sizes: ``test`` (unit tests, milliseconds), ``tiny`` (CPU training, the embedded default
model) and ``full`` (ResShift-size UNet with the LDM VQ-f4 autoencoder)."""

from __future__ import annotations

from diffusers import UNet2DModel, VQModel

from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder
from difiisr_dwt.schedulers.scheduling_resshift import ResShiftScheduler

PRESETS = ("test", "tiny", "full")

# VQModel kwargs. "full" is the CompVis LDM VQ-f4 (= ResShift's autoencoder_vq_f4.pth).
_VQ = {
    "test": dict(block_out_channels=(16, 16, 32), layers_per_block=1, norm_num_groups=8, num_vq_embeddings=64),
    "tiny": dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16, num_vq_embeddings=1024),
    "full": dict(block_out_channels=(128, 256, 512), layers_per_block=2, norm_num_groups=32, num_vq_embeddings=8192),
}
_UNET = {
    "test": dict(block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")),
    "tiny": dict(block_out_channels=(64, 128, 128), layers_per_block=1, norm_num_groups=16,
                 down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    "full": dict(block_out_channels=(160, 320, 320, 640), layers_per_block=2, norm_num_groups=32,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
}
_ADAPTER = {"test": dict(adapter_channels=16, adapter_layers=2), "tiny": dict(adapter_channels=64, adapter_layers=3),
            "full": dict(adapter_channels=128, adapter_layers=4)}


def _check(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {PRESETS}.")


def build_vqvae(preset: str) -> VQModel:
    """A freshly initialised VQ-f4 ``VQModel`` (3 image channels, 3 latent channels)."""
    _check(preset)
    cfg = _VQ[preset]
    blocks = len(cfg["block_out_channels"])
    return VQModel(
        in_channels=3, out_channels=3, latent_channels=3, vq_embed_dim=3,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks, **cfg,
    )


def build_dwt_encoder(preset: str, **kwargs) -> DWTEncoder:
    _check(preset)
    return DWTEncoder(in_channels=3, latent_channels=3, **{**_ADAPTER[preset], **kwargs})


def build_unet(preset: str, dwt_encoder: DWTEncoder, latent_channels: int = 3) -> UNet2DModel:
    """The denoiser: ``2 * dwt_encoder.out_channels`` in (state + condition), the VQ latent out."""
    _check(preset)
    return UNet2DModel(in_channels=2 * dwt_encoder.out_channels, out_channels=latent_channels, **_UNET[preset])


def build_scheduler() -> ResShiftScheduler:
    return ResShiftScheduler()


def build_pipeline(preset: str = "test", seed: int = 0, quantize_decode: bool = True):
    """A pipeline of freshly initialised components (seeded), for tests, benchmarks and training starts."""
    import torch

    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline

    torch.manual_seed(seed)
    dwt_encoder = build_dwt_encoder(preset)
    pipe = DifIISRDWTPipeline(
        dwt_encoder=dwt_encoder, unet=build_unet(preset, dwt_encoder), vqvae=build_vqvae(preset),
        scheduler=build_scheduler(), quantize_decode=quantize_decode,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
