"""Image files in and out: clear errors for unreadable files, atomic writes."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import PIL.Image
import PIL.ImageOps
import PIL.ImageSequence

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp", ".pgm", ".ppm")
#: Formats whose extra frames are not pictures of their own: an MPO (a camera JPEG) carries previews.
_FIRST_FRAME_ONLY = ("MPO",)


class ImageReadError(ValueError):
    """A file that is not a readable image."""


def read_image(path: str | os.PathLike) -> PIL.Image.Image:
    """Open and fully decode a single-frame image, upright, keeping its mode (``L``, ``RGB``, ``I;16``...).

    The EXIF orientation is applied (a JPEG stored 160x128 with Orientation=6 comes back 128x160), as
    every viewer shows it.

    Raises:
        ImageReadError: missing, empty, truncated or non-image file, or a file of several frames
            (multi-page TIFF, animated GIF/PNG/WebP; use :func:`read_frames`), with the path and the reason.
    """
    return _read(Path(path), None, single=True)[0]


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then ``os.replace`` it to ``path``,
    so that an interrupted write never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_image_atomic(image: PIL.Image.Image, path: str | os.PathLike) -> None:
    """Save ``image`` to ``path`` atomically, in the format its suffix names (see :func:`write_atomic`)."""
    fmt = PIL.Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image format for suffix {Path(path).suffix!r}")
    write_atomic(path, lambda f: image.save(f, format=fmt))


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the complete folder ``src`` to ``dst`` by renames only, replacing an existing ``dst``.

    The old ``dst`` is moved aside first and put back if the final rename fails, so ``dst`` always
    holds one complete folder.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    stale = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(stale, ignore_errors=True)
    os.replace(dst, stale)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(stale, dst)
        raise
    shutil.rmtree(stale, ignore_errors=True)


def to_rgb_uint8(image: PIL.Image.Image) -> np.ndarray:
    """`(H, W, 3)` uint8 view of any image, 16-bit scaled by its own range (for metrics and display)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = array.min(), array.max()
        array = np.rint((array - low) / max(high - low, 1e-12) * 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array[:, :, :3]


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Expand files, folders (their image files, sorted) and glob patterns into a list of paths."""
    paths: list[Path] = []
    for item in inputs:
        candidate = Path(item)
        if candidate.is_dir():
            paths.extend(sorted(p for p in candidate.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path().glob(item)) if not candidate.is_absolute() else sorted(
                Path(candidate.anchor).glob(str(candidate.relative_to(candidate.anchor)))
            )
            paths.extend(p for p in matches if p.is_file())
        else:
            paths.append(candidate)  # missing files are reported when read
    return paths


def read_frames(path: str | os.PathLike, data: bytes | None = None) -> list[PIL.Image.Image]:
    """Every frame of an image file (one for most files; the pages of a TIFF, the frames of a GIF), each
    fully decoded and upright (EXIF orientation applied), in its own mode.

    Args:
        path: the file; with ``data``, only the name used in messages.
        data: the encoded file's bytes (e.g. a dataset row), read instead of ``path``.

    Raises:
        ImageReadError: missing, empty, truncated or non-image file, with the path and the reason.
    """
    return _read(Path(path), data, single=False)


def _read(path: Path, data: bytes | None, single: bool) -> list[PIL.Image.Image]:
    if data is None and not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with PIL.Image.open(path if data is None else io.BytesIO(data)) as image:
            count = 1 if image.format in _FIRST_FRAME_ONLY else getattr(image, "n_frames", 1)
            if single and count > 1:  # counted from the headers: nothing is decoded to refuse it
                raise ImageReadError(f"{path}: has {count} frames; only single-frame images are read here")
            if count == 1:
                return [_upright(image, gif=image.format == "GIF")]
            return [_upright(frame, gif=image.format == "GIF") for frame in PIL.ImageSequence.Iterator(image)]
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from error


def _upright(frame: PIL.Image.Image, gif: bool = False) -> PIL.Image.Image:
    """A decoded, independent copy of ``frame`` with its EXIF orientation applied."""
    frame.load()  # decode now: a truncated file fails here, not later inside the pipeline
    image = PIL.ImageOps.exif_transpose(frame)  # always a copy, so the file can be closed
    if gif and image.mode in ("P", "RGB", "RGBA"):
        # PIL decodes a GIF's later frames as RGB(A) even when the first is a grey palette: keep grey
        # frames ``L`` so that the frames of one file come back alike.
        array = np.asarray(image.convert("RGB"))
        if (array == array[:, :, :1]).all() and not (image.mode == "RGBA" and image.getextrema()[3][0] < 255):
            image = PIL.Image.fromarray(array[:, :, 0])
    return image


def save_frames_atomic(frames: list[PIL.Image.Image], path: str | os.PathLike) -> None:
    """Save one image, or several as one multi-page TIFF (each page keeps its mode, 16-bit included),
    atomically (see :func:`write_atomic`).

    Raises:
        ValueError: several frames for a ``path`` that is not ``.tif`` / ``.tiff``.
    """
    if len(frames) == 1:
        save_image_atomic(frames[0], path)
        return
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{path}: {len(frames)} frames can only be saved as a multi-page TIFF")
    buffer = io.BytesIO()  # PIL's multi-page TIFF writer reads back what it wrote: not a write-only file
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    write_atomic(path, lambda f: f.write(buffer.getbuffer()))
