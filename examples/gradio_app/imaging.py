"""Image handling for the demo: checked uploads, display arrays, thermal palettes, result files.

Needs only numpy, PIL and torch (matplotlib for its colour maps), so that the Space runs without the
``difiisr_dwt`` package.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageOps
import torch
import torch.nn.functional as F

try:  # with the package, a result keeps the upload's ICC profile, DPI and EXIF (difiisr_dwt.io)
    from difiisr_dwt.io import kept_metadata, save_options
except ImportError:  # a Space without it: the ICC profile only, which PIL writes from ``info`` itself

    def kept_metadata(image: PIL.Image.Image) -> dict:
        return {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}

    def save_options(image: PIL.Image.Image, fmt: str) -> dict:
        return {}


UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Display palettes. Grayscale shows an image as it is (colour inputs included); the others colour
#: the luminance and only change what is shown, never the result file.
PALETTES = ("Grayscale (white hot)", "Black hot", "Ironbow", "Inferno", "Magma", "Turbo (rainbow)")
_MATPLOTLIB_MAPS = {"Inferno": "inferno", "Magma": "magma", "Turbo (rainbow)": "turbo"}
# FLIR-style "iron" palette as control points: black -> indigo -> magenta -> orange -> yellow -> white.
_IRONBOW = [(0.0, (0, 0, 0)), (0.15, (32, 0, 110)), (0.35, (140, 0, 160)), (0.55, (220, 50, 60)),
            (0.75, (250, 150, 0)), (0.9, (255, 225, 60)), (1.0, (255, 255, 255))]
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights of PIL's convert("L")
#: Modes of radiometric data: 16-bit counts and 32-bit float temperatures (values in the file's units).
RADIOMETRIC_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class UploadError(ValueError):
    """An upload the demo cannot use; the message is shown to the user as it is."""


def open_upload(path: str | os.PathLike | None, max_pixels: int) -> PIL.Image.Image:
    """Open an uploaded PNG / JPEG / TIFF, checking its size *before* decoding the pixels.

    Returns:
        The decoded image in its own mode (``L``, ``RGB``, ``I;16``...), its EXIF orientation applied.

    Raises:
        UploadError: no file, an unsupported suffix, an unreadable file, several frames (with the count),
            or more than ``max_pixels``.
    """
    if path is None:
        raise UploadError("Upload an image first (PNG, JPEG or TIFF; 8- or 16-bit; grayscale or RGB).")
    name = Path(path).name
    if Path(path).suffix.lower() not in UPLOAD_SUFFIXES:
        raise UploadError(f"{name}: unsupported file type; upload a PNG, JPEG or TIFF image.")
    try:
        with PIL.Image.open(path) as image:  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(
                    f"{name} is {width}x{height} = {width * height:,} pixels; this demo accepts at most "
                    f"{max_pixels:,} input pixels. Crop or downscale the image and try again."
                )
            frames = getattr(image, "n_frames", 1) if image.format != "MPO" else 1  # MPO: a JPEG + previews
            if frames > 1:
                raise UploadError(
                    f"{name} has {frames} frames (pages); this demo upscales one image. Upload a single frame, or "
                    "use `difiisr-dwt upscale`, which keeps every frame."
                )
            image.load()  # decode now, so that a truncated file fails here with its name
            return PIL.ImageOps.exif_transpose(image)  # upright, as viewers show it (a copy)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        if isinstance(error, UploadError):
            raise
        if isinstance(error, PIL.UnidentifiedImageError) and Path(path).suffix.lower() in (".tif", ".tiff"):
            image = _open_float64_tiff(path, name, max_pixels)  # a float64 TIFF, which PIL cannot open
            if image is not None:
                return image
        # PIL's messages name the server-side temporary path: show the file's own name instead
        reason = str(error).replace(str(path), name)
        if isinstance(error, PIL.UnidentifiedImageError):
            reason = "not an image"
        raise UploadError(f"{name} is not a readable PNG, JPEG or TIFF image ({reason}).") from error


def _open_float64_tiff(path: str | os.PathLike, name: str, max_pixels: int) -> PIL.Image.Image | None:
    """A one-channel float64 TIFF (temperatures) as a float32 ``F`` image, through tifffile when installed."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if len(tif.pages) != 1 or page.dtype != np.float64 or page.samplesperpixel != 1:
                return None
            if page.shape[0] * page.shape[1] > max_pixels:
                raise UploadError(f"{name} is {page.shape[1]}x{page.shape[0]} pixels; this demo accepts at most "
                                  f"{max_pixels:,} input pixels. Crop or downscale the image and try again.")
            array = page.asarray().reshape(page.shape[:2])
    except (ImportError, ValueError, OSError):
        return None
    if not np.isfinite(array).all():
        raise UploadError(f"{name} contains NaN or Inf values; fill them first.")
    return PIL.Image.fromarray(array.astype(np.float32), mode="F")


def bit_depth(image: PIL.Image.Image) -> int:
    return 32 if image.mode == "F" else 16 if image.mode.startswith("I") else 8


def is_radiometric(image: PIL.Image.Image) -> bool:
    """16-bit counts or float temperatures: values in the file's own units, read out in the demo."""
    return image.mode in RADIOMETRIC_MODES


def unit_label(image: PIL.Image.Image) -> str:
    """What the values of a radiometric image are: counts (16-bit), or the float file's own unit."""
    return "°C or K, as in the file" if image.mode == "F" else "counts"


def values_x4(image: PIL.Image.Image, factor: int = 4) -> np.ndarray:
    """`(factor*h, factor*w)` float64 bicubic upscale of a radiometric image's values, unclipped (the
    "before" of the temperature readout, in the input's units)."""
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float64))[None, None]
    return F.interpolate(tensor, scale_factor=factor, mode="bicubic", align_corners=False)[0, 0].numpy()


def colorbar(low: float, high: float, unit: str, palette: str, width: int = 512, height: int = 56) -> np.ndarray:
    """`(height, width, 3)` uint8 colour bar of ``palette`` from ``low`` to ``high`` with 5 labelled ticks."""
    lut = palette_lut(palette)
    ramp = np.repeat(np.linspace(0, 255, width).round().astype(np.uint8)[None, :], height // 2, axis=0)
    bar = np.repeat(ramp[:, :, None], 3, axis=2) if lut is None else lut[ramp]
    canvas = PIL.Image.new("RGB", (width, height), "white")
    canvas.paste(PIL.Image.fromarray(bar), (0, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    for k in range(5):
        x = round(k * (width - 1) / 4)
        value = low + (high - low) * k / 4
        draw.line([(x, height // 2), (x, height // 2 + 4)], fill="black")
        text = f"{value:.4g}"
        draw.text((min(max(x - 3 * len(text), 0), width - 6 * len(text)), height // 2 + 6), text, fill="black")
    draw.text((width - 6 * len(unit) - 2, height - 12), unit, fill="black")
    return np.asarray(canvas)


def readout(x: int, y: int, lr: np.ndarray, before: np.ndarray, after: np.ndarray, unit: str,
            factor: int = 4) -> str:
    """One line: the values at output pixel ``(x, y)`` of the input (its LR pixel), of bicubic ("before")
    and of the result ("after"), in ``unit``."""
    height, width = after.shape[:2]
    if not (0 <= x < width and 0 <= y < height):
        raise UploadError(f"point ({x}, {y}) is outside the {width}x{height} result")
    return (f"at ({x}, {y}): input {lr[y // factor, x // factor]:.3f}, before (bicubic) {before[y, x]:.3f}, "
            f"after {after[y, x]:.3f} {unit}")


def to_unit(image: PIL.Image.Image, value_range: tuple[float, float]) -> np.ndarray:
    """`(H, W, C)` float32 in [0, 1], ``C`` 1 or 3; integer (16-bit) modes map ``value_range`` to [0, 1].

    The pipeline reports the range it used for a 16-bit input in ``value_ranges``; input and result
    are shown with that same range, so that their grey levels compare.
    """
    if image.mode.startswith("I") or image.mode == "F":
        low, high = value_range
        array = (np.asarray(image, dtype=np.float64) - low) / max(high - low, 1e-12)
    else:
        gray = image.mode in ("1", "L", "LA")
        array = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.float64) / 255
    if array.ndim == 2:
        array = array[:, :, None]
    return np.clip(array, 0, 1).astype(np.float32)


def bicubic_x4(unit: np.ndarray, factor: int = 4) -> np.ndarray:
    """Bicubic upscale of `(h, w, C)` [0, 1] floats to `(factor*h, factor*w, C)`, as the pipeline's condition."""
    tensor = torch.from_numpy(unit).permute(2, 0, 1)[None]
    upsampled = F.interpolate(tensor, scale_factor=factor, mode="bicubic", align_corners=False)
    return upsampled[0].permute(1, 2, 0).clamp(0, 1).numpy()


def quantize(unit: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 with the same shape (display only)."""
    return np.rint(unit * 255).astype(np.uint8)


@cache
def palette_lut(palette: str) -> np.ndarray | None:
    """`(256, 3)` uint8 look-up table of ``palette``; ``None`` for grayscale (shown as it is)."""
    if palette not in PALETTES:
        raise UploadError(f"Unknown palette {palette!r}; choose one of: {', '.join(PALETTES)}.")
    levels = np.linspace(0, 1, 256)
    if palette == "Grayscale (white hot)":
        return None
    if palette == "Black hot":
        gray = np.rint(255 - levels * 255)
        return np.repeat(gray[:, None], 3, axis=1).astype(np.uint8)
    if palette == "Ironbow":
        positions = [p for p, _ in _IRONBOW]
        colors = np.array([c for _, c in _IRONBOW], dtype=np.float64)
        lut = np.stack([np.interp(levels, positions, colors[:, k]) for k in range(3)], axis=1)
        return np.rint(lut).astype(np.uint8)
    import matplotlib  # imported here: only colour palettes need it

    rgba = matplotlib.colormaps[_MATPLOTLIB_MAPS[palette]](levels)
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)


def colorize(image_u8: np.ndarray, palette: str) -> np.ndarray:
    """`(H, W, C)` uint8 (``C`` 1 or 3) -> `(H, W, 3)` uint8 in ``palette``."""
    lut = palette_lut(palette)
    if lut is None:
        return np.repeat(image_u8, 3, axis=2) if image_u8.shape[2] == 1 else image_u8
    if image_u8.shape[2] == 1:
        index = image_u8[:, :, 0]
    else:
        index = np.rint(image_u8.astype(np.float64) @ _LUMA).astype(np.uint8)
    return lut[index]


#: Folders :func:`save_result` makes under its output root start so; its cleanup looks at nothing else.
RESULT_PREFIX = "result-"


def save_result(image: PIL.Image.Image, upload_name: str, output_root: Path, max_age_s: float = 3600) -> Path:
    """Write the full-resolution result for download and forget results older than ``max_age_s``.

    TIFF uploads get a TIFF back, the others a PNG (lossless, and 16-bit where the input was), with the
    metadata in ``image.info`` (the upload's ICC profile, DPI, EXIF: :func:`kept_metadata`). Each
    result gets a fresh private folder (``result-*``), and its path is handed out only after the file
    is complete. The cleanup takes only such folders' results: other files under ``output_root`` are
    never deleted.
    """
    output_root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in [*output_root.glob(f"{RESULT_PREFIX}*/*_x4.png"), *output_root.glob(f"{RESULT_PREFIX}*/*_x4.tif")]:
        try:
            if now - old.stat().st_mtime > max_age_s:
                old.unlink()
                old.parent.rmdir()
        except OSError:  # gone already, or a folder holding something else: not ours to fail on
            pass
    fmt = "TIFF" if Path(upload_name).suffix.lower() in (".tif", ".tiff") else "PNG"
    folder = Path(tempfile.mkdtemp(prefix=RESULT_PREFIX, dir=output_root))
    path = folder / f"{Path(upload_name).stem}_x4.{fmt.lower()[:3]}"
    image.save(path, format=fmt, **save_options(image, fmt))  # the metadata upscale_file put into its info
    return path
