"""Image files in and out: clear errors for unreadable files, atomic writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import PIL.Image

from difiisr_dwt.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".ppm")


class ImageReadError(ValueError):
    """A file that is not a readable image."""


def read_image(path: str | os.PathLike) -> PIL.Image.Image:
    """Open and fully decode an image, keeping its mode (``L``, ``RGB``, ``I;16``...).

    Raises:
        ImageReadError: missing, empty, truncated or non-image file, with the path and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with PIL.Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later inside the pipeline
            return image.copy()
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from error


def read_file_list(path: str | os.PathLike) -> list[str]:
    """Names from a UTF-8 text file, one per line; surrounding blanks, empty lines and ``#`` comments skipped.

    Raises:
        UsageError: the file cannot be read, or names nothing.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: not a readable file list ({error})") from error
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise UsageError(f"{path}: the file list is empty.")
    return names


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
