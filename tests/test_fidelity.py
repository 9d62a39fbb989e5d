"""Fidelity mechanisms of the pipeline, with tiny random components: back-projection onto the input,
no invented texture on flat input, GroupNorm statistics shared across tiles, colour and frames.

Random weights cannot show how faithful the real model is (``test_default_model.py`` does); these
tests pin the mechanisms: each one would fail if the mechanism were removed.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import PIL.Image
import pytest
import torch
from test_pipeline import run, smooth_image

from difiisr_dwt.evaluation import bicubic_down, bicubic_up
from difiisr_dwt.metrics import psnr
from difiisr_dwt.pipelines.fidelity import back_project, shrink_flat_detail
from difiisr_dwt.pipelines.image_processor import bicubic_resize
from difiisr_dwt.pipelines.tiling import GroupNormStatistics, blend_tiles, tiled_with_shared_norms


def test_bicubic_resize_matches_pil_bicubic():
    """The degradation the pipeline projects onto is the evaluation protocol's (PIL bicubic /4)."""
    image = smooth_image(64, 80)
    ours = bicubic_resize(torch.from_numpy(image.copy()).float()[None, None] / 255, (16, 20))[0, 0].numpy() * 255
    pil = np.asarray(bicubic_down(PIL.Image.fromarray(image)), np.float64)
    assert np.abs(ours - pil).max() < 1.0  # PIL rounds to uint8


@pytest.mark.parametrize("sizes", [((160, 4), (40, 1)), ((2, 2), (8, 1)), ((40, 1), (160, 4)), ((16, 16), (64, 1)),
                                   ((5, 7), (1, 1)), ((4, 160), (1, 40))])
def test_bicubic_resize_matches_pil_for_one_pixel_wide_images(sizes):
    """torch's antialiased bicubic kernel gets a one-pixel-wide output wrong (0.28 of the range off PIL on the
    first case); a 40x1 input then came back from the pipeline with its levels 119 grey levels off."""
    (height, width), (out_height, out_width) = sizes
    image = np.random.default_rng(0).random((height, width)).astype(np.float32)
    pil = np.asarray(PIL.Image.fromarray(image, mode="F").resize((out_width, out_height), PIL.Image.BICUBIC))
    for dtype in (torch.float32, torch.float64):
        ours = bicubic_resize(torch.from_numpy(image).to(dtype)[None, None], (out_height, out_width))
        assert ours.dtype == dtype
        assert np.abs(ours[0, 0].numpy() - pil).max() < 1e-5


def test_one_pixel_wide_images_keep_their_levels(tiny_pipeline):
    ramp = (np.arange(40) * 3 + 60).astype(np.uint8)
    for column in (ramp[:, None], ramp[None, :]):
        sr = run(tiny_pipeline, PIL.Image.fromarray(column), num_inference_steps=2)[0]
        assert sr.size == (column.shape[1] * 4, column.shape[0] * 4)
        assert np.abs(np.asarray(bicubic_down(sr), float) - column).mean() <= 0.5


def test_back_projection_makes_the_output_consistent_with_its_input():
    lr = torch.from_numpy(smooth_image(24, 32).copy()).float()[None, None] / 127.5 - 1
    sr = torch.rand(1, 1, 96, 128) * 2 - 1  # anything: noise far from the input
    before = (bicubic_resize(sr, (24, 32)) - lr).abs().mean()
    after = (bicubic_resize(back_project(sr, lr, 10), (24, 32)) - lr).abs().mean()
    assert before > 0.1 and after * 127.5 < 0.15  # from 17 grey levels to well under one
    assert torch.equal(back_project(sr, lr, 0), sr)


def test_bounded_back_projection_stays_in_range_and_beats_clipping_afterwards():
    """POCS: projecting onto [-1, 1] in every round leaves less LR error than clipping the unbounded result (what
    an 8-bit output's 0..255 did), on an input that saturates at both ends."""
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(32.0), indexing="ij")
    lr = (2 * torch.sin(xx / 3) * torch.cos(yy / 4)).clamp(-1, 1)[None, None]  # hot and cold objects clipped
    assert ((lr.abs() == 1).float().mean()) > 0.2
    sr = bicubic_resize(lr, (96, 128))
    clipped = back_project(sr, lr, 10).clamp(-1, 1)
    bounded = back_project(sr, lr, 10, (torch.tensor([-1.0]), torch.tensor([1.0])))
    assert bounded.min() >= -1 and bounded.max() <= 1

    def error(x):
        return (bicubic_resize(x, (24, 32)) - lr).abs().mean() * 127.5

    assert error(bounded) < 0.5 * error(clipped), (error(bounded), error(clipped))
    unbounded = (-torch.tensor([float("inf")]), torch.tensor([float("inf")]))
    assert torch.equal(back_project(sr, lr, 10, unbounded), back_project(sr, lr, 10))


def test_flat_detail_is_shrunk_and_structure_kept():
    flat = torch.full((1, 3, 8, 8), 0.2)
    texture = torch.rand(1, 3, 32, 32) * 0.2
    assert torch.allclose(shrink_flat_detail(0.2 + texture, flat, 2 / 127.5), torch.full((1, 3, 32, 32), 0.2))
    edges = torch.from_numpy(np.kron(np.eye(2), np.ones((4, 4)))).float().expand(1, 3, 8, 8) * 2 - 1
    sr = bicubic_resize(edges, (32, 32)) + texture
    kept = shrink_flat_detail(sr, edges, 2 / 127.5) - bicubic_resize(edges, (32, 32))
    assert (kept - texture)[..., 12:20, :].abs().max() < 0.02  # at the edges the detail passes


def test_flat_frames_stay_flat_at_their_level(tiny_pipeline):
    """Random weights make any texture; the output must still be the input's level, flat."""
    for level in (0, 40, 128, 220, 255):
        out = np.asarray(run(tiny_pipeline, PIL.Image.new("L", (20, 16), level), num_inference_steps=2)[0], float)
        assert abs(out.mean() - level) <= 0.5 and out.std() <= 0.5, level
    raw = run(tiny_pipeline, PIL.Image.new("L", (20, 16), 128), num_inference_steps=2, lr_consistency=False)[0]
    assert np.asarray(raw, float).std() > 1  # without it the random model is not flat: the check can fail


def test_output_agrees_with_input(tiny_pipeline):
    lr = PIL.Image.fromarray(smooth_image(24, 32))
    for consistency in (True, False):
        sr = run(tiny_pipeline, lr, num_inference_steps=2, lr_consistency=consistency)[0]
        error = np.abs(np.asarray(bicubic_down(sr), float) - np.asarray(lr, float)).mean()
        assert (error <= 0.5) == consistency, (consistency, error)


def test_shared_group_norm_statistics_remove_tile_differences():
    """A conv net whose only non-local operation is GroupNorm: with shared statistics its tiles agree
    with the whole-image run; with per-tile statistics they do not."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(),
        torch.nn.Conv2d(8, 3, 3, padding=1),
    )
    x = torch.nn.functional.interpolate(torch.randn(1, 3, 12, 16), size=(48, 64), mode="bicubic")
    x[..., :, 32:] += 2.0  # halves of different level: per-tile statistics differ most
    with torch.no_grad():
        whole = net(x).numpy()
        plain = blend_tiles(net, x, tile=24, overlap=12, scale=1).numpy()
        shared = tiled_with_shared_norms(net, net, x, tile=24, overlap=12, scale=1).numpy()
        assert np.array_equal(net(x).numpy(), whole)  # outside the contexts the modules are untouched
    value_range = float(whole.max() - whole.min())
    assert psnr(plain, whole, value_range) < 30.0
    assert psnr(shared, whole, value_range) > 40.0


def test_group_norm_statistics_pool_exactly():
    """Pooled over tiles that partition the input, the statistics are the whole input's."""
    norm = torch.nn.GroupNorm(2, 4)
    x = torch.randn(2, 4, 8, 12) * 3 + 1
    stats = GroupNormStatistics(norm)
    with stats.collect():
        norm(x[..., :, :5])
        norm(x[..., :, 5:])
    with stats.apply():
        left = norm(x[..., :, :5])
    assert torch.allclose(left, norm(x)[..., :, :5], atol=1e-5)


def _saturation(image: PIL.Image.Image) -> float:
    return float(np.asarray(image.convert("HSV"), float)[..., 1].mean())


def test_pseudo_colour_keeps_its_colour(tiny_pipeline):
    grey = smooth_image(24, 32)
    try:
        from matplotlib import colormaps

        colour = (colormaps["inferno"](grey / 255.0)[..., :3] * 255).astype(np.uint8)
    except ImportError:  # an ironbow-like ramp without matplotlib
        colour = np.stack([grey, (grey.astype(int) * 3 // 4).astype(np.uint8), 255 - grey], axis=2)
    lr = PIL.Image.fromarray(colour)
    sr = run(tiny_pipeline, lr, num_inference_steps=2)[0]
    assert sr.mode == "RGB" and sr.size == (128, 96)
    assert _saturation(sr) >= 0.8 * _saturation(bicubic_up(lr))
    # grey stored as RGB stays grey, and the same as the L input
    grey_rgb = run(tiny_pipeline, PIL.Image.fromarray(np.stack([grey] * 3, axis=2)), num_inference_steps=2)[0]
    grey_l = run(tiny_pipeline, PIL.Image.fromarray(grey), num_inference_steps=2)[0]
    rgb = np.asarray(grey_rgb, int)
    assert np.abs(rgb - rgb[..., :1]).max() <= 1
    assert np.abs(rgb[..., 0] - np.asarray(grey_l, int)).max() <= 1


def test_multi_frame_images_are_refused_with_their_frame_count(tiny_pipeline):
    frames = [PIL.Image.fromarray(smooth_image(8, 8, seed=s)) for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    with PIL.Image.open(buffer) as image:
        with pytest.raises(ValueError, match="has 3 frames"):
            tiny_pipeline(image, num_inference_steps=1)
        from PIL import ImageSequence

        outs = tiny_pipeline([f.copy() for f in ImageSequence.Iterator(image)], num_inference_steps=1).images
    assert len(outs) == 3


def test_grey_palette_stays_grey_and_colour_palette_stays_colour(tiny_pipeline):
    grey = PIL.Image.fromarray(smooth_image(8, 8)).convert("P")
    assert run(tiny_pipeline, grey, num_inference_steps=1)[0].mode == "L"
    colour = PIL.Image.fromarray(np.stack([smooth_image(8, 8), smooth_image(8, 8, 1), smooth_image(8, 8, 2)], 2))
    assert run(tiny_pipeline, colour.convert("P"), num_inference_steps=1)[0].mode == "RGB"


def test_back_projection_keeps_its_input():
    lr, sr = torch.zeros(1, 1, 4, 4), torch.rand(1, 1, 16, 16)
    before = sr.clone()
    back_project(sr, lr, 3)
    assert torch.equal(sr, before)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (290.0, 300.0)], ids=["all-outside", "partly-outside"])
def test_values_outside_the_value_range_come_back_as_readings(tiny_pipeline, value_range, caplog):
    """A value_range narrower than the data: the model saw those pixels clamped, so the output starts from the
    bicubic upscale there; before, the clamped model output was kept and a 276..299 K frame under (0, 1) came
    back with readings from 18 to 561 K."""
    kelvin = (275.0 + 24 * smooth_image(80, 96) / 255).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        out = tiny_pipeline(kelvin, value_range=value_range, num_inference_steps=2, output_type="np",
                            generator=torch.Generator().manual_seed(0)).images[0, :, :, 0]
    # said when no value is inside (e.g. a range in degrees Celsius for kelvin data): the model does nothing
    said = [r.getMessage() for r in caplog.records if "lie outside value_range" in r.getMessage()]
    inside = value_range[0] <= kelvin.max() and kelvin.min() <= value_range[1]
    assert said == ([] if inside else [
        f"image 0: all its values ({kelvin.min():g}..{kelvin.max():g}) lie outside value_range ({value_range[0]:g}, "
        f"{value_range[1]:g}): the model sees a constant frame and the output is the bicubic upscale; check the "
        "range's units"]), said
    bicubic = bicubic_resize(torch.from_numpy(kelvin)[None, None], out.shape)[0, 0].numpy()
    outside = (bicubic < value_range[0]) | (bicubic > value_range[1])
    assert outside.mean() > 0.3
    assert np.abs(out - bicubic)[outside].max() < 2.0  # K, over a 24 K span: back-projection's detail only
    lr_error = np.abs(bicubic_resize(torch.from_numpy(out)[None, None], kelvin.shape)[0, 0].numpy() - kelvin)
    assert lr_error.mean() < 0.01
