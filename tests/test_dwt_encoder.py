"""DWTEncoder: exact wavelet bands, shapes, gradients, dtypes, adapter, save/load."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import pywt
import torch

from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder


def pywt_bands(x: torch.Tensor) -> list[np.ndarray]:
    coeffs = pywt.wavedec2(x.double().numpy(), "haar", level=2, axes=(-2, -1))
    return [coeffs[0], *coeffs[1], *coeffs[2]]


def test_constructor_names():
    params = inspect.signature(DWTEncoder.__init__).parameters
    for name in ("in_channels", "wavelet", "levels", "latent_channels"):
        assert name in params


@pytest.mark.parametrize("use_ptwt", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_bands_equal_pywt(use_ptwt, channels):
    x = torch.randn(2, channels, 24, 40)
    encoder = DWTEncoder(in_channels=channels, use_ptwt=use_ptwt)
    for ours, reference in zip(encoder.wavelet_bands(x), pywt_bands(x), strict=True):
        assert ours.shape == reference.shape
        assert np.abs(ours.numpy() - reference).max() < 1e-5


@pytest.mark.parametrize("channels", [1, 3])
def test_encode_layout_matches_bands(channels):
    x = torch.randn(2, channels, 32, 16)
    encoder = DWTEncoder(in_channels=channels, detail_downsample="avg")
    z = encoder.encode(x)
    assert z.shape == (2, 7 * channels, 8, 4) and encoder.out_channels == 7 * channels
    bands = [torch.from_numpy(b).float() for b in pywt_bands(x)]
    expected = torch.cat(bands[:4] + [torch.nn.functional.avg_pool2d(b, 2) for b in bands[4:]], dim=1)
    assert torch.allclose(z, expected, atol=1e-5)


def test_learnable_downsampler_starts_as_average_and_has_90_parameters():
    encoder = DWTEncoder()
    assert sum(p.numel() for p in encoder.detail_downsamplers.parameters()) == 90
    x = torch.randn(1, 3, 64, 48)
    assert torch.allclose(encoder.encode(x), DWTEncoder(detail_downsample="avg").encode(x), atol=1e-6)
    assert not list(DWTEncoder(detail_downsample="avg").detail_downsamplers.parameters())


def test_gradients_flow_to_input_downsampler_and_adapter():
    encoder = DWTEncoder()
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    encoder.encode(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert encoder.detail_downsamplers[0].weight.grad.abs().sum() > 0
    latents = torch.randn(1, 3, 4, 4, requires_grad=True)
    encoder.project_latent(latents).sum().backward()
    assert latents.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.adapter.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    encoder = DWTEncoder()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    z = encoder.encode(x.to(dtype))
    assert z.dtype == dtype and torch.isfinite(z).all()
    tolerance = 1e-2 if dtype == torch.float16 else 5e-2
    assert torch.allclose(z.float(), encoder.encode(x.to(dtype).float()), atol=tolerance)
    half = DWTEncoder().to(dtype)
    assert half.project_latent(torch.randn(1, 3, 4, 4, dtype=dtype)).dtype == dtype


def test_bad_inputs_raise():
    encoder = DWTEncoder()
    with pytest.raises(ValueError, match="divisible by 4"):
        encoder.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encoder.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="project_latent"):
        encoder.project_latent(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="haar"):
        DWTEncoder(wavelet="db2")
    with pytest.raises(ValueError, match="detail_downsample"):
        DWTEncoder(detail_downsample="max")


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = DWTEncoder(in_channels=1, adapter_channels=8)
    with torch.no_grad():
        encoder.detail_downsamplers[0].weight.add_(0.01)
    encoder.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = DWTEncoder.from_pretrained(tmp_path)
    assert loaded.config.in_channels == 1 and loaded.config.adapter_channels == 8
    x, latents = torch.randn(1, 1, 16, 16), torch.randn(1, 3, 4, 4)
    assert torch.equal(loaded.encode(x), encoder.encode(x))
    assert torch.equal(loaded.project_latent(latents), encoder.project_latent(latents))


def test_three_levels_generalise():
    encoder = DWTEncoder(levels=3)
    z = encoder.encode(torch.randn(1, 3, 64, 64))
    assert z.shape == (1, 30, 8, 8) and encoder.downsample_factor == 8
