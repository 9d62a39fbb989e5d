# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""The fidelity step of the DifIISR-DWT pipeline: make the decoded output agree with its input.

A sibling file of ``pipeline_difiisr_dwt.py`` (also in the Hub folder); it imports torch and the
image processor's resize only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .image_processor import bicubic_resize


def back_project(sr: torch.Tensor, lr: torch.Tensor, iterations: int) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg, 1991): ``SR += up(LR - down(SR))``, ``iterations`` times.

    ``down`` is the degradation the model assumes (PIL-style bicubic, :func:`bicubic_resize`); each
    round removes most of what is left of ``down(SR) - LR``, so the output keeps the model's detail
    above the LR's Nyquist frequency and takes its levels from the input.

    Args:
        sr (`torch.Tensor` of shape `(B, C, sH, sW)`): the decoded output, [-1, 1].
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1].
        iterations (`int`): rounds; 0 returns ``sr``.

    Returns:
        A new `torch.Tensor` like ``sr`` (float32, not clamped).
    """
    out = sr.float().clone()  # the caller's tensor is kept
    for _ in range(iterations):
        out += bicubic_resize(lr - bicubic_resize(out, tuple(lr.shape[-2:])), tuple(out.shape[-2:]))
    return out


def shrink_flat_detail(sr: torch.Tensor, lr: torch.Tensor, noise_level: float) -> torch.Tensor:
    """Keep the model's departure from bicubic only where the input has structure.

    A Wiener-style gain per output pixel, ``g = a^2 / (a^2 + noise_level^2)``, with ``a`` the local
    standard deviation of the input's luma (3x3 LR window, bicubic-upscaled): on a flat patch
    (``a`` at the sensor's noise level or below) the output stays the smooth bicubic surface instead
    of a texture the model invents, on edges and texture (``a >> noise_level``) the model's detail
    passes unchanged: ``SR' = up(LR) + g (SR - up(LR))``.

    Args:
        sr (`torch.Tensor` of shape `(B, C, sH, sW)`): the decoded output, [-1, 1].
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1].
        noise_level (`float`): in [-1, 1] pixel units (8-bit grey levels / 127.5); 0 returns ``sr``.
    """
    if noise_level <= 0:
        return sr
    size = tuple(sr.shape[-2:])
    luma = lr.float().mean(dim=1, keepdim=True)
    mean = F.avg_pool2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    square = F.avg_pool2d(F.pad(luma.square(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    activity = bicubic_resize((square - mean.square()).clamp_min(0), size).clamp_min(0)
    gain = activity / (activity + noise_level**2)
    upsampled = bicubic_resize(lr, size)
    return upsampled.add_(gain * (sr.float() - upsampled))
