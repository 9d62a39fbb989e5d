"""Metadata a user expects kept: an embedded ICC profile (RGB PNG, grey JPEG, 16-bit TIFF), the physical
size (DPI and a TIFF's resolution tags x4, the rule of radiometric TIFFs too), the EXIF data less the
orientation already applied, through ``upscale`` (files and
multi-page TIFF) and the demo's download."""

from __future__ import annotations

import sys

import numpy as np
import PIL.Image
import PIL.ImageCms
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.io import kept_metadata, read_frames, save_options

SRGB = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()
# littlecms makes no grey profile here: the sRGB bytes with the header's colour space set to GRAY (what is
# checked is that the embedded bytes come back unchanged)
GRAY = SRGB[:16] + b"GRAY" + SRGB[20:]
ORIENTATION, MAKE, MODEL = 0x0112, 0x010F, 0x0110


def _exif() -> PIL.Image.Exif:
    exif = PIL.Image.Exif()
    exif[ORIENTATION], exif[MAKE], exif[MODEL] = 6, "Acme Thermal", "E8-XT"  # not "FLIR": see radiometric.py
    return exif


def _rng_image(shape, dtype=np.uint8, high=255) -> PIL.Image.Image:
    return PIL.Image.fromarray((np.random.default_rng(len(shape)).random(shape) * high).astype(dtype))


@pytest.fixture(scope="module")
def upscaled(saved_test_model, tmp_path_factory):
    """Inputs with metadata, upscaled in one CLI run; yields ``(input folder, output folder)``."""
    root = tmp_path_factory.mktemp("metadata")
    inputs, out = root / "in", root / "out"
    inputs.mkdir()
    _rng_image((12, 16, 3)).save(inputs / "rgb.png", icc_profile=SRGB, dpi=(300, 300), exif=_exif())
    _rng_image((12, 16)).save(inputs / "grey.jpg", icc_profile=GRAY, dpi=(96, 96), exif=_exif(), quality=95)
    _rng_image((12, 16), np.uint16, 60000).save(inputs / "raw16.tif", icc_profile=GRAY, resolution_unit=3,
                                                x_resolution=40.0, y_resolution=20.0)
    pages = [_rng_image((12, 16)), _rng_image((12, 16))]
    pages[0].save(inputs / "pages.tif", save_all=True, append_images=pages[1:], icc_profile=GRAY, dpi=(150, 150))
    _rng_image((12, 16)).save(inputs / "mismatch.png", icc_profile=SRGB)  # an RGB profile on a grey image
    _rng_image((12, 16)).save(inputs / "nores.tif")  # no resolution tags
    code = main(["upscale", str(inputs), "-o", str(out), "--model", str(saved_test_model), "--steps", "1",
                 "--device", "cpu"])
    assert code == 0
    return inputs, out


def test_rgb_png_keeps_icc_dpi_and_exif_without_orientation(upscaled):
    _, out = upscaled
    with PIL.Image.open(out / "rgb_x4.png") as result:
        assert result.size == (48, 64)  # Orientation 6 applied: portrait
        assert result.info.get("icc_profile") == SRGB
        assert result.info["dpi"] == pytest.approx((1200, 1200), rel=1e-3)  # PNG stores whole pixels per metre
        exif = result.getexif()
        assert exif.get(MAKE) == "Acme Thermal" and exif.get(MODEL) == "E8-XT" and ORIENTATION not in exif


def test_grey_jpeg_keeps_its_grey_profile(upscaled):
    _, out = upscaled
    with PIL.Image.open(out / "grey_x4.png") as result:
        assert result.mode == "L" and result.info.get("icc_profile") == GRAY
        assert result.info["dpi"] == pytest.approx((384, 384), rel=1e-3)  # PNG stores whole pixels per metre
        assert result.getexif().get(MAKE) == "Acme Thermal" and ORIENTATION not in result.getexif()


def test_tiff_keeps_resolution_tags_and_profile(upscaled):
    _, out = upscaled
    with PIL.Image.open(out / "raw16_x4.tif") as result:
        assert result.mode == "I;16" and result.info.get("icc_profile") == GRAY
        tags = result.tag_v2
        assert (float(tags[282]), float(tags[283]), tags[296]) == (160.0, 80.0, 3)  # per cm: the same size in cm
    frames = read_frames(out / "pages_x4.tif")
    assert len(frames) == 2 and all(f.info.get("icc_profile") == GRAY for f in frames)
    assert all(f.info["resolution"] == pytest.approx((600, 600)) for f in frames)


def test_tiff_without_resolution_gets_none(upscaled):
    """PIL reads a TIFF without resolution tags as dpi (1, 1): that placeholder, x4, claimed 4 dpi (a 64-pixel-wide
    output printed 16 inches wide)."""
    _, out = upscaled
    with PIL.Image.open(out / "nores_x4.tif") as result:
        assert result.size == (64, 48) and not {282, 283, 296} & set(result.tag_v2)
    assert kept_metadata(read_frames(upscaled[0] / "nores.tif")[0]) == {}


def test_profile_of_another_colour_space_is_not_written(upscaled):
    _, out = upscaled
    with PIL.Image.open(out / "mismatch_x4.png") as result:
        assert result.mode == "L" and "icc_profile" not in result.info


def test_save_options_skip_what_a_format_cannot_hold():
    image = _rng_image((4, 4, 3))
    image.info.update(icc_profile=SRGB, dpi=(72, 72), exif=_exif().tobytes())
    def written(fmt):
        return {key for key, value in save_options(image, fmt).items() if value is not None}

    assert written("PNG") == {"icc_profile", "dpi", "exif"} and written("TIFF") == {"icc_profile", "dpi"}
    assert save_options(image.convert("L"), "PNG")["icc_profile"] is None
    assert kept_metadata(PIL.Image.new("L", (2, 2))) == {}


def test_demo_download_keeps_the_uploads_metadata(tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "examples" / "gradio_app"))
    import imaging

    upload = tmp_path / "up.jpg"
    _rng_image((12, 16, 3)).save(upload, icc_profile=SRGB, dpi=(200, 200), exif=_exif())
    opened = imaging.open_upload(str(upload), 10_000)
    result = _rng_image((64, 48, 3))  # stands in for the pipeline's output (upscale_file copies the metadata)
    result.info.update(imaging.kept_metadata(opened, scale=4))
    saved = imaging.save_result(result, upload.name, tmp_path / "out")
    with PIL.Image.open(saved) as download:
        assert download.info.get("icc_profile") == SRGB
        assert download.info["dpi"] == pytest.approx((800, 800), rel=1e-3)  # PNG stores whole pixels per metre
        assert download.getexif().get(MAKE) == "Acme Thermal" and ORIENTATION not in download.getexif()
