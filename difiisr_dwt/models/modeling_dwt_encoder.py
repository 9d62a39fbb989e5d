# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""Parameter-free wavelet encoder ``E`` and latent adapter ``A`` of difiisr-dwt.

``E`` replaces ResShift's 22M-parameter VQ encoder by a 2-level Haar DWT (ptwt): an image of
``C`` channels at ``H x W`` becomes ``7C`` channels at ``H/4 x W/4`` (LL2, LH2, HL2, HH2 and the
level-1 details downsampled once more). ``A`` (`project_latent`) maps a VQ-f4 latent into that
space so that the diffusion state can live there while the UNet predicts the VQ latent.

This file is self-contained (torch, diffusers, ptwt): it is also the Hub code file of the
``dwt_encoder`` component.
"""

from __future__ import annotations

import ptwt
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

_DOWNSAMPLE_MODES = ("conv", "avg")


def haar_level(x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One orthonormal 2-D Haar level, equal to ``pywt.dwt2(x, "haar")`` for even sizes.

    A memory-bound reshape instead of ptwt's padded convolutions (same numbers, a fraction of the time).

    Args:
        x (`torch.Tensor` of shape `(..., H, W)`, H and W even).

    Returns:
        ``(LL, (LH, HL, HH))``, each of shape `(..., H/2, W/2)`, in pywt's ``(cA, (cH, cV, cD))`` order.
    """
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    top, bottom = a + b, c + d
    left_minus_right_top, left_minus_right_bottom = a - b, c - d
    ll = (top + bottom) * 0.5
    lh = (top - bottom) * 0.5  # pywt cH: rows low-pass differences across rows
    hl = (left_minus_right_top + left_minus_right_bottom) * 0.5  # pywt cV
    hh = (left_minus_right_top - left_minus_right_bottom) * 0.5  # pywt cD
    return ll, (lh, hl, hh)


class DWTEncoder(ModelMixin, ConfigMixin):
    """Wavelet encoder ``E`` with its latent adapter ``A``.

    Args:
        in_channels (`int`): Image channels ``C`` (1 or 3).
        wavelet (`str`): Only ``"haar"``: longer filters change the band sizes, which then no longer
            align with the VQ-f4 latent grid.
        levels (`int`): DWT levels; the output is at ``1 / 2**levels`` of the input size.
        latent_channels (`int`): Channels of the VQ latent that `project_latent` takes.
        detail_downsample (`str`): ``"conv"`` (learnable depthwise conv, initialised to a box
            average) or ``"avg"`` (parameter-free box average) for the finer levels' details.
        adapter_channels (`int`): Width of the adapter ``A``.
        adapter_layers (`int`): Number of 3x3 conv layers of ``A`` (>= 2).
        use_ptwt (`bool`): Compute the DWT with ``ptwt.wavedec2`` instead of the equivalent Haar
            reshape (same numbers; kept for cross-checking).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        wavelet: str = "haar",
        levels: int = 2,
        latent_channels: int = 3,
        detail_downsample: str = "conv",
        adapter_channels: int = 64,
        adapter_layers: int = 3,
        use_ptwt: bool = False,
    ):
        super().__init__()
        if wavelet != "haar":
            raise ValueError(f"wavelet={wavelet!r}: only 'haar' keeps the bands on the VQ-f4 latent grid.")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}.")
        if detail_downsample not in _DOWNSAMPLE_MODES:
            raise ValueError(f"detail_downsample must be one of {_DOWNSAMPLE_MODES}, got {detail_downsample!r}.")
        if adapter_layers < 2:
            raise ValueError(f"adapter_layers must be >= 2, got {adapter_layers}.")

        # The details k levels below the coarsest are 2**k times the output size.
        self.detail_downsamplers = nn.ModuleList()
        if detail_downsample == "conv":
            for k in range(1, levels):
                factor = 2**k
                conv = nn.Conv2d(
                    3 * in_channels, 3 * in_channels, 2 * factor - 1, stride=factor, padding=factor - 1,
                    groups=3 * in_channels,
                )
                with torch.no_grad():  # box average over the factor x factor cell, from the centre tap on
                    conv.weight.zero_()
                    conv.weight[:, :, factor - 1 :, factor - 1 :] = 1.0 / factor**2
                    conv.bias.zero_()
                self.detail_downsamplers.append(conv)

        out_channels = self.out_channels
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, adapter_channels, 3, padding=1)]
        for _ in range(adapter_layers - 2):
            layers += [nn.SiLU(), nn.Conv2d(adapter_channels, adapter_channels, 3, padding=1)]
        layers += [nn.SiLU(), nn.Conv2d(adapter_channels, out_channels, 3, padding=1)]
        self.adapter = nn.Sequential(*layers)

    @property
    def out_channels(self) -> int:
        """Channels of the wavelet state: ``C`` (LL) + ``3C`` per level."""
        return self.config.in_channels * (1 + 3 * self.config.levels)

    @property
    def downsample_factor(self) -> int:
        return 2**self.config.levels

    def wavelet_bands(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The raw DWT: ``[LL_L, LH_L, HL_L, HH_L, ..., LH_1, HL_1, HH_1]`` (pywt order, coarsest first).

        Args:
            images (`torch.Tensor` of shape `(B, C, H, W)`), H and W divisible by ``2**levels``.
        """
        if self.config.use_ptwt:
            coeffs = ptwt.wavedec2(images, "haar", level=self.config.levels, mode="reflect")
            bands = [coeffs[0]]
            for details in coeffs[1:]:
                bands.extend(details)
            return bands
        detail_levels = []
        ll = images
        for _ in range(self.config.levels):
            ll, details = haar_level(ll)
            detail_levels.append(details)
        bands = [ll]
        for details in reversed(detail_levels):
            bands.extend(details)
        return bands

    @apply_forward_hook  # model CPU offload moves the module on this call, as for VQModel.decode
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``E(images)``: the wavelet state.

        Args:
            images (`torch.Tensor` of shape `(B, C, H, W)`): pixels in [-1, 1]; H, W divisible by 4
                (``2**levels``). Half-precision inputs are transformed in float32 and cast back.

        Returns:
            `torch.Tensor` of shape `(B, 7C, H/4, W/4)` (for 2 levels): LL2, LH2, HL2, HH2 and the
            downsampled LH1, HL1, HH1, each ``C`` channels, in that order.
        """
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"encode expects (B, {self.config.in_channels}, H, W) images, got shape {tuple(images.shape)}."
            )
        factor = self.downsample_factor
        if images.shape[-2] % factor or images.shape[-1] % factor:
            raise ValueError(f"Image height and width must be divisible by {factor}, got {tuple(images.shape[-2:])}.")
        dtype = images.dtype
        with torch.autocast(device_type=images.device.type, enabled=False):
            # Haar sums in fp16 lose the low bits of LL; the transform costs nothing next to the UNet.
            bands = self.wavelet_bands(images.float())
            levels = self.config.levels
            out = bands[:4]
            for k in range(1, levels):  # k levels finer than the coarsest
                details = torch.cat(bands[1 + 3 * k : 4 + 3 * k], dim=1)
                if self.detail_downsamplers:
                    conv = self.detail_downsamplers[k - 1]
                    details = F.conv2d(
                        details, conv.weight.float(), conv.bias.float(), conv.stride, conv.padding, groups=conv.groups
                    )
                else:
                    details = F.avg_pool2d(details, 2**k)
                out.append(details)
            return torch.cat(out, dim=1).to(dtype)

    @apply_forward_hook
    def project_latent(self, latents: torch.Tensor) -> torch.Tensor:
        """The adapter ``A``: VQ latent `(B, latent_channels, h, w)` -> wavelet state `(B, 7C, h, w)`."""
        if latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"project_latent expects (B, {self.config.latent_channels}, h, w), got {tuple(latents.shape)}."
            )
        return self.adapter(latents.to(self.adapter[0].weight.dtype)).to(latents.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)
