"""``prior_noise_scale``: the share of the prior's noise in ``s_T``; 0 draws none (the video path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _run(pipe, image, seed, **kwargs):
    return pipe(image, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


@pytest.fixture
def image():
    return np.random.default_rng(0).random((12, 16)).astype(np.float32)


def test_zero_prior_noise_does_not_depend_on_the_seed(tiny_pipeline, image):
    a = _run(tiny_pipeline, image, 0, prior_noise_scale=0.0, num_inference_steps=2)
    b = _run(tiny_pipeline, image, 1, prior_noise_scale=0.0, num_inference_steps=2)
    np.testing.assert_array_equal(a, b)
    c, d = (_run(tiny_pipeline, image, s, num_inference_steps=2, lr_consistency=False) for s in (0, 1))
    assert np.abs(c - d).max() > 1e-4  # the default prior draws noise: the seed matters


def test_full_prior_noise_is_the_default_call(tiny_pipeline, image):
    np.testing.assert_array_equal(_run(tiny_pipeline, image, 3, num_inference_steps=2),
                                  _run(tiny_pipeline, image, 3, num_inference_steps=2, prior_noise_scale=1.0))


def test_prior_start_scales_its_noise(tiny_pipeline):
    """``s_T - s_lr`` is ``prior_noise_scale`` times the full prior's noise (same generator)."""
    condition = torch.randn(1, 21, 4, 4, generator=torch.Generator().manual_seed(5))
    noise = {}
    for scale in (0.0, 0.5, 1.0):
        tiny_pipeline._prior_noise_scale = scale  # what __call__ sets for its steps
        noise[scale] = tiny_pipeline.prepare_latents(condition, torch.Generator().manual_seed(0)) - condition
    torch.testing.assert_close(noise[0.5], 0.5 * noise[1.0])
    assert noise[0.0].abs().max() == 0 and noise[1.0].abs().max() > 0


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_prior_noise_scale_outside_unit_interval_is_refused(tiny_pipeline, image, value):
    with pytest.raises(ValueError, match="prior_noise_scale"):
        tiny_pipeline(image, prior_noise_scale=value)
