"""Degradations: PIL-equivalent bicubic, seeded Real-ESRGAN second-order degradation."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt.degradations import (
    KERNEL_TYPES,
    bicubic_downsample,
    degrade,
    gaussian_kernels,
    random_kernels,
    realesrgan_degrade,
    sinc_kernels,
)


def _ir_batch(batch: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth grey images with edges, 3 equal channels, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(batch, 1, size // 8, size // 8, generator=g), size=size,
                                           mode="bilinear", align_corners=False)
    base[..., size // 3 :, size // 2 :] += 0.3
    return (base.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def test_bicubic_matches_pil_float_and_uint8():
    rng = np.random.default_rng(0)
    hr = (rng.random((48, 64)) * 255).astype(np.uint8)
    hr[10:30, 20:50] = 250  # sharp edges exercise the filter's negative lobes
    tensor = torch.from_numpy(hr.astype(np.float32) / 127.5 - 1)[None, None].expand(1, 3, -1, -1)
    pil_float = np.asarray(PIL.Image.fromarray(hr.astype(np.float32), "F").resize((16, 12), PIL.Image.BICUBIC))
    ours = bicubic_downsample(tensor, quantize=False)[0, 0].numpy()
    # away from clamping, the float filters agree to float32 precision
    inside = (pil_float > 1) & (pil_float < 254)
    assert np.abs((ours + 1) * 127.5 - pil_float)[inside].max() < 1e-3
    pil_u8 = np.asarray(PIL.Image.fromarray(hr).resize((16, 12), PIL.Image.BICUBIC)).astype(np.float32)
    ours_u8 = (bicubic_downsample(tensor)[0, 0].numpy() + 1) * 127.5
    assert np.abs(ours_u8 - np.round(ours_u8)).max() < 1e-3  # quantised to 8 bits
    assert np.abs(ours_u8 - pil_u8).max() <= 1.0 + 1e-3  # PIL's fixed-point rounding: one level at most


def test_bicubic_rejects_sizes_not_divisible_by_scale():
    with pytest.raises(ValueError, match="not divisible"):
        bicubic_downsample(torch.zeros(1, 3, 30, 32))


@pytest.mark.parametrize("kind", range(len(KERNEL_TYPES)))
def test_blur_kernels_are_normalised_and_windowed(kind):
    g = torch.Generator().manual_seed(kind)
    sizes = torch.tensor([7, 13, 21])
    kernels = gaussian_kernels(torch.full((3,), kind), sizes, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), g, "cpu")
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert kernels[0, :7].abs().sum() == 0 and kernels[0, :, 14:].abs().sum() == 0  # 7x7 lives in the centre
    if KERNEL_TYPES[kind].endswith("iso") and not KERNEL_TYPES[kind].endswith("aniso"):
        assert torch.allclose(kernels, kernels.transpose(1, 2), atol=1e-6)  # isotropic -> symmetric


def test_sinc_kernel_is_a_low_pass():
    kernel = sinc_kernels(torch.tensor([math.pi / 3]), torch.tensor([21]), "cpu")[0]
    assert torch.allclose(kernel.sum(), torch.tensor(1.0), atol=1e-5)
    assert kernel.min() < 0  # ringing lobes, unlike a Gaussian
    spectrum = torch.fft.fft2(kernel).abs()
    assert spectrum[0, 0] > 5 * spectrum[10, 10]  # passes DC, attenuates the highest frequencies


def test_realesrgan_is_seeded_shaped_and_grey():
    hr = _ir_batch()
    a = degrade(hr, "realesrgan", torch.Generator().manual_seed(1))
    b = realesrgan_degrade(hr, generator=torch.Generator().manual_seed(1))
    c = realesrgan_degrade(hr, generator=torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a[:, 0], a[:, 2])  # grey in, grey out
    levels = (a + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # 8-bit like a stored LR image
    # it degrades: further from the clean bicubic LR than 8-bit rounding alone
    assert (a - bicubic_downsample(hr)).abs().mean() > 4 / 127.5


def test_random_kernels_mix_sinc_and_gaussians():
    g = torch.Generator().manual_seed(0)
    probs = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    kernels = random_kernels(64, probs, 0.5, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), g, "cpu")
    has_negative = (kernels.flatten(1).min(dim=1).values < -1e-6).float().mean()
    assert 0.2 < has_negative < 0.8  # about half are sinc kernels (the only ones with negative taps)


def test_unknown_degradation_is_named():
    with pytest.raises(ValueError, match="Unknown degradation 'gauss'"):
        degrade(torch.zeros(1, 3, 16, 16), "gauss")
