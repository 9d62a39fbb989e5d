"""The pipeline's arguments and state as diffusers users pass them: bad values raise a ``ValueError`` naming the
argument (not a torch / numpy error from deep inside), numpy and torch integers are integers, a callback can stop
sampling, and a second pipeline on the same components (``from_pipe``) keeps the settings. Random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difiisr_dwt.presets import build_pipeline

IMAGE = np.linspace(0, 255, 16 * 24).reshape(16, 24).astype(np.uint8)


def _pipe():
    pipe = build_pipeline("test", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe(IMAGE, num_inference_steps=kwargs.pop("steps", 2), output_type="np", **kwargs).images


@pytest.mark.parametrize("kwargs, name", [
    ({"noise_scale": "0.5"}, "noise_scale"), ({"noise_scale": None}, "noise_scale"),
    ({"prior_noise_scale": True}, "prior_noise_scale"), ({"steps": True}, "num_inference_steps"),
    ({"steps": 2.0}, "num_inference_steps"), ({"steps": torch.tensor(2.0)}, "num_inference_steps"),
    ({"generator": 0}, "generator"), ({"generator": [0]}, "generator"),
    ({"input_noise_level": True}, "input_noise_level"), ({"quantize": "yes"}, "quantize"),
    ({"lr_consistency": "no"}, "lr_consistency"), ({"return_dict": 0}, "return_dict"),
    ({"value_range": ("0", "255")}, "value_range"),
])
def test_bad_arguments_raise_value_errors_naming_them(tiny_pipeline, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        _run(tiny_pipeline, **kwargs)


def test_numpy_and_torch_integers_and_numpy_bools_are_taken(tiny_pipeline):
    reference = _run(tiny_pipeline)
    for steps in (np.int64(2), torch.tensor(2)):
        np.testing.assert_allclose(_run(tiny_pipeline, steps=steps), reference, atol=1e-5)
    np.testing.assert_allclose(_run(tiny_pipeline, lr_consistency=np.bool_(True)), reference, atol=1e-5)


@pytest.mark.parametrize("size, overlap", [(32.0, 8), ("32", 8), (32, 8.5), (True, 0), (16, 16), (0, 0)])
def test_tiling_setters_refuse_what_a_call_could_not_use(tiny_pipeline, size, overlap):
    """Floats, strings and bools were accepted and failed at the next call (a TypeError from range())."""
    for enable in (tiny_pipeline.enable_unet_tiling, tiny_pipeline.enable_decode_tiling):
        with pytest.raises(ValueError, match="tile_size"):
            enable(size, overlap)
    assert tiny_pipeline.unet_tiling is None  # unchanged


def test_tiling_setters_take_numpy_integers():
    pipe = _pipe()
    pipe.enable_decode_tiling(np.int64(8), np.int32(4))
    assert (pipe.decode_tiling.tile_size, pipe.decode_tiling.tile_overlap) == (8, 4)
    assert type(pipe.decode_tiling.tile_size) is int


def test_callback_must_return_its_kwargs(tiny_pipeline):
    with pytest.raises(ValueError, match="must return a dict"):
        _run(tiny_pipeline, callback_on_step_end=lambda pipe, i, t, kwargs: None)

    def wrong_shape(pipe, i, t, kwargs):
        return {"latents": kwargs["latents"][..., :-1]}

    with pytest.raises(ValueError, match="returned 'latents' as Tensor of shape"):
        _run(tiny_pipeline, callback_on_step_end=wrong_shape)
    with pytest.raises(ValueError, match="returned 'latents' as ndarray"):
        _run(tiny_pipeline, callback_on_step_end=lambda pipe, i, t, kwargs: {"latents": kwargs["latents"].numpy()})


def test_non_finite_values_raise_instead_of_a_black_image(tiny_pipeline):
    """NaN latents (a callback's, or float16 overflow) decoded to NaN, which became a black (0) image."""
    def poison(pipe, i, t, kwargs):
        return {"pred_vq_latents": torch.full_like(kwargs["pred_vq_latents"], float("nan"))}

    for lr_consistency in (True, False):
        with pytest.raises(RuntimeError, match="NaN or infinite"):
            _run(tiny_pipeline, lr_consistency=lr_consistency, callback_on_step_end=poison,
                 callback_on_step_end_tensor_inputs=["pred_vq_latents"])


def test_interrupt_stops_after_the_current_step(tiny_pipeline):
    """diffusers' convention: a callback sets ``pipe._interrupt``; the last prediction is decoded."""
    steps_run = []

    def stop(pipe, i, t, kwargs):
        steps_run.append(i)
        pipe._interrupt = True
        return kwargs

    out = _run(tiny_pipeline, steps=3, callback_on_step_end=stop)
    assert steps_run == [0] and out.shape == (1, 64, 96, 1) and np.isfinite(out).all()
    # the next call starts afresh
    assert len(_run(tiny_pipeline, steps=3, callback_on_step_end=lambda p, i, t, k: steps_run.append(i) or k)) == 1
    assert steps_run == [0, 0, 1, 2]


def test_from_pipe_keeps_the_settings_and_the_output():
    """``from_pipe`` gave a ValueError (the DWT encoder's class is not in the signature); built from
    ``pipe.components`` a pipeline reported global attention while the shared UNet ran windows."""
    pipe = build_pipeline("test", seed=0, quantize_decode=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_unet_window_attention(8)
    reference = _run(pipe)
    second = type(pipe).from_pipe(pipe)
    second.set_progress_bar_config(disable=True)
    assert second.unet is pipe.unet and second.config.quantize_decode is False
    assert second.unet_attention_window == second.config.unet_attention_window == 8
    np.testing.assert_allclose(_run(second), reference, atol=1e-5)
    rebuilt = type(pipe)(**pipe.components)
    assert rebuilt.unet_attention_window == 8 and rebuilt.decoder_attention_window is None


def test_attention_slicing_says_it_changes_nothing(tiny_pipeline, caplog):
    """diffusers' ``enable_attention_slicing`` finds no sliceable module here; it used to pass in silence."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            tiny_pipeline.enable_attention_slicing()
            assert "enable_unet_window_attention()" in caplog.text
            caplog.clear()
            tiny_pipeline.disable_attention_slicing()
    finally:
        diffusers_logging.disable_propagation()
    assert not caplog.text
