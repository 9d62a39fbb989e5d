"""Degradations: PIL-equivalent bicubic, seeded Real-ESRGAN second-order degradation, thermal camera."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt.degradations import (
    AIRY_GAUSSIAN_SIGMA,
    KERNEL_TYPES,
    ThermalConfig,
    airy_kernels,
    bicubic_downsample,
    degrade,
    gaussian_kernels,
    isotropic_gaussian_kernels,
    random_kernels,
    realesrgan_degrade,
    sensor_noise,
    sinc_kernels,
    stripe_noise,
    thermal_degrade,
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


# ------------------------------------------------------------------------------------------------ thermal camera

#: every part of the thermal degradation off: what is left is PIL bicubic and 8-bit rounding
_NOTHING = dict(clean_prob=0.0, blur_prob=0.0, noise_prob=0.0, column_fpn_prob=0.0, row_fpn_prob=0.0, jpeg_prob=0.0)


def _flat(level: float, batch: int = 1, height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.full((batch, 3, height, width), level * 2 - 1)


def test_thermal_is_seeded_shaped_grey_and_8bit():
    hr = _ir_batch(batch=8)
    a = degrade(hr, "thermal", torch.Generator().manual_seed(1))
    b = thermal_degrade(hr, generator=torch.Generator().manual_seed(1))
    c = thermal_degrade(hr, generator=torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 16, 16) and a.dtype == hr.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a[:, 0], a[:, 2])  # grey in, grey out
    levels = (a + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    with pytest.raises(ValueError, match="not divisible"):
        thermal_degrade(torch.zeros(1, 3, 30, 32))


def test_thermal_draws_per_sample_and_keeps_some_samples_clean():
    hr = _ir_batch(batch=64)
    lr = thermal_degrade(hr, generator=torch.Generator().manual_seed(0))
    clean = (lr == bicubic_downsample(hr)).flatten(1).all(dim=1).float().mean()
    # clean_prob 0.25 plus the samples every part skipped (~5%): about 29% of 64
    assert 0.1 < clean < 0.5
    nothing = thermal_degrade(hr, ThermalConfig(**_NOTHING), torch.Generator().manual_seed(0))
    assert torch.equal(nothing, bicubic_downsample(hr))
    everything = thermal_degrade(hr, ThermalConfig(clean_prob=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(everything, bicubic_downsample(hr))


def test_column_offsets_are_constant_down_each_column_with_the_requested_sigma():
    flat = torch.full((2, 3, 32, 4096), 0.5)
    out = stripe_noise(flat, torch.tensor([3.0, 0.0]), torch.tensor([0.0, 0.0]), torch.Generator().manual_seed(0))
    offsets = (out[0, 0] - 0.5) * 255
    assert offsets.std(dim=0).max() < 1e-4  # one offset per column, the same in every row
    assert abs(float(offsets[0].std()) - 3.0) < 0.15  # 4096 columns: the sample sigma is within ~5%
    assert abs(float(offsets[0].mean())) < 0.2
    assert torch.equal(out[1], flat[1])  # sigma 0: untouched
    assert torch.equal(out[0, 0], out[0, 2])  # the same on every channel


def test_row_offsets_are_constant_along_each_row_with_the_requested_sigma():
    flat = torch.full((1, 3, 4096, 16), 0.5)
    out = stripe_noise(flat, torch.tensor([0.0]), torch.tensor([1.5]), torch.Generator().manual_seed(0))
    offsets = (out[0, 0] - 0.5) * 255
    assert offsets.std(dim=1).max() < 1e-4
    assert abs(float(offsets[:, 0].std()) - 1.5) < 0.08


def test_thermal_column_stripes_end_to_end():
    """Only the column pattern on: a flat HR gives an LR whose columns are constant and whose offsets
    have about the drawn sigma (in [2.9, 3] levels here), rounded to whole levels."""
    cfg = ThermalConfig(**{**_NOTHING, "column_fpn_prob": 1.0, "column_fpn": (2.9, 3.0)})
    lr = thermal_degrade(_flat(0.5, height=64, width=4096), cfg, torch.Generator().manual_seed(3))
    levels = (lr[0, 0] + 1) * 127.5
    assert levels.std(dim=0).max() == 0
    assert 2.7 < float(levels[0].std()) < 3.3


@pytest.mark.parametrize("level", [0.2, 0.8])
def test_sensor_noise_variance_is_poisson_gaussian(level):
    """Var = read^2 + shot^2 * x (in squared grey levels, x the signal in [0, 1]): Foi et al. 2008."""
    flat = torch.full((1, 3, 512, 512), level)
    out = sensor_noise(flat, torch.tensor([2.0]), torch.tensor([3.0]), torch.Generator().manual_seed(0))
    variance = float(((out[0, 0] - level) * 255).var())
    expected = 2.0**2 + 3.0**2 * level
    assert abs(variance - expected) / expected < 0.03
    assert torch.equal(out[0, 0], out[0, 1])  # grey noise
    clean = sensor_noise(flat, torch.tensor([0.0]), torch.tensor([0.0]), torch.Generator().manual_seed(0))
    assert torch.equal(clean, flat)


def test_thermal_noise_end_to_end_has_the_drawn_sigma():
    cfg = ThermalConfig(**{**_NOTHING, "noise_prob": 1.0, "read_noise": (2.0, 2.0), "shot_noise_prob": 0.0})
    lr = thermal_degrade(_flat(0.5, height=1024, width=1024), cfg, torch.Generator().manual_seed(0))
    sigma = float(((lr[0, 0] + 1) * 127.5).std())
    assert abs(sigma - math.sqrt(2.0**2 + 1 / 12)) < 0.1  # Gaussian sigma 2 plus the 8-bit rounding


def test_airy_kernel_has_its_first_dark_ring_at_the_radius():
    radius = 4.0
    kernel = airy_kernels(torch.tensor([radius]), "cpu")[0]
    assert torch.allclose(kernel.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(kernel, kernel.T, atol=1e-7) and torch.allclose(kernel, kernel.flip(0), atol=1e-7)
    centre = kernel[10, 10]
    assert kernel[10, 10 + int(radius)] < 1e-3 * centre  # the dark ring
    assert kernel[10, 10 + int(radius) + 1] > 5 * kernel[10, 10 + int(radius)]  # and the first bright ring beyond
    assert kernel.min() >= 0  # an intensity PSF


def test_gaussian_psf_has_the_requested_sigma():
    sigma = 2.0
    kernel = isotropic_gaussian_kernels(torch.tensor([sigma]), "cpu")[0]
    ax = torch.arange(21.0) - 10
    measured = math.sqrt(float((kernel.sum(dim=0) * ax**2).sum()))
    assert abs(measured - sigma) < 0.02
    assert 0.3 < AIRY_GAUSSIAN_SIGMA < 0.4


def test_thermal_blur_softens_edges():
    hr = torch.full((1, 3, 64, 64), -0.8)
    hr[..., 32:] = 0.8
    sharp = bicubic_downsample(hr)

    def step(x: torch.Tensor) -> float:
        return float((x[0, 0, :, 8] - x[0, 0, :, 7]).abs().max())

    for airy in (0.0, 1.0):
        cfg = ThermalConfig(**{**_NOTHING, "blur_prob": 1.0, "blur_radius": (1.4, 1.4), "airy_prob": airy})
        blurred = thermal_degrade(hr, cfg, torch.Generator().manual_seed(0))
        assert step(blurred) < 0.8 * step(sharp)


def test_thermal_jpeg_keeps_grey_and_changes_little():
    hr = _ir_batch(batch=4)
    cfg = ThermalConfig(**{**_NOTHING, "jpeg_prob": 1.0})
    lr = thermal_degrade(hr, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(lr[:, 0], lr[:, 1])
    difference = ((lr - bicubic_downsample(hr)) * 127.5).abs()
    assert 0 < difference.mean() < 6
