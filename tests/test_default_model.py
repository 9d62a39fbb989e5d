"""The embedded default model (``hub/difiisr-dwt-tiny``) on one real 160x128 example frame, on CPU.

The release is part of the repository, so a missing model fails here rather than skipping. The quality
check compares against the HR frame in ``../shared`` and skips without it; the LR-consistency check does not
need it. Thresholds sit well below what the released model measured on this frame (see each test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt import DEFAULT_MODEL
from difiisr_dwt.evaluation import bicubic_down, bicubic_up
from difiisr_dwt.loading import load_pipeline
from difiisr_dwt.metrics import lpips_distance, psnr, psnr_y
from difiisr_dwt.pipelines.image_processor import bicubic_resize

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "images" / "FLIR_08954_lr.png"  # PIL bicubic /4 of roadscene/FLIR_08954.png

pytestmark = pytest.mark.slow  # default calls on 160x128 and 256x204 frames, small flat frames

# Measured for the released model (seed 0, 15 steps) on this frame: SR /4 vs LR 42.5 dB PSNR_Y (bicubic x4 then /4
# gives 40.6 dB); LPIPS-alex 0.187 vs bicubic 0.440; PSNR_Y 29.54 vs bicubic 29.67 dB.
CONSISTENCY_MIN = 40.0
LPIPS_MARGIN = 0.1
PSNR_SLACK = 1.0


@pytest.fixture(scope="module")
def pipe():
    assert (Path(DEFAULT_MODEL) / "model_index.json").is_file(), f"embedded default model missing: {DEFAULT_MODEL}"
    pipe = load_pipeline(None, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def lr() -> PIL.Image.Image:
    with PIL.Image.open(EXAMPLE) as image:
        return image.copy()


@pytest.fixture(scope="module")
def sr(pipe, lr) -> PIL.Image.Image:
    """The default call, seed 0."""
    return pipe(lr, generator=torch.Generator().manual_seed(0)).images[0]


def _upscale(pipe, lr, seed: int, steps: int) -> np.ndarray:
    image = pipe(lr, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)).images[0]
    return np.asarray(image)


def test_output_is_x4_grayscale(lr, sr):
    assert lr.size == (160, 128) and lr.mode == "L"
    assert sr.size == (640, 512)
    assert sr.mode == "L"


def test_fixed_seed_is_deterministic(pipe, lr):
    crop = lr.crop((0, 0, 64, 64))  # keeps the three runs to about a second each
    first = _upscale(pipe, crop, seed=3, steps=1)
    assert first.shape == (256, 256)
    assert np.array_equal(first, _upscale(pipe, crop, seed=3, steps=1))
    # The seed is actually used: the sampler starts from LR + noise, so another seed gives another image.
    assert not np.array_equal(first, _upscale(pipe, crop, seed=4, steps=1))


def test_sr_is_consistent_with_its_lr(lr, sr):
    """Bicubic /4 of the SR must give back the LR closely (the model invents detail, not content)."""
    lr_array = np.asarray(lr)
    back = np.asarray(bicubic_down(sr))
    assert back.shape == lr_array.shape
    assert psnr_y(back, lr_array) > CONSISTENCY_MIN


def test_sr_beats_bicubic_perceptually_without_losing_fidelity(shared_dir, lpips_weights, lr, sr):
    hr_path = shared_dir / "data" / "ir" / "roadscene" / "FLIR_08954.png"
    with PIL.Image.open(hr_path) as image:
        hr = np.asarray(image.convert("L"))
    assert np.array_equal(np.asarray(bicubic_down(PIL.Image.fromarray(hr))), np.asarray(lr)), "example LR != HR /4"
    bicubic = np.asarray(bicubic_up(lr))
    sr = np.asarray(sr)
    sr_lpips = lpips_distance(sr, hr, "alex", lpips_weights)
    bicubic_lpips = lpips_distance(bicubic, hr, "alex", lpips_weights)
    assert sr_lpips < bicubic_lpips - LPIPS_MARGIN
    assert psnr_y(sr, hr) > psnr_y(bicubic, hr) - PSNR_SLACK


def _band_offsets(a: np.ndarray, b: np.ndarray, band: int = 32) -> float:
    """Largest |mean difference| over the 32-pixel row and column bands (where tile seams would show)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    rows = [diff[i : i + band].mean() for i in range(0, diff.shape[0], band)]
    cols = [diff[:, j : j + band].mean() for j in range(0, diff.shape[1], band)]
    return float(np.abs(rows + cols).max())


def test_tiling_is_seamless_on_the_real_model(pipe):
    """A 256x204 LR (1024x816 out): the default call (decode tiled at 128 latent px, GroupNorm statistics
    shared) and UNet tiling at 64 LR px each match the whole-image run (>= 40 dB, bands within 1 grey level).
    Measured at release: 49.9 dB / 0.08 and 48.9 dB / 0.08."""
    with PIL.Image.open(EXAMPLE) as image:
        lr = image.resize((256, 204), PIL.Image.BICUBIC)
    def call():
        return np.asarray(pipe(lr, generator=torch.Generator().manual_seed(0)).images[0])

    default = call()
    pipe.disable_decode_tiling()
    try:
        whole = call()
        pipe.enable_unet_tiling(tile_size=64, tile_overlap=16)
        unet_tiled = call()
    finally:
        pipe.disable_unet_tiling()
        pipe.enable_decode_tiling()
    assert default.shape == whole.shape == (816, 1024)
    for tiled in (default, unet_tiled):
        assert psnr(tiled.astype(np.float64), whole.astype(np.float64), 255.0) >= 40.0
        assert _band_offsets(tiled, whole) <= 1.0


def test_window_attention_is_the_default_and_close_to_global_attention(pipe, lr):
    """The release config runs the UNet's attention within windows of 32x32 LR pixels (8x8 tokens of its
    attention maps at 1/4; this 160x128 frame's maps are 40x32: 20 windows) and the output stays close to global
    attention's on the same frame (measured at release: 53.1 dB, 0.0001 grey level of mean difference). This
    model's attention layers move its output little (even a scrambled window layout stays above 50 dB), so what
    each window computes is checked on its own in tests/test_attention.py; here: the default is on, and it
    moves no level."""
    from diffusers.models.attention_processor import Attention

    from difiisr_dwt.pipelines.attention import WindowAttnProcessor

    assert pipe.config.unet_attention_window == pipe.unet_attention_window == 32
    layers = [m for m in pipe.unet.modules() if isinstance(m, Attention)]
    assert layers and all(isinstance(m.processor, WindowAttnProcessor) and m.processor.window_size == 8
                          for m in layers)
    windowed = _upscale(pipe, lr, seed=0, steps=3).astype(np.float64)
    pipe.disable_unet_window_attention()
    try:
        global_attention = _upscale(pipe, lr, seed=0, steps=3).astype(np.float64)
    finally:
        pipe.enable_unet_window_attention(32)
    assert psnr(windowed, global_attention, 255.0) >= 45.0
    assert abs(windowed.mean() - global_attention.mean()) <= 0.1


@pytest.mark.parametrize("level", [0, 40, 128, 220, 255])
def test_flat_frames_keep_their_level(pipe, level):
    """A constant frame is a constant temperature: it comes back at its level, flat."""
    out = np.asarray(pipe(PIL.Image.new("L", (160, 128), level), generator=torch.Generator().manual_seed(0)).images[0])
    assert abs(out.mean() - level) <= 1.0 and out.std() <= 1.0


def test_saturated_frames_keep_their_consistency(pipe, lr):
    """An AGC'd frame whose hot objects saturate at 255 (and cold ones at 0): the fidelity step's rounds
    overshot 0..255 and the 8-bit output's clip undid them (mean LR error 1.35 grey levels on this crop, 1341 of
    its 5120 LR pixels off by more than 1). The rounds now stay within 0..255 (POCS)."""
    saturated = np.clip(np.asarray(lr, np.int32)[:64, :80] * 3 - 200, 0, 255).astype(np.uint8)
    assert (saturated == 255).mean() > 0.05 and (saturated == 0).mean() > 0.05
    out = pipe(PIL.Image.fromarray(saturated), generator=torch.Generator().manual_seed(0)).images[0]
    error = np.abs(np.asarray(bicubic_down(out), np.float64) - saturated)
    assert error.mean() <= 0.5 and (error > 1).mean() < 0.1, (error.mean(), (error > 1).mean())


def test_a_hot_pixel_in_a_16_bit_frame_is_reproduced_more_closely(pipe):
    """A 16-bit frame with one defective (hot) pixel: reproducing the spike needs a ring of negative bicubic lobes
    around it, which the rounds pushed below 0 counts; the clip at 0 then left 1320 counts of LR error there. Kept
    within 0..65535 during the rounds, the largest error is 349 counts. The ring itself still reaches 0 counts
    (README, fidelity step: replace defective pixels first)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    raw = (4000 + 300 * np.sin(xx / 6) * np.cos(yy / 5) + rng.normal(0, 10, (64, 80))).astype(np.uint16)
    raw[32, 40] = 30000
    out = np.asarray(pipe(PIL.Image.fromarray(raw), generator=torch.Generator().manual_seed(0)).images[0],
                     np.float64)
    error = np.abs(bicubic_resize(torch.from_numpy(out)[None, None], raw.shape)[0, 0].numpy() - raw)
    assert error.max() <= 600, error.max()
    error[30:35, 38:43] = 0  # the defect and its ring
    assert error.max() <= 60, error.max()  # the rest of the frame keeps its levels
