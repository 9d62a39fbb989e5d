"""Radiometric thermal files in and out, in their own units: 16-bit counts, float temperatures, FLIR R-JPEG.

A thermal camera's own data is not a picture: a 16-bit TIFF holds sensor counts, a float TIFF holds
temperatures (kelvin or degrees Celsius, as the tool that exported it chose), a FLIR radiometric JPEG
holds raw counts and the Planck calibration that turns them into temperatures. :func:`read_radiometric`
reads them as arrays in their units with what is needed to write the output back alike;
:func:`write_radiometric` writes the x4 output in the input's type and units (``tifffile``), with the
input's tags; :func:`sequence_value_range` gives the one intensity mapping a whole sequence shares
(the pipeline's ``value_range=``, the CLI's ``--range``).

Units are kept as they are ("same units out"): a float TIFF in degrees Celsius comes back in degrees
Celsius, a counts TIFF in counts. A FLIR R-JPEG gives temperatures in degrees Celsius (what FLIR's
own tools export), through ``flyr`` (``pip install "difiisr-dwt[radiometric]"``).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import ImageReadError, save_image_atomic, write_atomic

#: Suffixes read here when their content is radiometric (16-bit or float TIFF, 16-bit PNG, FLIR R-JPEG).
RADIOMETRIC_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_PIL_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")
#: Tags that describe the pixel layout of the file itself: tifffile writes its own.
_LAYOUT_TAGS = {
    "NewSubfileType", "SubfileType", "ImageWidth", "ImageLength", "BitsPerSample", "Compression",
    "PhotometricInterpretation", "FillOrder", "StripOffsets", "SamplesPerPixel", "RowsPerStrip",
    "StripByteCounts", "PlanarConfiguration", "Predictor", "SampleFormat", "TileWidth", "TileLength",
    "TileOffsets", "TileByteCounts", "SMinSampleValue", "SMaxSampleValue", "MinSampleValue", "MaxSampleValue",
    "ExtraSamples", "ColorMap", "SubIFDs", "JPEGTables", "ImageDepth", "TileDepth",
    "XResolution", "YResolution", "ResolutionUnit",  # scaled and written through tifffile's resolution=
    "Software",  # written through tifffile's software=
}
#: Tags that point to another IFD; the EXIF one is carried entry by entry (see :func:`_exif_tags`).
_IFD_POINTER_TAGS = {"ExifTag", "GPSTag", "InteroperabilityTag"}
_FLIR_MARKER = b"FLIR\x00"  # APP1 segment of a FLIR R-JPEG


@dataclass
class PageTags:
    """The tags one page of a TIFF is written with (see :class:`RadiometricImage`'s fields of these names)."""

    extratags: list[tuple] = field(default_factory=list)
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    description: str | None = None
    software: str | None = None


@dataclass
class RadiometricImage:
    """A thermal file's frames in its own units, and what writing the output back alike needs.

    Args:
        frames: `(H, W)` arrays: ``uint16`` counts, or ``float32`` / ``float64`` temperatures.
        unit: ``"counts"``, ``"degC"`` (R-JPEG), or ``"as input"`` for a float TIFF (kelvin or degrees
            Celsius: the file does not say; a difference is in kelvin either way).
        source: ``"tiff"``, ``"png"`` or ``"flir-rjpeg"``.
        dtype: the type the output is written in (the input's; ``float32`` for an R-JPEG).
        extratags: tifffile ``extratags`` entries ``(code, dtype, count, value, True)`` copied from the input
            (its first page's).
        software: the input's Software tag (tifffile writes this one itself).
        resolution: ``(x, y)`` pixels per ``resolution_unit`` of the input (of its upright frames: swapped
            where the Orientation tag turned them by 90 degrees), or ``None``.
        resolution_unit: TIFF ResolutionUnit (1 none, 2 inch, 3 cm).
        description: the input's ImageDescription, or (R-JPEG) a JSON record of the unit and the
            calibration used.
        pages: a multi-page TIFF's tags page by page (:class:`PageTags`, one per frame, the first one's
            as the fields above), so that each output page carries its own input page's (dates, frame
            numbers...); empty: every page is written with the fields above.
    """

    frames: list[np.ndarray]
    unit: str
    source: str
    dtype: np.dtype
    extratags: list[tuple] = field(default_factory=list)
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    description: str | None = None
    software: str | None = None
    pages: list[PageTags] = field(default_factory=list)

    @property
    def units_label(self) -> str:
        """What a difference of these values is measured in, for reports: ``"counts"`` or ``"K"``."""
        return "counts" if self.unit == "counts" else "K"


# ------------------------------------------------------------------------------------------------ reading
def read_radiometric(path: str | os.PathLike, data: bytes | None = None) -> RadiometricImage | None:
    """Read a radiometric file in its units, or return ``None`` for an ordinary picture.

    Radiometric: a TIFF of one-channel 16-bit integers (counts) or 32/64-bit floats (temperatures),
    every page a frame; a 16-bit grey PNG (counts, no tags); a JPEG carrying FLIR's radiometric record.
    Anything else (8-bit, RGB, a plain JPEG) gives ``None``.

    Raises:
        ImageReadError: a TIFF that cannot be decoded, non-finite float values, a FLIR R-JPEG without
            ``flyr`` installed or whose record cannot be read; the path and the reason in the message.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RADIOMETRIC_SUFFIXES:
        return None
    if data is None:
        if not path.is_file():
            raise ImageReadError(f"{path}: no such file")
        data = path.read_bytes()
    if suffix in (".jpg", ".jpeg"):
        return _read_flir_jpeg(path, data) if _FLIR_MARKER in data[:65536] else None
    if suffix == ".png":
        return _read_png(path, data)
    return _read_tiff(path, data)


def _read_png(path: Path, data: bytes) -> RadiometricImage | None:
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            if image.mode not in _PIL_16BIT:
                return None
            frame = np.asarray(image).astype(np.uint16)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: not a readable PNG ({error})") from error
    return RadiometricImage(frames=[frame], unit="counts", source="png", dtype=np.dtype(np.uint16))


def is_flir_jpeg(path: str | os.PathLike, data: bytes | None = None) -> bool:
    """Whether ``path`` (or its bytes ``data``) is a JPEG carrying FLIR's radiometric record (its APP1
    ``FLIR`` segment), from its first 64 KiB; ``False`` for other suffixes and unreadable files (they are
    reported when read)."""
    path = Path(path)
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return False
    if data is not None:
        return _FLIR_MARKER in data[:65536]
    try:
        with open(path, "rb") as f:
            return _FLIR_MARKER in f.read(65536)
    except OSError:
        return False


def _read_tiff(path: Path, data: bytes) -> RadiometricImage | None:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = list(tif.pages)
            if not pages:
                raise ImageReadError(f"{path}: not a readable TIFF (no page in it: empty or cut short)")
            first = pages[0]
            dtype = np.dtype(first.dtype) if first.dtype is not None else None
            if dtype == np.float16 and _is_grey(first):
                raise ImageReadError(f"{path}: a half-precision (float16) TIFF; save it as float32")
            if dtype is None or not (_is_grey(first) or _is_grey_alpha(first)) or not (
                dtype == np.uint16 or dtype in (np.float32, np.float64)
            ):
                return None
            orientation = int(first.tags["Orientation"].value) if "Orientation" in first.tags else 1
            frames = [_upright(_decode_page(page, path, data, index), orientation) for index, page in enumerate(pages)]
            page_tags = [_page_tags(page, orientation) for page in pages]
    except ImageReadError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as error:
        raise ImageReadError(f"{path}: not a readable TIFF ({error})") from error
    if any(f.shape != frames[0].shape or f.dtype != dtype for f in frames):
        raise ImageReadError(f"{path}: its pages differ in size or type; a radiometric sequence needs equal pages")
    if dtype.kind == "f" and not all(np.isfinite(f).all() for f in frames):
        raise ImageReadError(f"{path}: contains NaN or Inf values (no temperature there); fill them first")
    first_tags = page_tags[0]
    return RadiometricImage(
        frames=frames, unit="counts" if dtype == np.uint16 else "as input", source="tiff", dtype=dtype,
        extratags=first_tags.extratags, resolution=first_tags.resolution,
        resolution_unit=first_tags.resolution_unit, description=first_tags.description,
        software=first_tags.software, pages=page_tags if len(page_tags) > 1 else [],
    )


def _page_tags(page, orientation: int) -> PageTags:
    """The tags ``page`` is written back with; its resolution that of the upright frame (Orientation 5-8
    turn the frame by 90 degrees: its x and y resolutions swap with its axes)."""
    extratags, resolution, unit, description = _carried_tags(page)
    if resolution is not None and orientation in (5, 6, 7, 8):
        resolution = (resolution[1], resolution[0])
    software = page.tags["Software"].value if "Software" in page.tags else None
    return PageTags(extratags=extratags, resolution=resolution, resolution_unit=unit, description=description,
                    software=software if isinstance(software, str) else None)


def _upright(frame: np.ndarray, orientation: int) -> np.ndarray:
    """``frame`` as the TIFF ``Orientation`` tag (1-8, as EXIF; what ``PIL.ImageOps.exif_transpose`` applies)
    says it is to be shown, so that the output is stored upright like the 8-bit path's (the tag is then not
    carried); an unknown value leaves the frame as stored."""
    if orientation in (5, 6, 7, 8):
        frame = frame.T  # 5: transpose; 6, 7, 8 then turn or flip it as below
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    flips = {2: (slice(None), slice(None, None, -1)), 3: (slice(None, None, -1),) * 2,
             4: (slice(None, None, -1), slice(None))}
    return np.ascontiguousarray(frame[flips[orientation]]) if orientation in flips else frame


def _is_grey(page) -> bool:
    return page.samplesperpixel == 1


def _is_grey_alpha(page) -> bool:
    """Grey plus one extra sample (alpha, as GIMP and GDAL write a 16-bit grey image with transparency)."""
    return page.samplesperpixel == 2 and len(page.extrasamples) == 1 and page.photometric == 1  # MINISBLACK


def _decode_page(page, path: Path, data: bytes, index: int) -> np.ndarray:
    """The page's pixels (the grey sample only: alpha is dropped, as for 8-bit ``LA`` images); a compression
    tifffile has no codec for (LZW, Deflate without ``imagecodecs``) is decoded by Pillow, which has them
    built in (grey pages only: Pillow reads no 16-bit grey + alpha)."""
    try:
        array = page.asarray()
        if _is_grey_alpha(page):  # samples last (contiguous) or first (planar)
            return array[..., 0] if page.axes.endswith("S") else array[0]
        return array.reshape(page.shape[:2])
    except ValueError as error:
        if "imagecodecs" not in str(error):
            raise
    with PIL.Image.open(io.BytesIO(data)) as image:
        image.seek(index)
        array = np.asarray(image)
    if array.shape != tuple(page.shape[:2]):
        raise ImageReadError(f"{path}: page {index} decodes to {array.shape}, its header says {page.shape}")
    return array.astype(page.dtype)


def _carried_tags(page) -> tuple[list[tuple], tuple[float, float] | None, int | None, str | None]:
    """``(extratags, resolution, resolution_unit, description)`` to write the output with the input's tags.

    Every tag but the pixel layout is carried as it is (make, model, serial number, dates, XMP, frame
    rate, private calibration tags...); the EXIF sub-IFD's entries are written into the main IFD,
    TIFF/EP style (tifffile writes no sub-IFD). The GPS sub-IFD is not carried (its tag numbers clash
    with the main IFD's).
    """
    extratags, description = [], None
    for tag in page.tags.values():
        if tag.name in _LAYOUT_TAGS or tag.name in _IFD_POINTER_TAGS or tag.name == "Orientation":  # applied
            continue
        if tag.name == "ImageDescription":  # tifffile's own '{"shape": [h, w]}' would be wrong at x4: not carried
            description = tag.value if isinstance(tag.value, str) and not page.is_shaped else None
            continue
        extratags.append(_extratag(tag.code, int(tag.dtype), tag.value))
    seen = {entry[0] for entry in extratags}
    extratags += [entry for entry in _exif_tags(page) if entry[0] not in seen]  # an IFD0 copy wins
    resolution = None
    if "XResolution" in page.tags and "YResolution" in page.tags:
        resolution = (_rational(page.tags["XResolution"].value), _rational(page.tags["YResolution"].value))
    unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else None
    return extratags, resolution, unit, description


def _exif_tags(page) -> list[tuple]:
    import tifffile

    exif = page.tags.get("ExifTag")
    if exif is None or not isinstance(exif.value, dict):
        return []
    codes = {name: code for code, name in tifffile.TIFF.TAGS.items()}
    out = []
    for name, value in exif.value.items():
        code = codes.get(name)
        if code is not None and code >= 0x8000 and value is not None:  # EXIF numbers never clash with IFD0's
            dtype = _exif_dtype(value)
            if dtype is not None:
                out.append(_extratag(code, dtype, value))
    return out


def _exif_dtype(value) -> int | None:
    """The TIFF type of an EXIF value as tifffile decodes it (ASCII, UNDEFINED, SHORT/LONG, RATIONAL)."""
    if isinstance(value, str):
        return 2
    if isinstance(value, bytes):
        return 7
    if isinstance(value, (int, np.integer)):
        return 3 if 0 <= value < 65536 else (4 if value >= 0 else 9)
    if isinstance(value, float):
        return 12
    if isinstance(value, tuple) and value and all(isinstance(v, (int, np.integer)) for v in value):
        if len(value) % 2 == 0:  # tifffile gives a rational as (numerator, denominator)
            return 5 if min(value) >= 0 else 10
        return 3 if 0 <= min(value) and max(value) < 65536 else 4
    return None


def _extratag(code: int, dtype: int, value) -> tuple:
    """A tifffile ``extratags`` entry, the count in the type's units."""
    if hasattr(value, "value") and not isinstance(value, (str, bytes)):  # an enum
        value = int(value)
    if dtype == 2:
        value = str(value)
        count = len(value.encode("utf-8")) + 1
    elif dtype in (1, 7):
        value = bytes(value)
        count = len(value)
    elif isinstance(value, (tuple, list, np.ndarray)):
        value = tuple(np.asarray(value).ravel().tolist())
        count = len(value) // 2 if dtype in (5, 10) else len(value)
    else:
        count = 1
    return (code, dtype, count, value, True)


def _rational(value) -> float:
    return value[0] / value[1] if isinstance(value, tuple) else float(value)


def _read_flir_jpeg(path: Path, data: bytes) -> RadiometricImage:
    try:
        import flyr
    except ImportError as error:
        raise ImageReadError(
            f"{path}: is a FLIR radiometric JPEG; reading its temperatures needs flyr: "
            'pip install "difiisr-dwt[radiometric]"'
        ) from error
    try:
        thermogram = flyr.unpack(io.BytesIO(data))
        celsius = np.asarray(thermogram.celsius, dtype=np.float64)
        calibration = {k: _plain(v) for k, v in (thermogram.metadata or {}).items()}
    except Exception as error:  # flyr raises bare exceptions (even a KeyError) for records it cannot parse
        raise ImageReadError(f"{path}: FLIR radiometric record not readable by flyr ({error!r})") from error
    if celsius.ndim != 2 or not np.isfinite(celsius).all():
        raise ImageReadError(f"{path}: FLIR radiometric record gives no finite temperature image")
    description = json.dumps({"unit": "degC", "source": f"FLIR radiometric JPEG {path.name}",
                              "calibration": calibration}, sort_keys=True)
    extratags, software = _jpeg_exif_tags(data)
    return RadiometricImage(frames=[celsius.astype(np.float32)], unit="degC", source="flir-rjpeg",
                            dtype=np.dtype(np.float32), description=description, extratags=extratags,
                            software=software)


#: EXIF entries of an R-JPEG that describe its visible JPEG picture, not the thermal image (or hold offsets
#: into the JPEG): Orientation, ImageDescription (ours holds the calibration), YCbCrPositioning, the
#: thumbnail's offsets, ComponentsConfiguration, MakerNote, ColorSpace, ExifImageWidth / ExifImageHeight; and
#: the pointers to the EXIF, GPS and interoperability sub-IFDs (the EXIF one is read entry by entry).
_JPEG_ONLY_TAGS = {274, 270, 531, 513, 514, 37121, 37500, 40961, 40962, 40963, 34665, 34853, 40965}


def _jpeg_exif_tags(data: bytes) -> tuple[list[tuple], str | None]:
    """``(extratags, software)`` from a JPEG's EXIF, carried like a TIFF input's tags (:func:`_carried_tags`):
    IFD0 (make, model, dates...) and the EXIF sub-IFD's entries in the main IFD (date taken...); the GPS
    sub-IFD is not carried."""
    from PIL.ExifTags import TAGS

    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            entries = [*exif.items(), *exif.get_ifd(0x8769).items()]  # IFD0 first: its copy of a tag wins
    except (OSError, SyntaxError, ValueError):  # no readable EXIF: the temperatures are still written
        return [], None
    extratags, seen, software = [], set(), None
    for code, value in entries:
        name = TAGS.get(code, "")
        if code in seen or code in _JPEG_ONLY_TAGS or name in _LAYOUT_TAGS - {"Software"}:
            continue
        value = value.rstrip("\0") if isinstance(value, str) else value  # cameras pad strings with NULs
        if name == "Software":
            software = value if isinstance(value, str) else None
            continue
        entry = _pil_exif_entry(code, value)
        if entry is not None:
            seen.add(code)
            extratags.append(entry)
    return extratags, software


def _pil_exif_entry(code: int, value) -> tuple | None:
    """A tifffile ``extratags`` entry of one EXIF value as PIL reads it (rationals as ``IFDRational``)."""
    from PIL.TiffImagePlugin import IFDRational

    rationals = value if isinstance(value, tuple) else (value,)
    if rationals and all(isinstance(v, IFDRational) for v in rationals):
        if any(v.denominator == 0 for v in rationals):  # 0/0 ("unknown"): nothing to carry
            return None
        pairs = tuple(n for v in rationals for n in (int(v.numerator), int(v.denominator)))
        return _extratag(code, 10 if min(pairs) < 0 else 5, pairs)
    if isinstance(value, tuple) and value and all(isinstance(v, (int, np.integer)) for v in value):
        return _extratag(code, 3 if 0 <= min(value) and max(value) < 65536 else 4, value)  # SHORT/LONG, not rational
    if isinstance(value, str) and not value:
        return None
    dtype = _exif_dtype(value)
    return None if dtype is None else _extratag(code, dtype, value)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, (int, float, str)) else str(value)


# ------------------------------------------------------------------------------------------------ PIL frames
#: Key of the first frame's ``PIL.Image.info`` that holds the :class:`RadiometricImage` read by
#: :func:`read_pil_frames` (what :func:`write_pil_frames` needs to write the output alike, every page's
#: tags included: see :attr:`RadiometricImage.pages`).
PIL_INFO_KEY = "difiisr_radiometric"


def read_pil_frames(path: str | os.PathLike, data: bytes | None = None) -> list[PIL.Image.Image] | None:
    """:func:`read_radiometric` as the pipeline's PIL frames (:func:`to_pil`), the file's
    :class:`RadiometricImage` in ``frames[0].info[PIL_INFO_KEY]``; ``None`` for an ordinary picture and
    for a PNG (PIL reads a 16-bit PNG as ``I;16`` with its metadata, and writes it back alike)."""
    if Path(path).suffix.lower() == ".png":
        return None
    image = read_radiometric(path, data)
    if image is None:
        return None
    frames = [to_pil(frame) for frame in image.frames]
    frames[0].info[PIL_INFO_KEY] = image
    return frames


def write_pil_frames(path: str | os.PathLike, frames: list[PIL.Image.Image], like: RadiometricImage) -> None:
    """Write the pipeline's ``I;16`` / ``F`` output frames with :func:`write_radiometric`."""
    write_radiometric(path, [from_pil(frame) for frame in frames], like)


def to_pil(frame: np.ndarray) -> PIL.Image.Image:
    """A radiometric frame as the PIL image the pipeline takes: ``I;16`` counts, or ``F`` (float32) values."""
    if frame.dtype == np.uint16:
        return PIL.Image.fromarray(frame)
    return PIL.Image.fromarray(np.ascontiguousarray(frame, dtype=np.float32), mode="F")


def from_pil(image: PIL.Image.Image) -> np.ndarray:
    """The values of an ``I;16`` / ``I`` / ``F`` output image as an array."""
    return np.asarray(image, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ writing
def write_radiometric(
    path: str | os.PathLike, frames: list[np.ndarray], like: RadiometricImage, scale: int = 4
) -> None:
    """Write upscaled ``frames`` as a TIFF in ``like``'s type and units, atomically, with its tags (a
    ``.png`` ``path``: one 16-bit PNG of counts).

    Counts are rounded and kept in [0, 65535] (``uint16``); floats keep the input's float type. The
    resolution (pixels per unit) is multiplied by ``scale``: the output covers the same area with
    ``scale`` times the pixels. Page ``i`` gets ``like.pages[i]``'s tags where ``like`` has one per frame
    (a multi-page input: the first page's are the fields of ``like``), else ``like``'s fields. An R-JPEG's
    output also gets an 8-bit preview beside it (see :func:`write_preview`).

    Raises:
        ValueError: no frames, or frames of different shapes.
    """
    import tifffile

    if not frames or any(f.shape != frames[0].shape for f in frames):
        raise ValueError(f"{path}: need one or more frames of one shape to write")
    arrays = [_in_type(np.asarray(f), like.dtype) for f in frames]
    if Path(path).suffix.lower() == ".png":
        if len(arrays) != 1 or arrays[0].dtype != np.uint16:
            raise ValueError(f"{path}: a PNG holds one frame of 16-bit counts; write a .tif")
        save_image_atomic(PIL.Image.fromarray(arrays[0]), path)
        return
    first = PageTags(extratags=like.extratags, resolution=like.resolution, resolution_unit=like.resolution_unit,
                     description=like.description, software=like.software)  # as the caller may have set them
    pages = [first, *like.pages[1:]] if len(like.pages) == len(arrays) else [first] * len(arrays)

    def write(f) -> None:
        buffer = io.BytesIO()  # tifffile seeks back to patch offsets: write whole, then copy
        with tifffile.TiffWriter(buffer) as tif:
            for array, tags in zip(arrays, pages):
                tif.write(array, **_write_options(tags, scale))
        f.write(buffer.getbuffer())

    write_atomic(path, write)
    if like.source == "flir-rjpeg":
        write_preview(preview_path(path), arrays[0])


def _write_options(tags: PageTags, scale: int) -> dict:
    """tifffile ``TiffWriter.write`` options of one page with ``tags``, its resolution times ``scale``."""
    options = {"extratags": tags.extratags, "photometric": "minisblack", "metadata": None,
               "software": tags.software or "difiisr-dwt"}
    if tags.description is not None:
        options["description"] = tags.description
    if tags.resolution is not None:
        options["resolution"] = (tags.resolution[0] * scale, tags.resolution[1] * scale)
        options["resolutionunit"] = tags.resolution_unit or 1
    return options


def preview_path(path: str | os.PathLike) -> Path:
    """``out/a_x4.tif`` -> ``out/a_x4_preview.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_preview.png")


def write_preview(path: str | os.PathLike, frame: np.ndarray) -> None:
    """An 8-bit grey PNG of ``frame``, its 0.5-99.5 percentile range stretched over 0..255 (for viewing only)."""
    low, high = np.percentile(frame, (0.5, 99.5))
    high = high if high > low else low + 1.0
    grey = np.clip((frame.astype(np.float64) - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8)
    save_image_atomic(PIL.Image.fromarray(grey), path)


def _in_type(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype) == np.uint16:
        return np.clip(np.round(array.astype(np.float64)), 0, 65535).astype(np.uint16)
    return array.astype(dtype)


# ------------------------------------------------------------------------------------------------ value ranges
def frame_value_range(frame: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of one frame, widened to a span of 1 where it is flat: the single-image default
    (each image uses the model's whole input range; the fidelity step restores its levels)."""
    low, high = float(np.min(frame)), float(np.max(frame))
    return (low, high if high > low else low + 1.0)


def sequence_value_range(
    frames, percentiles: tuple[float, float] = (0.5, 99.5), margin: float = 0.05, max_samples: int = 1_000_000,
) -> tuple[float, float]:
    """The automatic ``value_range`` of a sequence: one ``(low, high)`` for all its frames.

    The ``percentiles`` of all the frames' values pooled (so that a few hot or dead pixels do not set
    the scale), widened by ``margin`` of the span on each side. Values outside the range still come
    back right: the pipeline does not clip them (its fidelity step restores them in float).

    Args:
        frames: arrays (any shape, in the input's units), or PIL images (``I;16``, ``F``, ``L``).
        percentiles: lower and upper percentile, in [0, 100].
        margin: share of the span added on each side.
        max_samples: values drawn per frame at most (an even stride), to bound the memory of long runs.

    Returns:
        ``(low, high)`` with ``high > low`` (a flat sequence gets a span of 1 around its value).

    Raises:
        ValueError: no frames, bad percentiles, or NaN / Inf values.
    """
    if not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    samples = []
    for frame in frames:
        values = np.asarray(frame, dtype=np.float64).ravel()
        stride = max(1, values.size // max_samples)
        samples.append(values[::stride])
    if not samples:
        raise ValueError("sequence_value_range needs at least one frame")
    pooled = np.concatenate(samples)
    if not np.isfinite(pooled).all():
        raise ValueError("the frames contain NaN or Inf values")
    low, high = (float(v) for v in np.percentile(pooled, percentiles))
    if high <= low:
        return (low - 0.5, low + 0.5)
    span = high - low
    return (low - margin * span, high + margin * span)


def parse_value_range(
    values: list[float] | tuple[float, float] | None, option: str = "--range"
) -> tuple[float, float] | None:
    """A ``(low, high)`` from the command line, checked.

    Raises:
        UsageError: not two finite numbers with ``low < high``.
    """
    if values is None:
        return None
    low, high = (float(v) for v in values)
    if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
        raise UsageError(f"{option} LOW HIGH needs two finite numbers with LOW < HIGH, got {low:g} {high:g}")
    return (low, high)
