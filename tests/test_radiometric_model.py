"""Temperature fidelity of the REAL default model (hub/difiisr-dwt-tiny) on radiometric frames, in their units.

A random-weight model cannot drift in a meaningful way, so these run the embedded model, on small crops.

The Celsius frames are made from the 16-bit Thermitage frames by the linear mapping
``T [degC] = 0.01 * counts - 20`` (an illustrative calibration, not the camera's: it puts the night facade at
13..24 degC); the float TIFF keeps these values exactly as float32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from difiisr_dwt import DEFAULT_MODEL
from difiisr_dwt.cli import main
from difiisr_dwt.metrics import high_frequency_rms
from difiisr_dwt.radiometric import read_radiometric, sequence_value_range
from difiisr_dwt.radiometric_eval import bicubic_down, bicubic_up

pytestmark = pytest.mark.slow
FLIR_JPEG = Path(__file__).resolve().parent / "data" / "flir_ax8.jpg"
CROP = (slice(200, 232), slice(296, 336))  # a 40x32 LR crop with the facade's edges and windows


def celsius(counts: np.ndarray) -> np.ndarray:
    """The documented linear mapping of the test data: ``0.01 * counts - 20`` degrees Celsius, float32."""
    return (counts.astype(np.float64) * 0.01 - 20.0).astype(np.float32)


@pytest.fixture(scope="module")
def thermitage(shared_dir) -> list[Path]:
    frames = sorted((shared_dir / "data/ir/thermitage16").glob("*.tiff"))
    if not frames:
        pytest.skip("shared/data/ir/thermitage16 holds no frames")
    return frames


@pytest.fixture(scope="module")
def pipe():
    from difiisr_dwt.loading import load_pipeline

    pipeline = load_pipeline(DEFAULT_MODEL, device="cpu")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_counts_and_celsius_tiffs_come_back_in_type_units_and_tags(thermitage, tmp_path):
    """Every Thermitage frame (a crop), as 16-bit counts and as float32 degC, and the FLIR R-JPEG: the CLI gives
    the same type and units back, with the tags, and bicubic_down(SR) reproduces the input within 2 counts /
    0.02 K on every frame."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in thermitage:
        source = read_radiometric(path)
        crop = source.frames[0][CROP]
        for name, values in ((f"{path.stem}_counts.tif", crop), (f"{path.stem}_degC.tif", celsius(crop))):
            tifffile.imwrite(folder / name, values, extratags=source.extratags, software=source.software,
                             metadata=None)
    shutil.copy(FLIR_JPEG, folder / "flir_ax8.jpg")
    has_flyr = _has_flyr()
    if not has_flyr:
        (folder / "flir_ax8.jpg").unlink()
    code = main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--batch-size", "11", "--device", "cpu"])
    assert code == 0
    errors = {}
    for path in sorted(folder.glob("*.tif")):
        before, after = read_radiometric(path), read_radiometric(tmp_path / "out" / f"{path.stem}_x4.tif")
        assert after.dtype == before.dtype and after.unit == before.unit
        assert after.frames[0].shape == (before.frames[0].shape[0] * 4, before.frames[0].shape[1] * 4)
        assert sorted(after.extratags) == sorted(before.extratags) and after.software == before.software
        errors[path.name] = np.abs(bicubic_down(after.frames[0]) - before.frames[0]).mean()
    counts = [e for n, e in errors.items() if n.endswith("_counts.tif")]
    kelvin = [e for n, e in errors.items() if n.endswith("_degC.tif")]
    assert len(counts) == len(kelvin) == len(thermitage)
    assert max(counts) <= 2.0, errors  # the output is rounded to whole counts: ~0.25 of this is rounding
    assert max(kelvin) <= 0.02, errors
    if has_flyr:
        lr = read_radiometric(FLIR_JPEG).frames[0]
        sr = read_radiometric(tmp_path / "out" / "flir_ax8_x4.tif")
        assert sr.unit == "as input" and json.loads(sr.description)["unit"] == "degC"  # a float TIFF in degC
        assert np.abs(bicubic_down(sr.frames[0]) - lr).mean() <= 0.02


def test_flat_frames_come_back_at_their_temperature(pipe, thermitage):
    """With one range for every frame (given, or the sequence default), a flat frame at any temperature inside
    it comes back at that temperature: |mean - T| <= 0.02 K and std <= 0.02 K; the counts alike."""
    sequence = [celsius(read_radiometric(p).frames[0]) for p in thermitage]
    for value_range in ((10.0, 40.0), sequence_value_range(sequence)):
        low, high = value_range
        temperatures = [low + f * (high - low) for f in (0.02, 0.31, 0.5, 0.77, 0.98)]
        frames = [np.full((16, 20), t, np.float32) for t in temperatures]
        out = pipe(frames, output_type="np", value_range=value_range).images[..., 0]
        for t, sr in zip(temperatures, out):
            assert abs(sr.mean() - t) <= 0.02 and sr.std() <= 0.02, (value_range, t, sr.mean(), sr.std())
    counts = [np.full((16, 20), c, np.uint16) for c in (3012, 3650, 4321)]
    out = pipe(counts, output_type="np", value_range=(3000.0, 4400.0)).images[..., 0]
    for frame, sr in zip(counts, out):
        assert abs(sr.mean() - frame[0, 0]) <= 0.02 and sr.std() <= 0.02


def test_values_outside_the_range_are_restored(pipe, thermitage):
    """A crop whose values straddle the range: the pixels outside it come back (the fidelity step works in
    float), not held at its ends."""
    lr = celsius(read_radiometric(thermitage[0]).frames[0][CROP])
    low, high = np.percentile(lr, (25, 75))
    sr = pipe(lr, output_type="np", value_range=(float(low), float(high))).images[0, :, :, 0]
    assert sr.min() < low - 0.1 and sr.max() > high + 0.1
    assert np.abs(bicubic_down(sr) - lr).mean() <= 0.02


def test_noisy_flat_crop_gets_no_more_detail_than_on_clean_inputs(pipe, thermitage, shared_dir):
    """The flirpy frame's 48-count crop (x 240..400, y 200..328), with the frame's sequence-default range and
    the noise-aware fidelity step (``input_noise_level=None``, the CLI's ``--input-noise-level auto``).

    Measure: :func:`high_frequency_rms` (RMS of the output minus its Gaussian blur, sigma 2 px), in counts.
    The model's clean-input share: its detail over bicubic's, ``share = rms(SR) / rms(bicubic)``, on clean LR
    of the same kind of scene (Thermitage frames, LR = bicubic /4 in float, so the sensor noise is averaged
    away). The crop must not get more: ``rms(SR_crop) <= share * rms(bicubic_crop)``.
    """
    source = shared_dir / "data/ir/flirpy/example_radiometric.tiff"
    if not source.is_file():
        pytest.skip(f"{source} not present")
    frame = read_radiometric(source).frames[0]
    crop = frame[200:328, 240:400]
    assert int(crop.max()) - int(crop.min()) == 48
    sr = pipe(crop, output_type="np", value_range=sequence_value_range([frame]),
              input_noise_level=None).images[0, :, :, 0]
    clean = [read_radiometric(p).frames[0][128:384, 160:480].astype(np.float64) for p in thermitage[:2]]
    clean_range = sequence_value_range(clean)
    ratios = []
    for hr in clean:
        lr = bicubic_down(hr)
        clean_sr = pipe(lr.astype(np.float32), output_type="np", value_range=clean_range).images[0, :, :, 0]
        ratios.append(high_frequency_rms(clean_sr) / high_frequency_rms(bicubic_up(lr)))
    share = float(np.mean(ratios))
    assert high_frequency_rms(sr) <= share * high_frequency_rms(bicubic_up(crop.astype(np.float64)))


def test_eval_reports_radiometric_fidelity_in_counts(thermitage, tmp_path, capsys):
    folder = tmp_path / "hr"
    folder.mkdir()
    for path in thermitage[:2]:
        tifffile.imwrite(folder / path.name, read_radiometric(path).frames[0][192:256, 256:320])
    code = main(["eval", "--hr", str(folder), "--json", str(tmp_path / "r.json"), "--device", "cpu"])
    assert code == 0
    assert "LR error (counts)" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["unit"] == "counts"
    model, bicubic = report["methods"]["model"]["max"], report["methods"]["bicubic"]["max"]
    assert model["lr_error"] <= 2.0 and model["mean_shift"] <= 2.0
    assert bicubic["lr_error"] > model["lr_error"]  # bicubic x4 then /4 does not give its input back
    assert set(model) == {"lr_error", "mean_shift", "hr_mae", "hr_rmse", "detail_rms"}


def _has_flyr() -> bool:
    try:
        import flyr  # noqa: F401
    except ImportError:
        return False
    return True
