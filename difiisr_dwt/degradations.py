"""HR -> LR degradations, batched in torch on the training device and seeded.

``bicubic`` is the evaluation protocol (PIL bicubic /4, M3FD / DifIISR); ``realesrgan`` is the
second-order blind degradation of Real-ESRGAN (Wang et al., 2021), see :mod:`difiisr_dwt.realesrgan`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEGRADATIONS = ("bicubic", "realesrgan")


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round `[-1, 1]` pixels to the 256 levels of an 8-bit file (what an LR PNG holds)."""
    return torch.round((images.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def bicubic_downsample(images: torch.Tensor, scale: int = 4, quantize: bool = True) -> torch.Tensor:
    """PIL-equivalent bicubic downsampling.

    ``F.interpolate(..., mode="bicubic", antialias=True)`` uses PIL's filter (a = -0.5, support
    widened by the scale): it equals ``PIL.Image.resize(..., BICUBIC)`` on float images to ~1e-5;
    on uint8 images PIL's fixed-point arithmetic differs by at most one level.

    Args:
        images (`torch.Tensor` of shape `(B, C, H, W)`): pixels in [-1, 1], H and W divisible by ``scale``.
        scale (`int`): downsampling factor.
        quantize (`bool`): round to 8 bits like an LR image file.

    Returns:
        `torch.Tensor` of shape `(B, C, H / scale, W / scale)`.
    """
    height, width = images.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"Image size {width}x{height} is not divisible by the scale {scale}.")
    lr = F.interpolate(images.float(), size=(height // scale, width // scale), mode="bicubic", antialias=True,
                       align_corners=False).clamp(-1, 1)
    return (quantize_8bit(lr) if quantize else lr).to(images.dtype)


def degrade(images: torch.Tensor, kind: str, generator: torch.Generator | None = None, scale: int = 4,
            **kwargs) -> torch.Tensor:
    """LR images `(B, C, H/scale, W/scale)` in [-1, 1] from HR `(B, C, H, W)` in [-1, 1].

    Args:
        kind: ``"bicubic"`` or ``"realesrgan"``.
        generator: seeds the random degradation (``realesrgan``), on the images' device.
        kwargs: options of :class:`difiisr_dwt.realesrgan.RealESRGANDegradation`.
    """
    if kind == "bicubic":
        return bicubic_downsample(images, scale)
    if kind == "realesrgan":
        from difiisr_dwt.realesrgan import RealESRGANDegradation

        return RealESRGANDegradation(scale=scale, **kwargs)(images, generator)
    raise ValueError(f"Unknown degradation {kind!r}; choose one of {DEGRADATIONS}.")
