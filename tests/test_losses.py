"""Losses: timestep weights, LPIPS ramp, Sobel / FFT terms and the combined diffusion loss."""

from __future__ import annotations

import pytest
import torch

from difiisr_dwt.losses import ImageLosses, diffusion_loss, fft_loss, ramp, sobel, sobel_edge_loss, timestep_weights


def test_timestep_weights_follow_design_bands():
    weights = timestep_weights(torch.arange(15), 15)
    assert weights.tolist() == pytest.approx([1.0] * 5 + [0.5] * 5 + [0.1] * 5)
    # other T: the same thirds of the schedule
    assert timestep_weights(torch.tensor([0, 9, 10, 19, 20, 29]), 30).tolist() == pytest.approx(
        [1.0, 1.0, 0.5, 0.5, 0.1, 0.1])


def test_lpips_ramp():
    assert ramp(0, 0.02, 0.1, 100) == pytest.approx(0.02)
    assert ramp(50, 0.02, 0.1, 100) == pytest.approx(0.06)
    assert ramp(500, 0.02, 0.1, 100) == pytest.approx(0.1)
    assert ramp(0, 0.02, 0.1, 0) == pytest.approx(0.1)


def test_sobel_finds_edges_and_ignores_offsets():
    image = torch.zeros(1, 1, 8, 8)
    image[..., 4:] = 1.0  # vertical edge
    grad = sobel(image)
    assert grad[0, 0, :, 3:5].abs().min() > 0 and grad[0, 0, :, :2].abs().max() == 0
    assert grad[0, 1].abs().max() == 0  # no horizontal edge
    a = torch.rand(2, 3, 16, 16)
    assert torch.allclose(sobel_edge_loss(a, a + 0.3), torch.zeros(2), atol=1e-6)
    assert (sobel_edge_loss(a, torch.rand(2, 3, 16, 16)) > 0).all()


def test_fft_loss_zero_only_for_equal_images():
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert torch.allclose(fft_loss(a, a), torch.zeros(2))
    assert (fft_loss(a, b) > 0).all()
    assert fft_loss(a, b).shape == (2,)


def test_diffusion_loss_combines_weighted_terms():
    pred, target = torch.zeros(4, 3, 4, 4), torch.ones(4, 3, 4, 4)
    timesteps = torch.tensor([0, 6, 12, 14])  # weights 1.0, 0.5, 0.1, 0.1
    edge = torch.tensor([1.0, 1.0])  # computed on the first two samples only
    out = diffusion_loss(pred, target, timesteps, 15, {"edge": edge}, {"edge": 0.2})
    assert out["mse"].item() == pytest.approx(1.0)
    assert out["edge"].item() == pytest.approx(0.2 * (1.0 + 0.5) / 2)
    assert out["loss"].item() == pytest.approx(out["mse"].item() + out["edge"].item())


def test_image_losses_with_lpips(lpips_weights):
    from difiisr_dwt.metrics import load_lpips

    losses = ImageLosses(load_lpips("alex", weights=lpips_weights), edge_weight=0.1, fft_weight=0.1)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    same = losses(a, a)
    other = losses(a, torch.rand(2, 3, 32, 32) * 2 - 1)
    assert set(same) == {"lpips", "edge", "fft"}
    assert all(v.shape == (2,) for v in other.values())
    assert torch.allclose(same["lpips"], torch.zeros(2), atol=1e-6)
    assert (other["lpips"] > 0.05).all()
    pred = a.clone().requires_grad_()
    sum(v.sum() for v in losses(pred, torch.zeros_like(a)).values()).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0  # the terms train what they measure
