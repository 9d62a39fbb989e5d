"""The noise-aware fidelity step: the noise and stripe estimates, the noise-free target, and what the pipeline
does with a clean, a flat and a noisy input (tiny random components: the mechanism, not the model's quality);
and, on the shared validation images, that the default estimate leaves clean inputs consistent and finds the
noise of ``eval --noisy-lr``."""

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


@pytest.mark.parametrize("shape", [(80, 96), (96, 128)])
def test_noise_estimate_uses_smaller_blocks_on_small_images(shape):
    """Fewer than 40 blocks of 16 pixels: smaller blocks, each with its own calibration on pure noise."""
    noise = torch.randn((8, 1) + shape, generator=torch.Generator().manual_seed(0)) * 2 / GREY
    assert float(estimate_noise_level(noise).mean()) * GREY == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (96, 64), (96, 80)])
def test_small_clean_crops_keep_their_levels(size):
    """With a handful of blocks the flattest one is texture: read as noise, it moved a 32x32 crop of an example
    frame by 9.6 grey levels. On the crops (8-pixel grid) of the four example frames now: below 96x80 no
    estimate (the target is the crop), at 96x80 one crop of 252 at 0.52 grey level, the rest within 0.5; the
    noise of a frame large enough is still found."""
    from pathlib import Path

    width, height = size
    moved = []
    for path in sorted((Path(__file__).parents[1] / "examples/images").glob("FLIR_*_lr.png")):
        frame = np.asarray(PIL.Image.open(path).convert("L"), np.float64)
        for top in range(0, frame.shape[0] - height + 1, 8):
            for left in range(0, frame.shape[1] - width + 1, 8):
                crop = to_tensor(frame[top : top + height, left : left + width])
                target, _ = noise_free_target(crop, 1.5 / GREY)
                moved.append(float((target - crop).abs().mean()) * GREY)
    assert len(moved) > 200
    if width * height < 96 * 80:
        assert max(moved) == 0
    assert np.quantile(moved, 0.99) <= 0.5 and max(moved) <= 0.75
    noisy = to_tensor(smooth_scene(80, 96) + np.random.default_rng(0).normal(0, 3, (80, 96)))
    assert float(noise_free_target(noisy, 1.5 / GREY)[1].excess_noise_level) * GREY > 2
    assert float(estimate_noise_level(to_tensor(np.random.default_rng(0).normal(100, 3, (64, 80))))) == 0


def test_column_offsets_are_found_and_a_clean_scene_has_none():
    rng = np.random.default_rng(1)
    offsets = rng.normal(0, 1.5, 160)
    offsets -= offsets.mean()
    image = to_tensor(smooth_scene() + rng.normal(0, 2.0, (128, 160)) + offsets[None, :])
    found = estimate_column_offsets(image, estimate_noise_level(image))[0, 0, 0].numpy() * GREY
    # conservative by design (the smaller of the two halves' estimates), so a little below the true offsets
    assert np.corrcoef(found, offsets)[0, 1] > 0.8
    assert np.sqrt(np.mean((found - offsets) ** 2)) < 0.8  # grey levels, against offsets of sigma 1.5
    clean = to_tensor(smooth_scene())
    none = estimate_column_offsets(clean, estimate_noise_level(clean))
    assert float(none.abs().max()) * GREY < 0.3
    # scene, not sensor: a pole down the whole frame, and a wall edge in the top three quarters
    scene = smooth_scene() + rng.normal(0, 2.0, (128, 160))
    scene[:, 70:72] += 40
    scene[:96, 120:] += 25
    found = estimate_column_offsets(to_tensor(scene), torch.tensor([2.0 / GREY]))[0, 0, 0].numpy() * GREY
    assert np.abs(found[[69, 70, 71, 72, 119, 120]]).max() < 0.5, found[[69, 70, 71, 72, 119, 120]]


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
                            tiny_pipeline.back_projection_iterations, (-1.0, 1.0))  # an 8-bit image's 0..255
    torch.testing.assert_close(tiny_pipeline.apply_lr_consistency(sr, lr, input_noise_level=0.0), expected)
    # training passes __call__'s default to the step itself: "auto" there is the estimate
    torch.testing.assert_close(tiny_pipeline.apply_lr_consistency(sr, lr, "auto"),
                               tiny_pipeline.apply_lr_consistency(sr, lr, None))
    for bad in (-1.0, float("nan"), "loud"):
        with pytest.raises(ValueError, match="input_noise_level"):
            tiny_pipeline(PIL.Image.new("L", (16, 16), 100), num_inference_steps=1, input_noise_level=bad)


def test_default_estimates_the_noise_of_8_bit_frames_only(tiny_pipeline):
    """``"auto"`` (the default): estimated (NaN) for 8-bit frames, 0 (exact) for radiometric ones."""
    import inspect

    assert inspect.signature(type(tiny_pipeline).__call__).parameters["input_noise_level"].default == "auto"
    items = tiny_pipeline.image_processor.preprocess(
        [PIL.Image.new("L", (8, 8), 9), np.full((8, 8), 3000, np.uint16), np.zeros((8, 8), np.float32)])
    metas = [meta for _, meta in items]
    levels = type(tiny_pipeline).input_noise_levels
    assert levels("auto", metas)[:2].tolist()[1] == 0 and torch.isnan(levels("auto", metas)[0])
    ranged = [m for _, m in tiny_pipeline.image_processor.preprocess(np.zeros((8, 8), np.float32), (0.0, 1.0))]
    assert levels("auto", ranged).tolist() == [0.0]  # in units of a value_range: radiometric
    assert torch.isnan(levels(None, metas)).all()
    assert levels(2.5, metas).tolist() == [2.5] * 3
    # what each output holds, in its input's [-1, 1]: 0..255; 0..65535 counts of a 16-bit image scaled by its
    # range (here a one-level image: span 1 count around 3000); a float image in its units is unbounded
    lo, hi = type(tiny_pipeline).output_bounds([*metas, *ranged])
    assert lo[0] == -1 and hi[0] == 1 and lo[1] == 2 * -3000 - 1 and hi[1] == 2 * (65535 - 3000) - 1
    assert lo[3] == -float("inf") and hi[3] == float("inf")


def test_rounds_blend_is_continuous_in_the_removed_noise(tiny_pipeline):
    """A frame whose noise is barely above the clean level keeps nearly the exact (10-round) result: no jump
    to the 1-round result between two frames of a video whose estimates straddle the clean level."""
    lr = to_tensor(smooth_scene(24, 32) + np.random.default_rng(5).normal(0, 1, (24, 32)))
    sr = torch.rand(1, 1, 96, 128) * 2 - 1
    exact = tiny_pipeline.apply_lr_consistency(sr, lr, 0.0)
    barely = tiny_pipeline.apply_lr_consistency(sr, lr, 0.01)
    one_round = back_project(shrink_flat_detail(sr, lr, tiny_pipeline.detail_noise_level / GREY), lr,
                             tiny_pipeline.noisy_back_projection_iterations)
    assert float((barely - exact).abs().max()) < 0.05 * float((one_round - exact).abs().max())


def _upscale(pipe, image: PIL.Image.Image, input_noise_level: float | str | None = "auto") -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    images = pipe(image, num_inference_steps=2, generator=generator, input_noise_level=input_noise_level).images
    return np.asarray(images[0], np.float64)


@pytest.mark.parametrize("input_noise_level", [0.0, "auto", None], ids=["exact", "default", "estimated"])
def test_clean_input_keeps_exact_consistency(tiny_pipeline, input_noise_level):
    lr = PIL.Image.fromarray(np.round(smooth_scene(80, 96)).astype(np.uint8))  # large enough to estimate
    out = _upscale(tiny_pipeline, lr, input_noise_level)
    error = np.abs(np.asarray(bicubic_down(PIL.Image.fromarray(out.astype(np.uint8))), np.float64)
                   - np.asarray(lr, np.float64)).mean()
    assert error <= 0.5


def test_noisy_flat_input_comes_back_no_noisier_than_bicubic(tiny_pipeline):
    """A flat frame with sensor noise and stripes, with the default settings: random weights make texture, the
    step must not keep it nor copy the noise; the output's spread around the level is at most bicubic's."""
    rng = np.random.default_rng(4)
    noisy = 100 + rng.normal(0, 3.0, (80, 96)) + rng.normal(0, 1.5, 96)[None, :]
    lr = PIL.Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    generator = torch.Generator().manual_seed(0)
    out = np.asarray(tiny_pipeline(lr, num_inference_steps=2, generator=generator).images[0], np.float64)
    bicubic = np.asarray(bicubic_up(lr), np.float64)
    inner = (slice(8, -8), slice(8, -8))
    assert out[inner].std() <= bicubic[inner].std()
    assert abs(out.mean() - 100) <= 1.0


def test_radiometric_frames_keep_exact_consistency_by_default(tiny_pipeline):
    """A noisy 16-bit frame in counts: the default reproduces every count (bicubic /4 of the output is the
    input, to float rounding); estimating its noise (``None``) would change the counts by a share of it."""
    from difiisr_dwt.radiometric_eval import bicubic_down as float_down

    rng = np.random.default_rng(6)
    counts = np.round(3500 + 400 * smooth_scene(80, 96) / 255 + rng.normal(0, 20, (80, 96))).astype(np.uint16)
    outputs, errors = {}, {}
    for level in ("auto", 0.0, None):
        outputs[level] = tiny_pipeline(counts, num_inference_steps=1, output_type="np", value_range=(3000.0, 4400.0),
                                       input_noise_level=level, generator=torch.Generator().manual_seed(0)
                                       ).images[0, :, :, 0]
        errors[level] = np.abs(float_down(outputs[level].astype(np.float64)) - counts).mean()
    np.testing.assert_allclose(outputs["auto"], outputs[0.0], atol=1e-3)  # counts: the exact step
    assert errors["auto"] <= 0.5, errors  # counts, against noise of sigma 20
    assert errors[None] >= 10 * errors["auto"], errors  # the estimate would remove noise here


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
        "input_noise_level"] == "auto"
    assert apply_sampling_arguments(Pipe(), parser.parse_args(["--input-noise-level", "estimate"]))[
        "input_noise_level"] is None
    assert apply_sampling_arguments(Pipe(), parser.parse_args(["--input-noise-level", "2.5"]))[
        "input_noise_level"] == 2.5
    for bad in ("-1", "nan", "loud"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--input-noise-level", bad])


# ------------------------------------------------------------------------------ shared validation images
VALIDATION_SETS = {  # name -> (HR folder, file list) under shared/data/ir
    "roadscene_val": ("roadscene", "roadscene_val.txt"), "mixed_val": (".", "mixed_val.txt"), "tno": ("tno", None)}


def _validation_lr(shared_dir, name: str):
    """``(clean, noisy)`` LR luma tensors in [-1, 1] of a validation set, made as ``difiisr-dwt eval`` makes them
    (PIL bicubic /4; ``--noisy-lr``: :class:`~difiisr_dwt.evaluation.SensorNoise`)."""
    from difiisr_dwt.evaluation import SensorNoise, list_hr, load_8bit, make_lr
    from difiisr_dwt.pipelines.image_processor import IRImageProcessor

    folder, file_list = VALIDATION_SETS[name]
    root = shared_dir / "data/ir"
    if not (root / folder).is_dir():
        pytest.skip(f"{root / folder} not present")
    processor, noise = IRImageProcessor(scale_factor=4), SensorNoise()
    for path in list_hr(root / folder, None if file_list is None else root / file_list):
        hr = load_8bit(path)
        yield tuple(processor.preprocess(make_lr(hr, path.name, kind)[1])[0][0].mean(0, keepdim=True)[None]
                    for kind in (None, noise))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VALIDATION_SETS))
def test_default_estimate_keeps_clean_validation_inputs_and_finds_the_noisy_protocol(shared_dir, name):
    """With the pipeline's clean level, the estimate (the default on 8-bit frames) leaves every clean LR within
    0.5 grey level (mean) of itself, the acceptance's LR error, and finds the noise of ``eval --noisy-lr`` in
    every noisy LR, whose target is then closer to the clean LR (mean squared error)."""
    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline

    clean_level = DifIISRDWTPipeline.clean_noise_level / GREY
    moved, found, mse_ratio, too_small = [], [], [], []
    for clean, noisy in _validation_lr(shared_dir, name):
        target, _ = noise_free_target(clean, clean_level)
        moved.append(float((target - clean).abs().mean()) * GREY)
        denoised, model = noise_free_target(noisy, clean_level)
        if ((clean.shape[-2] - 2) // 12) * ((clean.shape[-1] - 2) // 12) < 40:  # under 40 blocks of 12: no estimate
            too_small.append(float(model.excess_noise_level))
            continue
        found.append(float(model.excess_noise_level) * GREY)
        mse_ratio.append(float((denoised - clean).square().mean() / (noisy - clean).square().mean()))
    assert max(moved) <= 0.5, moved
    assert min(found) > 0.5, found  # grey levels of excess noise (the protocol adds sigma 2)
    assert np.mean(mse_ratio) < 0.85, mse_ratio
    assert len(too_small) <= 3 and not any(too_small), too_small  # tno/: 07 (64x64 LR), 19 and 20 (90x67)
