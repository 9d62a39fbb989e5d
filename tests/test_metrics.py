"""Metrics against independent references and the known LPIPS answers of shared/lpips/README.md."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

from difiisr_dwt import metrics
from difiisr_dwt.metrics import LPIPSWeightsError, load_lpips, lpips_distance, psnr_y, ssim_y


@pytest.fixture
def fresh_lpips(monkeypatch, tmp_path):
    """No cached LPIPS models, an empty torchvision cache and no weights environment variable."""
    monkeypatch.setattr(metrics, "_LPIPS_CACHE", {})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(metrics.LPIPS_WEIGHTS_ENV, raising=False)
    return tmp_path


def _flir_pair(shared_dir, crop=None):
    hr = PIL.Image.open(shared_dir / "data/ir/roadscene/FLIR_08954.png")
    hr.load()
    if crop:
        hr = hr.crop((0, 0, *crop))
    w, h = hr.size
    sr = hr.resize((w // 4, h // 4), PIL.Image.BICUBIC).resize((w, h), PIL.Image.BICUBIC)
    return np.asarray(sr), np.asarray(hr)


# ---------------------------------------------------------------------------------- an independent reference
def _ref_y(image: np.ndarray) -> np.ndarray:
    """BT.601 Y by the textbook formula, channel by channel, in float64 on [0, 255]."""
    image = image.astype(np.float64)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _ref_psnr(a, b, border):
    ya, yb = _ref_y(a), _ref_y(b)
    if border:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    return 20 * np.log10(255.0 / np.sqrt(((ya - yb) ** 2).mean()))


def _ref_ssim(a, b, border):
    """Wang et al. SSIM with a full (non-separable) 11x11 window evaluated at every valid position."""
    x, y = _ref_y(a), _ref_y(b)
    if border:
        x, y = x[border:-border, border:-border], y[border:-border, border:-border]
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    wx = np.lib.stride_tricks.sliding_window_view(x, (11, 11))
    wy = np.lib.stride_tricks.sliding_window_view(y, (11, 11))
    mx, my = np.einsum("ijkl,kl->ij", wx, window), np.einsum("ijkl,kl->ij", wy, window)
    vx = np.einsum("ijkl,kl->ij", (wx - mx[..., None, None]) ** 2, window)
    vy = np.einsum("ijkl,kl->ij", (wy - my[..., None, None]) ** 2, window)
    cxy = np.einsum("ijkl,kl->ij", (wx - mx[..., None, None]) * (wy - my[..., None, None]), window)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim.mean()


@pytest.mark.parametrize("border", [0, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_ssim_match_float64_reference(channels, border):
    rng = np.random.default_rng(channels + border)
    shape = (41, 37) if channels == 1 else (41, 37, 3)
    hr = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.normal(0, 12, shape)
    sr = np.clip(hr + noise, 0, 255).astype(np.uint8)
    assert psnr_y(sr, hr, border) == pytest.approx(_ref_psnr(sr, hr, border), rel=1e-12)
    assert ssim_y(sr, hr, border) == pytest.approx(_ref_ssim(sr, hr, border), rel=1e-10)


def test_grey_equals_three_equal_channels():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (32, 30), dtype=np.uint8)
    sr = rng.integers(0, 256, (32, 30), dtype=np.uint8)
    rgb = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
    assert psnr_y(sr, hr) == pytest.approx(psnr_y(rgb(sr), rgb(hr)), rel=1e-12)
    assert ssim_y(sr, hr) == pytest.approx(ssim_y(rgb(sr), rgb(hr)), rel=1e-12)


def test_identical_images():
    image = np.random.default_rng(2).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert psnr_y(image, image) == float("inf")
    assert ssim_y(image, image) == pytest.approx(1.0, abs=1e-12)


def test_psnr_ssim_on_real_ir_image(shared_dir):
    sr, hr = _flir_pair(shared_dir, crop=(160, 128))
    assert psnr_y(sr, hr) == pytest.approx(_ref_psnr(sr, hr, 0), rel=1e-12)
    assert ssim_y(sr, hr) == pytest.approx(_ref_ssim(sr, hr, 0), rel=1e-10)


@pytest.mark.parametrize(
    "sr, hr, error",
    [
        (np.zeros((16, 16, 3), np.float32), np.zeros((16, 16, 3), np.uint8), TypeError),
        (np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8), ValueError),
        (np.zeros((16, 16, 4), np.uint8), np.zeros((16, 16, 4), np.uint8), ValueError),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), ValueError),  # smaller than the SSIM window
    ],
)
def test_bad_inputs_raise(sr, hr, error):
    with pytest.raises(error):
        ssim_y(sr, hr)


# ---------------------------------------------------------------------------------- LPIPS
@pytest.mark.parametrize("net, expected", [("alex", 0.4397), pytest.param("vgg", 0.4035, marks=pytest.mark.slow)])
def test_lpips_known_answer(shared_dir, lpips_weights, fresh_lpips, net, expected):
    sr, hr = _flir_pair(shared_dir)
    assert lpips_distance(sr, hr, net, lpips_weights) == pytest.approx(expected, abs=1e-3)


def test_load_lpips_contract(lpips_weights, fresh_lpips):
    model = load_lpips("alex", lpips_weights)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert load_lpips("alexnet", lpips_weights) is model  # cached per (net, device)
    a = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    b = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = model(a[None] * 2 - 1, b[None] * 2 - 1).item()  # documented input range: [-1, 1]
        assert model(a[None] * 2 - 1, a[None] * 2 - 1).item() == pytest.approx(0.0, abs=1e-7)
    assert lpips_distance(a, b, "alex", lpips_weights) == pytest.approx(direct, rel=1e-6)
    uint8 = lambda t: (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    assert lpips_distance(uint8(a), uint8(b), "alex") == pytest.approx(direct, abs=2e-3)


def test_missing_backbone_is_a_clear_error(fresh_lpips):
    with pytest.raises(LPIPSWeightsError) as info:
        load_lpips("vgg", weights=fresh_lpips / "nowhere")
    message = str(info.value)
    assert "vgg16_features.safetensors" in message
    assert "--lpips_backbone_dir" in message and metrics.LPIPS_WEIGHTS_ENV in message
    assert str(fresh_lpips / "nowhere") in message


def test_environment_variable_is_used(lpips_weights, fresh_lpips, monkeypatch):
    monkeypatch.setenv(metrics.LPIPS_WEIGHTS_ENV, str(lpips_weights))
    model = load_lpips("alex")
    expected = load_file(lpips_weights / "alexnet_features.safetensors")["features.10.weight"]
    assert torch.equal(model.net.slice5.get_submodule("10").weight, expected)


def test_incomplete_weights_file_is_refused(lpips_weights, fresh_lpips):
    state = load_file(lpips_weights / "alexnet_features.safetensors")
    del state["features.8.bias"]
    folder = fresh_lpips / "partial"
    folder.mkdir()
    save_file(state, folder / "alexnet_features.safetensors")
    with pytest.raises(ValueError, match=r"features\.8\.bias"):
        load_lpips("alex", folder)


def test_torchvision_cache_is_preferred(lpips_weights, fresh_lpips):
    """A torchvision checkpoint in $TORCH_HOME/hub/checkpoints wins over the weights folder."""
    features = load_file(lpips_weights / "alexnet_features.safetensors")
    checkpoints = fresh_lpips / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({**features, "classifier.1.weight": torch.zeros(2, 2)}, checkpoints / "alexnet-owt-7be5be79.pth")
    decoy = fresh_lpips / "decoy"
    decoy.mkdir()
    save_file({k: v * 0.5 for k, v in features.items()}, decoy / "alexnet_features.safetensors")
    model = load_lpips("alex", decoy)
    for index, slice_name in [(0, "slice1"), (3, "slice2"), (10, "slice5")]:
        weight = model.net.get_submodule(f"{slice_name}.{index}").weight
        assert torch.equal(weight, features[f"features.{index}.weight"])
