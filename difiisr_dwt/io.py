"""Image files in and out: clear errors for unreadable files, atomic writes."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import PIL.Image
import PIL.ImageOps
import PIL.ImageSequence

from difiisr_dwt.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp", ".pgm", ".ppm")
#: Formats whose extra frames are not pictures of their own: an MPO (a camera JPEG) carries previews.
_FIRST_FRAME_ONLY = ("MPO",)


class ImageReadError(UsageError):
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


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it.

    Linux reports it in ``/proc/self/status``; elsewhere it is set and restored under a lock (the only
    portable way to read it), to 0o022 in between so that a file another thread creates meanwhile gets a
    sane mode. Read per call, not once at import, so a umask set later (a daemon, a test) is honoured.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def plain_modes() -> tuple[int, int]:
    """``(file_mode, folder_mode)`` that a plain ``open(path, "w")`` / ``os.mkdir`` would give: 0o666 and
    0o777 less the umask."""
    umask = current_umask()
    return 0o666 & ~umask, 0o777 & ~umask


def set_plain_modes(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything below it the modes of :func:`plain_modes`.

    ``tempfile.mkdtemp`` makes 0o700 folders and safetensors writes 0o600 files; a folder about to be
    renamed into place gets the modes a user expects from any other tool instead.
    """
    file_mode, folder_mode = plain_modes()
    os.chmod(folder, folder_mode)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), folder_mode)
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then ``os.replace`` it to ``path``,
    so that an interrupted write never leaves a half-written file under the final name.

    The temporary file is named ``.NAME.RANDOM.TOKEN.tmp``, ``TOKEN`` naming the writing process
    (:func:`writer_token`), so that a cleanup by another run can tell a live writer's file from one an
    interrupted run left (:func:`temp_writer_gone`).

    The result has the mode a plain ``open(path, "wb")`` would give: an existing file's mode is kept, a
    new file gets 0o666 less the umask (not ``mkstemp``'s 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = plain_modes()[0]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{writer_token()}.tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
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


#: ``info`` keys of a read image that its upscaled result keeps (:func:`kept_metadata`, :func:`save_options`).
KEPT_METADATA = ("icc_profile", "dpi", "exif", "resolution", "resolution_unit")
_X_RESOLUTION, _Y_RESOLUTION, _RESOLUTION_UNIT = 282, 283, 296  # TIFF tags
_EXIF_IFD, _PIXEL_X_DIMENSION, _PIXEL_Y_DIMENSION = 0x8769, 0xA002, 0xA003
#: ICC colour space (header bytes 16..20) -> the image modes a profile of that space can describe.
_ICC_MODES = {b"GRAY": ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"), b"RGB ": ("RGB", "RGBA")}


def kept_metadata(image: PIL.Image.Image, scale: float = 1.0) -> dict:
    """The metadata of a read image (:func:`read_frames`) that its result keeps: ICC profile, DPI, EXIF
    (already without the orientation it applied) and a TIFF's resolution tags. Put it into the result's
    ``info``; :func:`save_image_atomic` / :func:`save_frames_atomic` write it.

    Args:
        scale: result size / input size (4 for x4). The DPI and the TIFF resolution (pixels per unit) are
            multiplied by it, so the result covers the same physical size, as radiometric TIFFs do
            (:mod:`difiisr_dwt.radiometric`).
    """
    return scale_resolution({key: image.info[key] for key in KEPT_METADATA if image.info.get(key) is not None}, scale)


def scale_resolution(metadata: dict, scale: float) -> dict:
    """``metadata`` (of :func:`kept_metadata`) with its DPI and TIFF resolution multiplied by ``scale``."""
    return {key: tuple(float(v) * scale for v in value) if key in ("dpi", "resolution") else value
            for key, value in metadata.items()}


def save_options(image: PIL.Image.Image, fmt: str) -> dict:
    """``image.save`` keywords that write the :func:`kept_metadata` in ``image.info`` in format ``fmt``.

    An ICC profile of another colour space than the image's (an RGB profile on a grey result)
    is left out: it would misdescribe the pixels. EXIF goes into PNG, JPEG and WebP files, with its pixel
    dimensions set to the result's size.
    """
    info = image.info
    icc = info.get("icc_profile")
    # None, not absent: PIL's PNG and TIFF writers would otherwise take a misfit profile from ``info``
    options = {"icc_profile": icc if icc and image.mode in _ICC_MODES.get(bytes(icc[16:20]), ()) else None}
    if fmt == "TIFF" and "resolution" in info:
        options["x_resolution"], options["y_resolution"] = info["resolution"]
        options["resolution_unit"] = info.get("resolution_unit", 2)
    elif info.get("dpi"):
        options["dpi"] = tuple(info["dpi"])
    if info.get("exif") and fmt in ("PNG", "JPEG", "WEBP"):
        exif = PIL.Image.Exif()
        exif.load(info["exif"])
        sub_ifd = exif.get_ifd(_EXIF_IFD)
        for tag, value in ((_PIXEL_X_DIMENSION, image.width), (_PIXEL_Y_DIMENSION, image.height)):
            if tag in sub_ifd:
                sub_ifd[tag] = value
        options["exif"] = exif
    return options


def save_image_atomic(image: PIL.Image.Image, path: str | os.PathLike) -> None:
    """Save ``image`` to ``path`` atomically, in the format its suffix names (see :func:`write_atomic`),
    with the metadata its ``info`` holds (:func:`save_options`)."""
    fmt = PIL.Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image format for suffix {Path(path).suffix!r}")
    write_atomic(path, lambda f: image.save(f, format=fmt, **save_options(image, fmt)))


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike, keep_others: bool = False,
                drop: Collection[str] = ()) -> list[str]:
    """Move the complete folder ``src`` to ``dst`` by renames only, replacing an existing ``dst``.

    The old ``dst`` is moved aside first and put back if the final rename fails, so ``dst`` always
    holds one complete folder. ``src`` and its contents first get the modes a plain ``mkdir``/``open``
    would give (:func:`set_plain_modes`).

    Args:
        keep_others: carry every file of the old ``dst`` that ``src`` does not hold into the new folder
            (hard links where possible, else copies; contents and modes unchanged), so that replacing a
            writer's folder never deletes a file the writer did not write (notes, figures).
        drop: ``/``-separated paths relative to ``dst`` not to carry over: files an earlier run of the
            same writer wrote and this one no longer does.

    Returns:
        The relative paths carried over.
    """
    src, dst = Path(src), Path(dst)
    set_plain_modes(src)
    carried = _carry_over(dst, src, set(drop)) if keep_others and dst.is_dir() else []
    if not dst.exists():
        os.replace(src, dst)
        return carried
    stale = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=f".{writer_token()}.old", dir=dst.parent))
    os.replace(dst, stale)  # onto the empty folder just made: never onto someone else's
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(stale, dst)
        raise
    shutil.rmtree(stale, ignore_errors=True)
    return carried


def _carry_over(old: Path, new: Path, drop: set[str]) -> list[str]:
    """Link (or copy) into ``new`` the files and symlinks of ``old`` that ``new`` lacks, except ``drop``."""
    carried = []
    for root, dirs, files in os.walk(old):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            source = Path(root, name)
            relative = source.relative_to(old).as_posix()
            target = new / relative
            if relative in drop or os.path.lexists(target):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), target)
            else:
                try:
                    os.link(source, target)
                except OSError:  # a file system without hard links
                    shutil.copy2(source, target)
            carried.append(relative)
    return sorted(carried)


# ------------------------------------------------------------------------------------------------ temp files
@functools.cache
def _machine_id() -> str:
    """8 hex digits: 4 naming this host, 4 its boot. A pid means something only on the host and boot it came
    from; a temporary file of an earlier boot of this host has lost its writer for sure."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4] + hashlib.sha1(boot.encode()).hexdigest()[:4]


def writer_token() -> str:
    """``pPID-MACHINE``: who writes a temporary file (see :func:`temp_writer_gone`)."""
    return f"p{os.getpid()}-{_machine_id()}"


_TOKEN_RE = re.compile(r"\.p(\d+)-([0-9a-f]{8})\.(?:tmp|old)$")


def temp_writer_gone(name: str) -> bool | None:
    """Whether the process that made the temporary file ``name`` (see :func:`writer_token`) has ended.

    ``True``: its token names this host, and an earlier boot or a pid no process has now. ``False``: the
    writer lives, or it ran on another host (it cannot be checked from here). ``None``: a name without a
    token (an older version's temporary file).
    """
    match = _TOKEN_RE.search(name)
    if match is None:
        return None
    pid, machine, here = int(match.group(1)), match.group(2), _machine_id()
    if machine[:4] != here[:4]:
        return False
    if machine != here:
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    except OSError as error:
        return error.errno == errno.ESRCH
    return False


# ------------------------------------------------------------------------------------------------ input guard
def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InputGuard:
    """The paths a command reads, so that none of its writes lands on them.

    Every writer checks its targets with :meth:`check` before any compute: a target may not be one of
    the input ``files`` (compared as files: a symlink or a hard link to an input counts as the input),
    may not lie inside one of the input ``folders`` (a ``--model`` folder, eval's HR/LR/SR folders,
    training's data and component folders), and a folder the writer replaces as a whole may not hold
    an input.

    Args:
        files: input files; missing ones are ignored (reading them reports them).
        folders: input folders; missing ones are ignored.
    """

    def __init__(self, files: Iterable[str | os.PathLike] = (), folders: Iterable[str | os.PathLike] = ()):
        self.files: dict[tuple[int, int], Path] = {}
        self.folders: list[tuple[Path, Path]] = []
        self.add(files, folders)

    def add(self, files: Iterable[str | os.PathLike] = (), folders: Iterable[str | os.PathLike] = ()) -> InputGuard:
        for file in files:
            try:
                st = os.stat(file)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                self.files.setdefault((st.st_dev, st.st_ino), Path(file))
        for folder in folders:
            if folder is not None and os.path.isdir(folder):
                self.folders.append((Path(folder), Path(os.path.realpath(folder))))
        return self

    def add_models(self, *models: str | os.PathLike | None) -> InputGuard:
        """Add the folders of ``--model``-like arguments: a local folder, or (``None``) the embedded default
        model. A Hub repo id adds nothing (its snapshot lives in the Hub cache)."""
        from difiisr_dwt import DEFAULT_MODEL

        return self.add(folders=[DEFAULT_MODEL if model is None else model for model in models])

    def problem(self, target: str | os.PathLike, replaces_folder: bool = False) -> str | None:
        """Why ``target`` may not be written (``None``: it may). ``replaces_folder``: the writer replaces
        ``target`` as a whole, so it may not hold an input either."""
        try:
            st = os.stat(target)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) in self.files:
            return f"is the input {self.files[(st.st_dev, st.st_ino)]}"
        real = Path(os.path.realpath(target))
        for given, folder in self.folders:
            if real == folder:
                return f"is the input folder {given}"
            if folder in real.parents:
                return f"lies inside the input folder {given}"
        if replaces_folder:
            for given, folder in self.folders:
                if real in folder.parents:
                    return f"holds the input folder {given}"
            for file in self.files.values():
                if real in Path(os.path.realpath(file)).parents:
                    return f"holds the input {file}"
        return None

    def check_options(self, targets: dict[str, str | os.PathLike | None]) -> None:
        """:meth:`check` every ``{option: target}`` given (``None``: the option is not given)."""
        for option, target in targets.items():
            if target is not None:
                self.check(target, option)

    def check(self, target: str | os.PathLike, option: str, replaces_folder: bool = False) -> None:
        """Raise :class:`UsageError` naming ``option`` and the input when ``target`` may not be written."""
        problem = self.problem(target, replaces_folder)
        if problem is not None:
            raise UsageError(f"{option} {target} {problem}; a command never writes over what it reads: choose "
                             "another path")


def is_glob(item: str) -> bool:
    """Whether a command-line INPUT is a glob pattern (``*``, ``?`` or ``[``) rather than a path."""
    return any(ch in item for ch in "*?[")


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Expand files, folders (their image files, sorted) and glob patterns into a list of paths."""
    paths: list[Path] = []
    for item in inputs:
        candidate = Path(item)
        if candidate.is_dir():
            paths.extend(sorted(p for p in candidate.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif is_glob(item):
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


#: The INPUT that means standard input, as image tools (``convert - ...``) take it.
STDIN = "-"
#: PIL format -> the suffix an input of that format gets when its name has none (standard input, a pipe).
_FORMAT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "TIFF": ".tif", "GIF": ".gif", "BMP": ".bmp",
                    "WEBP": ".webp", "PPM": ".ppm"}


def is_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read once as a stream: ``-`` (standard input), or an existing file that is not
    a regular file or a folder (``/dev/stdin``, a named pipe, ``<(cat a.png)``'s ``/dev/fd/63``)."""
    if str(path) == STDIN:
        return True
    path = Path(path)
    return path.exists() and not path.is_file() and not path.is_dir()


def read_stream(path: str | os.PathLike) -> tuple[bytes, str]:
    """The bytes of a stream input (see :func:`is_stream`) and the suffix of the image format they hold
    (``".png"``...; ``""`` when they hold no image PIL knows: reading them then fails with the reason).

    Raises:
        UsageError: ``-`` while standard input is a terminal (nothing was piped in), or an empty stream.
    """
    import sys

    name = "standard input" if str(path) == STDIN else str(path)
    if str(path) == STDIN:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("INPUT - reads one image from standard input, but nothing is piped in "
                             "(e.g. cat a.png | difiisr-dwt upscale - -o out/)")
        data = sys.stdin.buffer.read()
    else:
        data = Path(path).read_bytes()
    if not data:
        raise UsageError(f"{name}: empty (no image was piped in, or it was read already)")
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            suffix = _FORMAT_SUFFIXES.get(image.format or "", ".png")
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError):
        suffix = ""
    return data, suffix


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file (``"no such file"``, ``"is a directory, not a file"``), or
    ``None`` when it can be opened for reading (a regular file, or a pipe such as ``/dev/stdin``)."""
    path = Path(path)
    if path.is_dir():
        return "is a directory, not a file"
    if not path.exists():
        return "no such file"
    return None


def _read(path: Path, data: bytes | None, single: bool) -> list[PIL.Image.Image]:
    if data is None and (problem := not_a_file(path)):
        raise ImageReadError(f"{path}: {problem}")
    if data is None and is_stream(path):  # a pipe cannot seek: PIL gets its bytes
        data = path.read_bytes()
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
        reason = str(error).split(" <_io.")[0]  # "cannot identify image file", without PIL's repr of our buffer
        if data is not None and _looks_like_video(data):
            reason = "it holds a video, and videos are read from files only: save it, then give its path"
        raise ImageReadError(f"{path}: not a readable image ({reason})") from error


def _looks_like_video(data: bytes) -> bool:
    """Whether ``data`` starts like an MP4 / MOV (``ftyp`` box), Matroska / WebM (EBML), AVI or MPEG-TS."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or (data[:4] == b"RIFF" and data[8:12] == b"AVI ") \
        or (len(data) > 188 and data[0] == 0x47 and data[188] == 0x47)


def _upright(frame: PIL.Image.Image, gif: bool = False) -> PIL.Image.Image:
    """A decoded, independent copy of ``frame`` with its EXIF orientation applied; its ``info`` keeps the
    file's ICC profile, DPI and EXIF (orientation removed), and a TIFF's resolution tags (see
    :func:`kept_metadata`)."""
    frame.load()  # decode now: a truncated file fails here, not later inside the pipeline
    image = PIL.ImageOps.exif_transpose(frame)  # always a copy, so the file can be closed
    tags = getattr(frame, "tag_v2", None)  # a TIFF page's own resolution, which the copy does not carry
    if tags is not None and _X_RESOLUTION in tags:
        x = float(tags[_X_RESOLUTION])
        image.info["resolution"] = (x, float(tags.get(_Y_RESOLUTION, x)))
        image.info["resolution_unit"] = int(tags.get(_RESOLUTION_UNIT, 2))
    elif tags is not None:  # no resolution tag: PIL's placeholder (1, 1) is no DPI (x4 it claimed 4 dpi)
        for key in ("dpi", "resolution", "resolution_unit"):
            image.info.pop(key, None)
    if gif and image.mode in ("P", "RGB", "RGBA"):
        # PIL decodes a GIF's later frames as RGB(A) even when the first is a grey palette: keep grey
        # frames ``L`` so that the frames of one file come back alike.
        array = np.asarray(image.convert("RGB"))
        if (array == array[:, :, :1]).all() and not (image.mode == "RGBA" and image.getextrema()[3][0] < 255):
            image = PIL.Image.fromarray(array[:, :, 0])
    return image


def save_frames_atomic(frames: list[PIL.Image.Image], path: str | os.PathLike) -> None:
    """Save one image, or several as one multi-page TIFF (each page keeps its mode, 16-bit included; the
    first page's metadata goes to every page), atomically (see :func:`write_atomic`).

    Raises:
        ValueError: several frames for a ``path`` that is not ``.tif`` / ``.tiff``.
    """
    if len(frames) == 1:
        save_image_atomic(frames[0], path)
        return
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{path}: {len(frames)} frames can only be saved as a multi-page TIFF")
    buffer = io.BytesIO()  # PIL's multi-page TIFF writer reads back what it wrote: not a write-only file
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:], **save_options(frames[0], "TIFF"))
    write_atomic(path, lambda f: f.write(buffer.getbuffer()))
