"""The noise-aware fidelity step: the noise and stripe estimates, the noise-free target, and what the pipeline
does with a clean, a flat and a noisy input (tiny random components: the mechanism, not the model's quality)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt.evaluation import bicubic_down, bicubic_up
from difiisr_dwt.pipelines.fidelity import (
    back_project,
    estimate_column_offsets,
    estimate_noise_level,
    noise_free_target,
    shrink_flat_detail,
)

GREY = 127.5  # grey levels per unit of the pipeline's [-1, 1] pixels


def smooth_scene(height: int = 128, width: int = 160) -> np.ndarray:
    """A float64 scene in grey levels: gradients and soft blobs, no noise of its own."""
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    blob = np.exp(-((xx - 60) ** 2 + (yy - 50) ** 2) / 300)
    return 110 + 40 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + 0.2 * xx + 30 * blob


def to_tensor(grey_levels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(grey_levels).float()[None, None] / GREY - 1


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_noise_estimate_finds_a_known_sigma_and_ignores_stripes(sigma):
    rng = np.random.default_rng(0)
    noisy = smooth_scene() + rng.normal(0, sigma, (128, 160))
    striped = noisy + rng.normal(0, 3.0, 160)[None, :]  # column offsets do not count as white noise
    for image in (noisy, striped):
        assert float(estimate_noise_level(to_tensor(image))) * GREY == pytest.approx(sigma, rel=0.1)


def test_noise_estimate_of_a_clean_scene_is_small():
    assert float(estimate_noise_level(to_tensor(smooth_scene()))) * GREY < 0.3
    assert float(estimate_noise_level(torch.zeros(2, 3, 2, 2)).abs().max()) == 0  # too small to measure


def test_column_offsets_are_found_and_a_clean_scene_has_none():
    rng = np.random.default_rng(1)
    offsets = rng.normal(0, 1.5, 160)
    offsets -= offsets.mean()
    image = to_tensor(smooth_scene() + rng.normal(0, 2.0, (128, 160)) + offsets[None, :])
    found = estimate_column_offsets(image, estimate_noise_level(image))[0, 0, 0].numpy() * GREY
    assert np.corrcoef(found, offsets)[0, 1] > 0.9
    assert np.sqrt(np.mean((found - offsets) ** 2)) < 0.6  # grey levels, against offsets of sigma 1.5
    clean = to_tensor(smooth_scene())
    none = estimate_column_offsets(clean, estimate_noise_level(clean))
    assert float(none.abs().max()) * GREY < 0.3


def test_noise_free_target_keeps_a_clean_input_and_removes_noise():
    clean = to_tensor(smooth_scene())
    target, model = noise_free_target(clean, 1.5 / GREY)
    assert torch.equal(target, clean) and float(model.excess_noise_level) == 0
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 3.0, (128, 160)) + rng.normal(0, 1.5, 160)[None, :]
    noisy = to_tensor(smooth_scene() + noise)
    target, model = noise_free_target(noisy, 1.5 / GREY)
    assert float(model.excess_noise_level) * GREY == pytest.approx(np.sqrt(3.0**2 - 1.5**2), rel=0.15)
    error_before = float((noisy - clean).square().mean().sqrt()) * GREY
    error_after = float((target - clean).square().mean().sqrt()) * GREY
    assert error_after < 0.6 * error_before
    given, _ = noise_free_target(noisy, 1.5 / GREY, torch.zeros(1))  # a known level of 0: the input itself
    assert torch.equal(given, noisy)


def test_shrink_flat_detail_takes_one_noise_level_per_image():
    lr = torch.rand(2, 1, 8, 8)
    sr = torch.rand(2, 1, 32, 32)
    both = shrink_flat_detail(sr, lr, torch.tensor([0.0, 0.05]))
    torch.testing.assert_close(both[0], sr[0])  # level 0: unchanged
    torch.testing.assert_close(both[1:], shrink_flat_detail(sr[1:], lr[1:], 0.05))


def test_input_noise_level_zero_is_the_clean_fidelity_step(tiny_pipeline):
    """Told the input is clean, the step is: shrink at detail_noise_level, back-project onto the input."""
    lr = to_tensor(smooth_scene(24, 32) + np.random.default_rng(3).normal(0, 3, (24, 32)))
    sr = torch.rand(1, 1, 96, 128) * 2 - 1
    expected = back_project(shrink_flat_detail(sr, lr, tiny_pipeline.detail_noise_level / GREY), lr,
                            tiny_pipeline.back_projection_iterations)
    torch.testing.assert_close(tiny_pipeline.apply_lr_consistency(sr, lr, input_noise_level=0.0), expected)
    with pytest.raises(ValueError, match="input_noise_level"):
        tiny_pipeline(PIL.Image.new("L", (16, 16), 100), num_inference_steps=1, input_noise_level=-1.0)


def _upscale(pipe, image: PIL.Image.Image, input_noise_level: float | None = None) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    images = pipe(image, num_inference_steps=2, generator=generator, input_noise_level=input_noise_level).images
    return np.asarray(images[0], np.float64)


@pytest.mark.parametrize("input_noise_level", [0.0, None], ids=["default-clean", "estimated"])
def test_clean_input_keeps_exact_consistency(tiny_pipeline, input_noise_level):
    lr = PIL.Image.fromarray(np.round(smooth_scene(32, 40)).astype(np.uint8))
    out = _upscale(tiny_pipeline, lr, input_noise_level)
    error = np.abs(np.asarray(bicubic_down(PIL.Image.fromarray(out.astype(np.uint8))), np.float64)
                   - np.asarray(lr, np.float64)).mean()
    assert error <= 0.5


def test_noisy_flat_input_comes_back_no_noisier_than_bicubic(tiny_pipeline):
    """A flat frame with sensor noise and stripes: random weights make texture, the step must not keep it nor
    copy the noise; the output's spread around the level is at most bicubic's."""
    rng = np.random.default_rng(4)
    noisy = 100 + rng.normal(0, 3.0, (40, 48)) + rng.normal(0, 1.5, 48)[None, :]
    lr = PIL.Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    out = _upscale(tiny_pipeline, lr, input_noise_level=None)  # estimated, as --input-noise-level auto
    bicubic = np.asarray(bicubic_up(lr), np.float64)
    inner = (slice(8, -8), slice(8, -8))
    assert out[inner].std() <= bicubic[inner].std()
    assert abs(out.mean() - 100) <= 1.0


def test_back_projection_rounds_per_image():
    lr = torch.rand(2, 1, 6, 8) * 2 - 1
    sr = torch.rand(2, 1, 24, 32) * 2 - 1
    both = back_project(sr, lr, torch.tensor([1, 3]))
    torch.testing.assert_close(both[:1], back_project(sr[:1], lr[:1], 1))
    torch.testing.assert_close(both[1:], back_project(sr[1:], lr[1:], 3))


def test_input_noise_level_option_maps_auto_to_estimation():
    import argparse

    from difiisr_dwt.options import add_sampling_arguments, apply_sampling_arguments

    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)

    class Pipe:  # no tiling asked: apply_sampling_arguments only reads the options
        pass

    assert "input_noise_level" not in apply_sampling_arguments(Pipe(), parser.parse_args([]))
    assert apply_sampling_arguments(Pipe(), parser.parse_args(["--input-noise-level", "auto"]))[
        "input_noise_level"] is None
    assert apply_sampling_arguments(Pipe(), parser.parse_args(["--input-noise-level", "2.5"]))[
        "input_noise_level"] == 2.5
    for bad in ("-1", "nan", "loud"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--input-noise-level", bad])
