"""Radiometric files: read in their units, written back in their type with their tags; the fixed intensity
mapping (``value_range`` / ``--range``) through the pipeline. Fast tests (random-weight model or none);
the real model's temperature fidelity is in test_radiometric_model.py."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tifffile
import torch

from difiisr_dwt.cli import main
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import ImageReadError
from difiisr_dwt.metrics import high_frequency_rms
from difiisr_dwt.radiometric import (
    is_flir_jpeg,
    parse_value_range,
    preview_path,
    read_radiometric,
    sequence_value_range,
    write_radiometric,
)

DATA = Path(__file__).resolve().parent / "data"
FLIR_JPEG = DATA / "flir_ax8.jpg"
# Tags as a thermal camera writes them: make, model, software, serial, a date, a private calibration tag
CAMERA_TAGS = [
    (271, 2, 10, "Workswell", True), (272, 2, 10, "WIRIS Pro", True),
    (36867, 2, 20, "2023:10:15 22:18:41", True), (50735, 2, 16, "1017-WWP-190408", True),
    (65000, 12, 2, (0.01, -20.0), True),  # a private tag: e.g. a linear calibration, gain and offset
]


def _tags(path: Path) -> dict[str, object]:
    with tifffile.TiffFile(path) as tif:
        return {tag.name: tag.value for tag in tif.pages[0].tags.values()}


def _camera_tiff(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array, extratags=CAMERA_TAGS, software="1.6.51", resolution=(72.0, 72.0),
                     resolutionunit=2, description="frame 7 of a facade survey", metadata=None)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_tiff_round_trip_keeps_type_units_and_tags(tmp_path, dtype):
    rng = np.random.default_rng(0)
    values = 3000 + rng.random((12, 16)) * 400 if dtype == np.uint16 else 15 + rng.random((12, 16)) * 10
    _camera_tiff(tmp_path / "in.tif", values.astype(dtype))
    image = read_radiometric(tmp_path / "in.tif")
    assert image.dtype == dtype and image.unit == ("counts" if dtype == np.uint16 else "as input")
    np.testing.assert_array_equal(image.frames[0], values.astype(dtype))
    up = np.kron(image.frames[0].astype(np.float64), np.ones((4, 4))) + 0.3  # an "output" off the input grid
    write_radiometric(tmp_path / "out.tif", [up], image)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        out = tif.pages[0].asarray()
    assert out.dtype == dtype and out.shape == (48, 64)
    expected = np.round(up) if dtype == np.uint16 else up
    np.testing.assert_allclose(out, expected.astype(dtype), rtol=0, atol=1e-4)
    before, after = _tags(tmp_path / "in.tif"), _tags(tmp_path / "out.tif")
    for name in ("Make", "Model", "Software", "DateTimeOriginal", "CameraSerialNumber", "ImageDescription", "65000"):
        assert after[name] == before[name], name
    assert after["XResolution"] == (288, 1) and after["ResolutionUnit"] == 2  # same area, 4x the pixels


def test_exif_entries_are_carried_and_tifffile_shape_description_dropped(tmp_path, shared_dir):
    source = shared_dir / "data/ir/thermitage16/22-18-41-880-radiometric.tiff"
    if not source.is_file():
        pytest.skip(f"{source} not present")
    image = read_radiometric(source)
    write_radiometric(tmp_path / "out.tif", [np.zeros((2048, 2560))], image)
    before, after = _tags(source), _tags(tmp_path / "out.tif")
    assert before["ExifTag"]  # FocalLength, LensModel... live in the EXIF sub-IFD of the input
    for name, value in {**before.pop("ExifTag"), **before}.items():
        if name not in ("ImageWidth", "ImageLength", "StripOffsets", "StripByteCounts", "FillOrder"):  # layout
            assert after[name] == value, name
    tifffile.imwrite(tmp_path / "shaped.tif", np.zeros((4, 4), np.uint16))  # '{"shape": [4, 4]}' description
    write_radiometric(tmp_path / "shaped_x4.tif", [np.zeros((16, 16))], read_radiometric(tmp_path / "shaped.tif"))
    assert "shape" not in str(_tags(tmp_path / "shaped_x4.tif").get("ImageDescription", ""))


def test_lzw_tiff_is_read_without_imagecodecs(shared_dir):
    source = shared_dir / "data/ir/flirpy/example_radiometric.tiff"  # LZW + predictor, as the camera wrote it
    if not source.is_file():
        pytest.skip(f"{source} not present")
    image = read_radiometric(source)
    with PIL.Image.open(source) as pil:
        np.testing.assert_array_equal(image.frames[0], np.asarray(pil))
    assert image.frames[0].dtype == np.uint16 and (image.frames[0].min(), image.frames[0].max()) == (6743, 7077)


def test_16bit_png_counts_round_trip(tmp_path):
    counts = (3000 + np.arange(48).reshape(6, 8) * 7).astype(np.uint16)
    PIL.Image.fromarray(counts).save(tmp_path / "a.png")
    image = read_radiometric(tmp_path / "a.png")
    assert (image.unit, image.source, image.dtype) == ("counts", "png", np.uint16)
    np.testing.assert_array_equal(image.frames[0], counts)
    write_radiometric(tmp_path / "a_x4.png", [np.kron(counts, np.ones((4, 4))) + 0.4], image)
    with PIL.Image.open(tmp_path / "a_x4.png") as out:
        assert out.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(out), np.kron(counts, np.ones((4, 4))))


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_16bit_grey_alpha_tiff_is_read_as_its_grey_counts(tmp_path, planar):
    """A 16-bit grey + alpha TIFF (GIMP, GDAL) is radiometric: its counts, the alpha dropped as for 8-bit LA."""
    grey = (3000 + np.arange(48).reshape(6, 8) * 7).astype(np.uint16)
    alpha = np.full_like(grey, 65535)
    stacked = np.stack([grey, alpha], axis=-1 if planar == "contig" else 0)
    tifffile.imwrite(tmp_path / "la.tif", stacked, photometric="minisblack", extrasamples=["unassalpha"],
                     planarconfig=planar)
    image = read_radiometric(tmp_path / "la.tif")
    assert (image.unit, image.dtype) == ("counts", np.uint16)
    np.testing.assert_array_equal(image.frames[0], grey)


def test_ordinary_pictures_are_not_radiometric(tmp_path):
    PIL.Image.new("L", (8, 8), 7).save(tmp_path / "a.tif")
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    PIL.Image.new("L", (8, 8)).save(tmp_path / "c.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.zeros((8, 8, 3), np.uint16))
    for name in ("a.tif", "b.jpg", "c.png", "rgb16.tif"):
        assert read_radiometric(tmp_path / name) is None
    assert not is_flir_jpeg(tmp_path / "b.jpg") and is_flir_jpeg(FLIR_JPEG)


def test_bad_radiometric_files_raise_clear_errors(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(ImageReadError, match="nan.tif: contains NaN"):
        read_radiometric(tmp_path / "nan.tif")
    (tmp_path / "cut.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match="cut.tif: not a readable TIFF"):
        read_radiometric(tmp_path / "cut.tif")
    with pytest.raises(ImageReadError, match="no such file"):
        read_radiometric(tmp_path / "missing.tif")


def test_flir_jpeg_gives_celsius_with_its_calibration():
    pytest.importorskip("flyr", reason="flyr (the radiometric extra) reads FLIR R-JPEGs")
    image = read_radiometric(FLIR_JPEG)
    frame = image.frames[0]
    assert (image.unit, image.source, frame.dtype, frame.shape) == ("degC", "flir-rjpeg", np.float32, (60, 80))
    assert 24.0 < frame.min() < frame.max() < 26.0  # an indoor scene at room temperature
    record = json.loads(image.description)
    assert record["unit"] == "degC" and record["calibration"]["emissivity"] == pytest.approx(0.95)


#: What the AX8 R-JPEG's EXIF says (IFD0 and the EXIF sub-IFD), as its x4 TIFF must carry it.
FLIR_EXIF = {"Make": "FLIR Systems AB", "Model": "FLIR AX8", "Software": "Flir Cronos",
             "DateTime": "2000:01:01 06:54:26", "DateTimeOriginal": "2000:01:01 06:54:26"}


def test_flir_jpeg_tiff_carries_the_camera_exif(tmp_path):
    """The R-JPEG's float TIFF had none of the input's Make, Model, DateTime, DateTimeOriginal, Software; what
    describes the visible JPEG picture (its size, orientation, colour space) is not carried."""
    pytest.importorskip("flyr")
    image = read_radiometric(FLIR_JPEG)
    write_radiometric(tmp_path / "x4.tif", [np.kron(image.frames[0], np.ones((4, 4)))], image)
    tags = _tags(tmp_path / "x4.tif")
    assert {k: tags.get(k) for k in FLIR_EXIF} == FLIR_EXIF
    assert not {"Orientation", "ExifImageWidth", "ColorSpace", "MakerNote"} & set(tags)
    assert tags["ImageLength"] == 4 * image.frames[0].shape[0]
    assert json.loads(tags["ImageDescription"])["unit"] == "degC"  # the calibration record, not the JPEG's


def test_flir_jpeg_without_flyr_names_the_install(monkeypatch):
    real_import = builtins.__import__

    def no_flyr(name, *args, **kwargs):
        if name == "flyr":
            raise ImportError("No module named 'flyr'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_flyr)
    with pytest.raises(ImageReadError, match=r'flir_ax8.jpg: .*pip install "difiisr-dwt\[radiometric\]"'):
        read_radiometric(FLIR_JPEG)


def test_sequence_value_range_pools_all_frames():
    cold, hot = np.full((100, 100), 10.0), np.full((100, 100), 30.0)
    hot[0, 0] = 1000.0  # one hot pixel must not set the scale
    low, high = sequence_value_range([cold, hot], percentiles=(0.5, 99.5), margin=0.0)
    assert low == pytest.approx(10.0) and high == pytest.approx(30.0)
    assert sequence_value_range([cold], margin=0.1) == (9.5, 10.5)  # flat: a span of 1 around it
    low, high = sequence_value_range([np.array([0.0, 100.0])], percentiles=(0, 100), margin=0.05)
    assert (low, high) == pytest.approx((-5.0, 105.0))
    with pytest.raises(ValueError, match="at least one frame"):
        sequence_value_range([])
    with pytest.raises(ValueError, match="NaN"):
        sequence_value_range([np.array([np.nan, 1.0])])


def test_parse_value_range():
    assert parse_value_range(["290", "310.5"]) == (290.0, 310.5)
    assert parse_value_range(None) is None
    for bad in (["5", "5"], ["10", "2"], ["nan", "3"]):
        with pytest.raises(UsageError, match="--range LOW HIGH"):
            parse_value_range(bad)


def test_high_frequency_rms_sees_texture_not_ramps():
    ramp = np.add.outer(np.arange(40.0), np.arange(40.0))
    checker = ramp + 2.0 * (np.indices((40, 40)).sum(0) % 2)
    assert high_frequency_rms(ramp) < 1e-9
    assert high_frequency_rms(checker) == pytest.approx(1.0, rel=0.05)  # 0/2 alternation: +-1 about its blur


# ------------------------------------------------------------------------------------------------ pipeline
def test_value_range_maps_every_image_alike_and_outputs_in_units(tiny_pipeline):
    low, high = 3000.0, 5000.0
    frames = [np.full((8, 8), 3500, np.uint16), np.full((8, 8), 4500, np.uint16)]
    frames[1][2:5, 2:5] = 3500  # the same temperature in both frames
    items = tiny_pipeline.image_processor.preprocess(frames, (low, high))
    assert items[0][0][0, 0, 0] == pytest.approx(items[1][0][0, 2, 2])  # same model input for the same value
    assert items[0][0][0, 0, 0] == pytest.approx(2 * (3500 - low) / (high - low) - 1)
    out = tiny_pipeline(frames, num_inference_steps=1, output_type="np", value_range=(low, high))
    assert out.value_ranges == [(low, high)] * 2 and out.images.dtype == np.float32
    pil = tiny_pipeline(frames, num_inference_steps=1, value_range=(low, high)).images
    assert [p.mode for p in pil] == ["I;16", "I;16"]


def test_values_outside_the_range_are_kept_not_clipped(tiny_pipeline):
    lr = np.linspace(-5.0, 45.0, 16 * 16, dtype=np.float32).reshape(16, 16)  # range 10..30 covers the middle
    out = tiny_pipeline(lr, num_inference_steps=1, output_type="np", value_range=(10.0, 30.0)).images[0, :, :, 0]
    assert out.min() < 5.0 and out.max() > 35.0  # clipping would hold them at 10 and 30
    pil = tiny_pipeline(PIL.Image.fromarray(lr, mode="F"), num_inference_steps=1, value_range=(10.0, 30.0)).images[0]
    assert pil.mode == "F" and np.asarray(pil).max() > 35.0


@pytest.mark.parametrize("dtype", [np.int32, np.int16])
def test_wider_integer_images_under_a_value_range_come_back_as_32_bit_pil(tiny_pipeline, dtype):
    """An int32 / int16 image with a value_range: PIL mode ``I`` at its levels (it came back as an 8-bit image
    saturated at 255, or with its negative values at 0)."""
    lr = np.linspace(-150, 150, 16 * 16).reshape(16, 16).astype(dtype) + (6900 if dtype == np.int32 else 0)
    low, high = float(lr.min()), float(lr.max())
    for image in (lr, PIL.Image.fromarray(lr.astype(np.int32), mode="I")):  # numpy, and PIL's 32-bit mode
        out = tiny_pipeline(image, num_inference_steps=1, value_range=(low, high)).images[0]
        values = np.asarray(out).astype(np.float64)
        assert out.mode == "I" and out.size == (64, 64)
        assert abs(values.mean() - lr.mean()) < 2 and values.min() < low + 30 and values.max() > high - 30


def test_colour_float_and_tensor_inputs_under_a_value_range(tiny_pipeline):
    """Float RGB in kelvin: PIL has no float RGB, so 8-bit RGB over the range (it was all 255); torch inputs
    under a value_range are checked like the others and may be half precision."""
    kelvin = np.linspace(280.0, 300.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    rgb = tiny_pipeline(np.dstack([kelvin] * 3), num_inference_steps=1, value_range=(270.0, 310.0)).images[0]
    assert rgb.mode == "RGB" and abs(np.asarray(rgb).mean() - 255 * (290 - 270) / 40) < 3
    half = torch.from_numpy(kelvin)[None].bfloat16()
    out = tiny_pipeline(half, num_inference_steps=1, output_type="np", value_range=(270.0, 310.0)).images
    assert out.shape == (1, 64, 64, 1) and abs(out.mean() - 290.0) < 0.5
    for bad, message in ((torch.from_numpy(kelvin), "expected a \\(C, H, W\\)"),
                         (torch.from_numpy(kelvin).expand(4, 16, 16), "expected 1 or 3 channels")):
        with pytest.raises(ValueError, match=message):
            tiny_pipeline(bad, num_inference_steps=1, value_range=(270.0, 310.0))


def test_float_pil_image_uses_its_own_range_by_default(tiny_pipeline):
    lr = PIL.Image.fromarray(np.linspace(290, 300, 64, dtype=np.float32).reshape(8, 8), mode="F")
    out = tiny_pipeline(lr, num_inference_steps=1)
    assert out.images[0].mode == "F" and out.value_ranges == [(290.0, 300.0)]


@pytest.mark.parametrize("bad", [(5.0, 5.0), (3.0, 1.0), (0.0, float("inf")), (1.0,), "ab"])
def test_bad_value_range_raises(tiny_pipeline, bad):
    with pytest.raises(ValueError, match="value_range"):
        tiny_pipeline(np.zeros((8, 8), np.uint16), num_inference_steps=1, value_range=bad)


def test_float_array_outside_unit_range_suggests_value_range(tiny_pipeline):
    with pytest.raises(ValueError, match=r"pass value_range=\(low, high\)"):
        tiny_pipeline(np.full((8, 8), 25.0, np.float32), num_inference_steps=1)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_radiometric_tiffs_in_their_type_with_tags(saved_test_model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    _camera_tiff(folder / "counts.tif", (3000 + rng.random((8, 12)) * 500).astype(np.uint16))
    _camera_tiff(folder / "celsius.tif", (18 + rng.random((8, 12)) * 3).astype(np.float32))
    shutil.copy(FLIR_JPEG, folder / "flir.jpg")
    has_flyr = True
    try:
        import flyr  # noqa: F401
    except ImportError:
        has_flyr = False
        (folder / "flir.jpg").unlink()
    code = main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(saved_test_model),
                 "--steps", "1", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    counts, celsius = (read_radiometric(tmp_path / "out" / n) for n in ("counts_x4.tif", "celsius_x4.tif"))
    assert counts.dtype == np.uint16 and celsius.dtype == np.float32
    assert counts.frames[0].shape == celsius.frames[0].shape == (32, 48)
    for name in ("counts", "celsius"):
        before, after = _tags(folder / f"{name}.tif"), _tags(tmp_path / "out" / f"{name}_x4.tif")
        assert all(after[k] == before[k] for k in ("Make", "Model", "Software", "CameraSerialNumber", "65000"))
    if has_flyr:
        temperatures = read_radiometric(tmp_path / "out" / "flir_x4.tif")
        assert temperatures.dtype == np.float32 and temperatures.frames[0].shape == (240, 320)
        assert json.loads(temperatures.description)["unit"] == "degC"
        assert {k: v for k, v in _tags(tmp_path / "out" / "flir_x4.tif").items() if k in FLIR_EXIF} == FLIR_EXIF
        with PIL.Image.open(preview_path(tmp_path / "out" / "flir_x4.tif")) as preview:
            assert (preview.mode, preview.size) == ("L", (320, 240))


def test_cli_bad_range_fails_before_the_model_loads(tmp_path, capsys):
    _camera_tiff(tmp_path / "a.tif", np.zeros((8, 8), np.uint16))
    code = main(["upscale", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "--model",
                 str(tmp_path / "no-model"), "--range", "300", "290"])
    assert code == 2
    assert "error: --range LOW HIGH needs two finite numbers with LOW < HIGH" in capsys.readouterr().err


def test_eval_bicubic_on_16bit_png_and_float_tiff_in_their_units(tmp_path, capsys):
    rng = np.random.default_rng(2)
    counts, kelvin = tmp_path / "counts", tmp_path / "kelvin"
    counts.mkdir(), kelvin.mkdir()
    PIL.Image.fromarray((3000 + rng.random((32, 40)) * 300).astype(np.uint16)).save(counts / "a.png")
    tifffile.imwrite(kelvin / "a.tif", (290 + rng.random((32, 40)) * 3).astype(np.float32))
    for folder, unit, scale in ((counts, "counts", 300), (kelvin, "K", 3)):
        assert main(["eval", "--hr", str(folder), "--bicubic", "--json", str(tmp_path / "r.json")]) == 0
        assert f"LR error ({unit})" in capsys.readouterr().out
        report = json.loads((tmp_path / "r.json").read_text())
        mean = report["methods"]["bicubic"]["mean"]
        assert report["unit"] == unit and set(report["methods"]) == {"bicubic"}
        assert 0.01 * scale < mean["hr_mae"] < 0.5 * scale  # white noise: bicubic misses a good share of it
        assert mean["mean_shift"] < 1e-3 * scale


@pytest.mark.slow  # a child process loads torch and the model
def test_flir_jpeg_from_stdin_to_stdout_gives_the_temperature_tiff(saved_test_model, tmp_path):
    pytest.importorskip("flyr", reason="flyr (the radiometric extra) reads FLIR R-JPEGs")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "difiisr_dwt.cli", "upscale", "-", "-o", "-", "--model",
                           str(saved_test_model), "--steps", "1", "--device", "cpu"],
                          input=FLIR_JPEG.read_bytes(), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    (tmp_path / "out.tif").write_bytes(done.stdout)  # the temperatures, not the 8-bit preview beside them
    image = read_radiometric(tmp_path / "out.tif")
    assert image.dtype == np.float32 and image.frames[0].shape == (240, 320)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied_and_not_carried(tmp_path, orientation):
    """A radiometric TIFF's Orientation tag is applied to its pixels (the output is stored upright, as the 8-bit
    path does with EXIF) and is not carried; reference: Pillow's exif_transpose of the same pixels in a PNG."""
    import io

    import PIL.ImageOps

    from difiisr_dwt.radiometric import read_radiometric

    pixels = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels.astype(np.uint16) * 10 + 3000, extratags=[(274, "H", 1, orientation, True)])
    (tmp_path / "frame.tif").write_bytes(buffer.getvalue())
    image = read_radiometric(tmp_path / "frame.tif")
    reference = PIL.Image.fromarray(pixels)
    exif = reference.getexif()
    exif[274] = orientation
    reference.save(tmp_path / "reference.png", exif=exif)
    upright = np.asarray(PIL.ImageOps.exif_transpose(PIL.Image.open(tmp_path / "reference.png")))
    np.testing.assert_array_equal(image.frames[0], upright.astype(np.uint16) * 10 + 3000)
    assert 274 not in [entry[0] for entry in image.extratags]


def _frames_tiff(path: Path, dtype) -> list[np.ndarray]:
    """A 3-page TIFF whose pages carry their own DateTime, ImageDescription and resolution (a sequence)."""
    rng = np.random.default_rng(3)
    frames = [(3000 + rng.random((8, 12)) * 500 if dtype == np.uint16 else 18 + rng.random((8, 12)) * 3).astype(dtype)
              for _ in range(3)]
    with tifffile.TiffWriter(path) as tif:
        for index, frame in enumerate(frames):
            tif.write(frame, datetime=f"2024:01:02 03:04:0{index}", description=f"frame {index}", metadata=None,
                      extratags=CAMERA_TAGS, resolution=(10.0 + index, 20.0), resolutionunit=2)
    return frames


def _page_tags(path: Path) -> list[tuple]:
    with tifffile.TiffFile(path) as tif:
        return [(p.tags["DateTime"].value, p.tags["ImageDescription"].value, p.tags["XResolution"].value,
                 p.tags["YResolution"].value, p.tags["Make"].value) for p in tif.pages]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_multi_page_tiff_pages_keep_their_own_tags(tmp_path, dtype):
    """Each output page carries its own input page's tags (a sequence's per-frame timestamps), not page 0's."""
    _frames_tiff(tmp_path / "in.tif", dtype)
    image = read_radiometric(tmp_path / "in.tif")
    write_radiometric(tmp_path / "out.tif", [np.kron(f, np.ones((4, 4))) for f in image.frames], image)
    assert _page_tags(tmp_path / "out.tif") == [
        (f"2024:01:02 03:04:0{i}", f"frame {i}", (4 * (10 + i), 1), (80, 1), "Workswell") for i in range(3)
    ]
    write_radiometric(tmp_path / "one.tif", [np.kron(image.frames[1], np.ones((4, 4)))], image)  # not one per page
    assert _page_tags(tmp_path / "one.tif") == [("2024:01:02 03:04:00", "frame 0", (40, 1), (80, 1), "Workswell")]


def test_cli_multi_page_tiffs_keep_each_pages_tags(saved_test_model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, dtype in (("counts", np.uint16), ("celsius", np.float32)):
        _frames_tiff(folder / f"{name}.tif", dtype)
    code = main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(saved_test_model),
                 "--steps", "1", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    for name in ("counts", "celsius"):
        assert _page_tags(tmp_path / "out" / f"{name}_x4.tif") == [
            (f"2024:01:02 03:04:0{i}", f"frame {i}", (4 * (10 + i), 1), (80, 1), "Workswell") for i in range(3)
        ], name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_turning_the_frame_swaps_its_resolution(tmp_path, orientation):
    """Orientation 5-8 turn the frame by 90 degrees: its x and y resolutions swap with its axes, then x4."""
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((4, 6), np.uint16), resolution=(100.0, 50.0), resolutionunit=2,
                     extratags=[(274, "H", 1, orientation, True)])
    image = read_radiometric(tmp_path / "in.tif")
    write_radiometric(tmp_path / "out.tif", [np.kron(image.frames[0], np.ones((4, 4)))], image)
    tags = _tags(tmp_path / "out.tif")
    turned = orientation in (5, 6, 7, 8)
    assert tags["ImageWidth"] == (16 if turned else 24)
    assert (tags["XResolution"], tags["YResolution"]) == (((200, 1), (400, 1)) if turned else ((400, 1), (200, 1)))


def test_a_half_precision_tiff_is_named_as_such(tmp_path):
    """A float16 TIFF was "cannot identify image file" (PIL's), with nothing about float16."""
    import tifffile

    from difiisr_dwt.io import ImageReadError
    from difiisr_dwt.radiometric import read_radiometric

    tifffile.imwrite(tmp_path / "h.tif", np.full((8, 8), 300, np.float16))
    with pytest.raises(ImageReadError, match=r"h.tif: a half-precision \(float16\) TIFF; save it as float32"):
        read_radiometric(tmp_path / "h.tif")
