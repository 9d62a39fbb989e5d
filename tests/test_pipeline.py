"""DifIISRDWTPipeline with tiny random components: sizes, modes, tiling, determinism, options."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt.metrics import psnr
from difiisr_dwt.pipelines.image_processor import bicubic_resize
from difiisr_dwt.pipelines.tiling import blend_tiles


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 test image (random noise blurred), like a real LR frame."""
    noise = np.random.RandomState(seed).rand(height, width) * 255
    return np.asarray(PIL.Image.fromarray(noise.astype(np.uint8)).resize((width // 4 + 1, height // 4 + 1)).resize(
        (width, height), PIL.Image.BICUBIC))


def run(pipe, image, seed=0, **kwargs):
    return pipe(image, generator=torch.Generator().manual_seed(seed), **kwargs).images


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (8, 8), (17, 4)])
def test_output_is_exactly_4x_for_any_size(tiny_pipeline, size):
    height, width = size
    image = PIL.Image.fromarray(np.full((height, width), 128, np.uint8))
    out = run(tiny_pipeline, image, num_inference_steps=2)[0]
    assert out.size == (4 * width, 4 * height) and out.mode == "L"


def test_modes_round_trip(tiny_pipeline):
    gray = smooth_image(20, 24)
    rgb = np.stack([gray, gray[::-1], gray[:, ::-1]], axis=2)
    out_l, out_rgb = run(tiny_pipeline, [PIL.Image.fromarray(gray), PIL.Image.fromarray(rgb)], num_inference_steps=1)
    assert (out_l.mode, out_rgb.mode) == ("L", "RGB")
    # 16-bit in -> 16-bit out, at the input's levels (in counts, not rescaled)
    raw = (7000 + gray.astype(np.uint16) * 8).astype(np.uint16)
    out16 = run(tiny_pipeline, PIL.Image.fromarray(raw), num_inference_steps=1)[0]
    assert out16.mode == "I;16" and out16.size == (96, 80)
    values = np.asarray(out16).astype(np.float64)
    span = float(raw.max()) - float(raw.min())
    assert abs(values.mean() - raw.mean()) < 0.01 * span and values.max() - values.min() > 0.5 * span
    assert run(tiny_pipeline, raw, num_inference_steps=1)[0].mode == "I;16"  # uint16 numpy too


@pytest.mark.parametrize("pattern", ["ramp_2x1", "checker_12x12"])
def test_16bit_output_is_not_clipped_to_the_inputs_own_span(tiny_pipeline, pattern):
    """A 16-bit image scaled by its own min / max: the output keeps the input's levels (its PIL-bicubic /4
    reproduces the input) even where that needs values beyond the input's span, as an 8-bit output may go
    beyond its input's min / max. Clipped to the span, the 2x1 ramp came back 3784 counts off (a fifth of it)."""
    if pattern == "ramp_2x1":
        raw = np.array([[20000, 40000]], np.uint16)
    else:
        raw = (20000 + 20000 * np.kron(np.indices((4, 4)).sum(0) % 2, np.ones((3, 3)))).astype(np.uint16)
    out = np.asarray(run(tiny_pipeline, PIL.Image.fromarray(raw), num_inference_steps=1)[0]).astype(np.float64)
    down = bicubic_resize(torch.from_numpy(out)[None, None], raw.shape)[0, 0].numpy()
    # in grey levels of an 8-bit image of the same span: within the pipeline's clean-input consistency
    assert np.abs(down - raw).mean() / 20000 * 255 <= 0.75


def test_converted_modes(tiny_pipeline):
    base = PIL.Image.fromarray(smooth_image(12, 16))
    for mode, expected in (("RGBA", "RGB"), ("P", "L"), ("LA", "L"), ("1", "L"), ("CMYK", "RGB")):
        assert run(tiny_pipeline, base.convert(mode), num_inference_steps=1)[0].mode == expected


def test_numpy_and_torch_inputs_and_output_types(tiny_pipeline):
    gray = smooth_image(16, 20)
    as_float = gray.astype(np.float32) / 255
    pil = run(tiny_pipeline, PIL.Image.fromarray(gray), output_type="np", num_inference_steps=2)
    from_np = run(tiny_pipeline, as_float, output_type="np", num_inference_steps=2)
    from_pt = run(tiny_pipeline, torch.from_numpy(as_float)[None], output_type="pt", num_inference_steps=2)
    assert pil.shape == from_np.shape == (1, 64, 80, 1) and pil.dtype == np.float32
    assert from_pt.shape == (1, 1, 64, 80)
    assert np.allclose(pil, from_np, atol=1e-6)
    assert np.allclose(from_pt.permute(0, 2, 3, 1).numpy(), from_np, atol=1e-6)
    assert 0 <= from_np.min() and from_np.max() <= 1
    batch = torch.rand(3, 3, 8, 12)
    assert run(tiny_pipeline, batch, output_type="pt", num_inference_steps=1).shape == (3, 3, 32, 48)


def test_mixed_sizes_keep_order(tiny_pipeline):
    images = [PIL.Image.fromarray(smooth_image(h, w, seed=h)) for h, w in ((8, 12), (16, 8), (8, 12))]
    outs = run(tiny_pipeline, images, num_inference_steps=1, output_type="np")
    assert [o.shape for o in outs] == [(32, 48, 1), (64, 32, 1), (32, 48, 1)]


def test_same_seed_same_output_and_seed_matters(tiny_pipeline):
    image = PIL.Image.fromarray(smooth_image(24, 28))
    a = run(tiny_pipeline, image, seed=3, output_type="np")
    b = run(tiny_pipeline, image, seed=3, output_type="np")
    c = run(tiny_pipeline, image, seed=4, output_type="np")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_per_image_generators_match_single_runs(tiny_pipeline):
    images = [PIL.Image.fromarray(smooth_image(12, 16, seed=s)) for s in (1, 2)]
    generators = [torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)]
    both = tiny_pipeline(images, generator=generators, output_type="np", num_inference_steps=3).images
    second = run(tiny_pipeline, images[1], seed=11, output_type="np", num_inference_steps=3)
    assert np.allclose(both[1], second[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"generator\(s\) for"):
        tiny_pipeline(images, generator=generators[:1])


def test_tiled_matches_untiled(tiny_pipeline):
    """96x128 LR, 64-pixel tiles: the UNet never sees the whole latent, output agrees >= 35 dB."""
    image = smooth_image(96, 128)
    seen: list[tuple[int, ...]] = []
    handle = tiny_pipeline.unet.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    whole = run(tiny_pipeline, image, output_type="np")
    seen.clear()
    tiny_pipeline.enable_unet_tiling(tile_size=64, tile_overlap=16)
    tiled = run(tiny_pipeline, image, output_type="np")
    handle.remove()
    assert set(seen) == {(64, 64)}
    assert psnr(whole, tiled) >= 35.0
    tiny_pipeline.disable_unet_tiling()
    assert np.array_equal(run(tiny_pipeline, image, output_type="np"), whole)


def test_legacy_tiling_arguments_still_work_for_one_call(tiny_pipeline):
    image = smooth_image(96, 128)
    tiny_pipeline.enable_unet_tiling(64, 16)
    state = run(tiny_pipeline, image, output_type="np", num_inference_steps=1)
    tiny_pipeline.disable_unet_tiling()
    with pytest.warns(FutureWarning, match="enable_unet_tiling"):
        legacy = run(tiny_pipeline, image, output_type="np", num_inference_steps=1, tile_size=64, tile_overlap=16)
    assert np.array_equal(state, legacy)
    assert tiny_pipeline.unet_tiling is None  # the call's tiling did not stick
    with pytest.raises(TypeError, match="unexpected keyword"):
        run(tiny_pipeline, image, num_inference_steps=1, tile_sise=64)


def test_blend_tiles_is_exact_for_local_operators():
    """With overlap >= the operator's reach, blending reproduces the untiled result exactly."""
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)

    def op(x):
        return torch.nn.functional.interpolate(conv(x), scale_factor=4, mode="nearest")

    x = torch.randn(1, 2, 50, 70)
    with torch.no_grad():
        tiled = blend_tiles(op, x, tile=16, overlap=6, scale=4)
        assert tiled.shape == (1, 3, 200, 280)
        assert torch.allclose(tiled, op(x), atol=1e-5)


def test_decode_tiling_runs_and_stays_close(tiny_pipeline):
    image = smooth_image(40, 48)
    tiny_pipeline.disable_decode_tiling()
    whole = run(tiny_pipeline, image, output_type="np", num_inference_steps=1, lr_consistency=False)
    tiny_pipeline.enable_decode_tiling(tile_size=24, tile_overlap=12)
    tiled = run(tiny_pipeline, image, output_type="np", num_inference_steps=1, lr_consistency=False)
    assert tiled.shape == whole.shape and not np.array_equal(tiled, whole)
    # random weights: the mid-block attention sees one tile only; the real model is held to 40 dB in
    # test_default_model.py, the GroupNorm sharing itself in test_fidelity.py
    assert psnr(whole, tiled) > 20.0


def test_cpu_decode_runs_channels_last_and_matches_default_layout(tiny_pipeline):
    """The decoder gets its input in channels-last layout on the CPU (oneDNN's fast path), and the pixels
    are those of the default layout to float rounding."""
    channels = tiny_pipeline.vqvae.config.latent_channels
    latents = torch.randn(1, channels, 12, 10, generator=torch.Generator().manual_seed(0))
    seen = []
    decode = tiny_pipeline.vqvae.decode

    def spy(z, **kwargs):
        seen.append(z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous())
        return decode(z, **kwargs)

    tiny_pipeline.vqvae.decode = spy
    with torch.no_grad():
        out = tiny_pipeline.decode_vq_latents(latents, quantize=False)
        reference = decode(latents, force_not_quantize=True).sample
    assert seen == [True] and out.is_contiguous() and out.shape == (1, 3, 48, 40)
    assert torch.allclose(out, reference, atol=1e-4) and not torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("steps", [1, 4, 15])
def test_step_counts_and_callback(tiny_pipeline, steps):
    calls = []

    def callback(pipe, i, t, kwargs):
        calls.append((i, int(t), tuple(kwargs["latents"].shape), tuple(kwargs["pred_vq_latents"].shape)))
        return {}

    run(tiny_pipeline, smooth_image(8, 8), num_inference_steps=steps, callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "pred_vq_latents"])
    assert [c[0] for c in calls] == list(range(steps))
    assert calls[0][1] == 14 and calls[-1][1] == 0 if steps > 1 else calls[0][1] == 14
    assert calls[0][2] == (1, 21, 8, 8) and calls[0][3] == (1, 3, 8, 8)


def test_callback_can_replace_latents(tiny_pipeline):
    def zero_prediction(pipe, i, t, kwargs):
        return {"pred_vq_latents": torch.zeros_like(kwargs["pred_vq_latents"])}

    out = run(tiny_pipeline, smooth_image(8, 8), num_inference_steps=1, output_type="pt", quantize=False,
              lr_consistency=False, callback_on_step_end=zero_prediction,
              callback_on_step_end_tensor_inputs=["pred_vq_latents"])
    with torch.no_grad():  # the decoded image in [0, 1], its luma (the mean of its channels)
        decoded = tiny_pipeline.vqvae.decode(torch.zeros(1, 3, 8, 8), force_not_quantize=True).sample
    expected = ((decoded.clamp(-1, 1) + 1) / 2).mean(1, keepdim=True)
    assert torch.allclose(out, expected, atol=1e-5)


def test_quantize_option_and_config_default(tiny_pipeline):
    image = smooth_image(12, 12)
    quantized = run(tiny_pipeline, image, output_type="np")
    raw = run(tiny_pipeline, image, output_type="np", quantize=False)
    assert not np.array_equal(quantized, raw)
    tiny_pipeline.register_to_config(quantize_decode=False)
    assert np.array_equal(run(tiny_pipeline, image, output_type="np"), raw)


def test_return_dict_false_and_value_ranges(tiny_pipeline):
    raw = np.linspace(1000, 3000, 64, dtype=np.float64).reshape(8, 8).astype(np.uint16)
    images, ranges = tiny_pipeline(raw, num_inference_steps=1, return_dict=False)
    assert ranges == [(1000.0, 3000.0)] and images[0].mode == "I;16"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_pipeline(tiny_pipeline, dtype):
    pipe = tiny_pipeline.to(dtype=dtype)
    out = run(pipe, smooth_image(16, 16), num_inference_steps=2, output_type="np")
    assert out.shape == (1, 64, 64, 1) and np.isfinite(out).all()


BAD_INPUTS = [
    ([], "empty list"),
    (np.zeros((0, 5), np.uint8), "empty"),
    (PIL.Image.new("L", (0, 0)), "empty"),
    (np.full((8, 8), np.nan, np.float32), "NaN or Inf"),
    (np.full((8, 8), np.inf, np.float32), "NaN or Inf"),
    (torch.full((1, 8, 8), float("nan")), "NaN or Inf"),
    (np.zeros((8, 8, 2), np.uint8), "1 or 3 channels"),
    (torch.zeros(5, 8, 8), "1 or 3 channels"),
    (np.zeros((2, 8, 8, 3), np.uint8), r"\(H, W\) or \(H, W, C\)"),
    (np.full((8, 8), 2.0, np.float32), r"\[0, 1\]"),
    (np.zeros((8, 8), np.int8), "unsupported dtype"),
    (PIL.Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F"), "NaN or Inf"),
    (PIL.Image.new("HSV", (8, 8)), "unsupported PIL mode 'HSV'"),
    ("image.png", "unsupported type str"),
]


@pytest.mark.parametrize(("image", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_images_raise_clear_errors(tiny_pipeline, image, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(image, num_inference_steps=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_inference_steps=16), "num_inference_steps"),
        (dict(tile_size=31), "tile_size"),
        (dict(tile_size=-2), "tile_size"),
        (dict(tile_size=32, tile_overlap=32), "tile_overlap"),
        (dict(decode_tile_size=0), "`tile_size` must be a positive integer"),
        (dict(noise_scale=1.5), "noise_scale"),
        (dict(noise_scale=-0.1), "noise_scale"),
        (dict(output_type="latent"), "output_type"),
        (dict(callback_on_step_end_tensor_inputs=["noise"]), "callback_on_step_end_tensor_inputs"),
    ],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")  # the deprecated per-call tiling arguments
def test_bad_options_raise_clear_errors(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(np.zeros((8, 8), np.uint8), **kwargs)


def test_component_mismatch_is_rejected():
    from diffusers import UNet2DModel

    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline
    from difiisr_dwt.presets import build_dwt_encoder, build_scheduler, build_vqvae

    unet = UNet2DModel(in_channels=40, out_channels=3, block_out_channels=(8, 8), norm_num_groups=4,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    with pytest.raises(ValueError, match="in_channels must be 2 x"):
        DifIISRDWTPipeline(build_dwt_encoder("test"), unet, build_vqvae("test"), build_scheduler())


def test_messages_name_the_layout_and_the_integer_type():
    """A numpy image in torch's (C, H, W) order, and a signed 32-bit PIL image, are refused with what to do."""
    from difiisr_dwt.pipelines.image_processor import IRImageProcessor

    processor = IRImageProcessor()
    with pytest.raises(ValueError, match=r"\(H, W, C\), not \(C, H, W\)"):
        processor.preprocess(np.zeros((3, 48, 64), np.uint8))
    signed = PIL.Image.fromarray(np.full((8, 8), -5, np.int32), mode="I")
    with pytest.raises(ValueError, match="from -5 to -5: only unsigned 16-bit"):
        processor.preprocess(signed)
