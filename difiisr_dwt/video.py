"""Video files in and out through PyAV (FFmpeg): frames as numpy arrays, the frame rate kept exactly.

Grey stays grey: a video whose pixel format is grey, or whose first frame has equal colour channels (a
grey picture in a YUV/RGB stream), is read as its luma plane; 16-bit grey (``gray16le``, FFV1) is read
as ``uint16``. Outputs are H.264 in MP4 (``libx264``, ``yuv420p``: plays everywhere; lossy) or, with
``lossless``, FFV1 in Matroska (``gray`` / ``gray16le`` / ``bgr0``: bit-exact, 16-bit grey kept). PyAV's
wheels carry FFmpeg with ``libx264``; a PyAV without it writes MPEG-4 Part 2 into the MP4 instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import ImageReadError, write_atomic

#: Input suffixes read as video (one sequence per file).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts")
#: Constant rate factor of the lossy H.264 output: visually lossless for 8-bit grey.
H264_CRF = 16


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoInfo:
    """What a video's first stream says about itself.

    Args:
        frame_rate: frames per second, exact (``Fraction(30000, 1001)`` for NTSC).
        frame_count: from the header, or estimated from the duration; ``None`` when unknown.
        width, height: frame size in pixels.
        grey: frames are grey (read as `(H, W)` arrays).
        bit16: 16-bit grey frames (read as ``uint16``).
        frame_count_from: where ``frame_count`` comes from: ``"header"`` (the stream's frame count),
            ``"stream duration"`` or ``"container duration"`` (times the rate, rounded).
    """

    frame_rate: Fraction
    frame_count: int | None
    width: int
    height: int
    grey: bool
    bit16: bool
    frame_count_from: str = "header"


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:  # missing, unreadable, not a video
        raise ImageReadError(f"{path}: cannot read as a video ({getattr(error, 'strerror', None) or error})") from error
    if not container.streams.video:
        container.close()
        raise ImageReadError(f"{path}: has no video stream")
    return container


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header and first frame.

    Raises:
        ImageReadError: a missing file, a file FFmpeg cannot read, no video stream or no frame.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ImageReadError(f"{path}: the video stream has no frame rate")
        count, source = stream.frames or None, "header"
        if count is None and stream.duration and stream.time_base:
            count, source = round(float(stream.duration * stream.time_base * rate)), "stream duration"
        elif count is None and container.duration:  # microseconds
            count, source = round(container.duration / 1e6 * float(rate)), "container duration"
        try:
            first = next(container.decode(stream))
        except StopIteration:
            raise ImageReadError(f"{path}: the video has no frames") from None
        except Exception as error:  # av.FFmpegError and its kin: a broken stream
            raise ImageReadError(f"{path}: cannot decode the video ({error})") from error
        pix_fmt = first.format.name
        if pix_fmt.startswith("gray"):
            grey, bit16 = True, pix_fmt != "gray"
        else:
            rgb = first.to_ndarray(format="rgb24").astype(np.int16)
            grey, bit16 = bool(np.abs(rgb - rgb[..., :1]).max() <= 1), False
        return VideoInfo(Fraction(rate), count, first.width, first.height, grey, bit16, source)


def truncation_note(info: VideoInfo, decoded: int) -> str | None:
    """A warning when fewer frames could be decoded than the video declares (a file cut short: a copy or
    download that stopped), else ``None``. The decoded frames are real, so this warns, never fails."""
    if info.frame_count is None or decoded >= info.frame_count:
        return None
    how = "declares" if info.frame_count_from == "header" else f"implies (its {info.frame_count_from})"
    return (f"looks truncated: {decoded} of the {info.frame_count} frames it {how} could be decoded; "
            f"{decoded} frame(s) written")


def read_video_frames(path: str | os.PathLike, info: VideoInfo) -> Iterator[np.ndarray]:
    """The frames of a video in order: `(H, W)` ``uint8``/``uint16`` when ``info.grey``, else `(H, W, 3)` RGB.

    Raises:
        ImageReadError: a stream that breaks off mid-way.
    """
    path = Path(path)
    fmt = ("gray16le" if info.bit16 else "gray") if info.grey else "rgb24"
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format=fmt)
        except ImageReadError:
            raise
        except Exception as error:  # av.FFmpegError: a truncated or corrupt file
            raise ImageReadError(f"{path}: cannot decode the video ({error})") from error


def video_output_suffix(lossless: bool) -> str:
    return ".mkv" if lossless else ".mp4"


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, frame_rate: Fraction, lossless: bool) -> int:
    """Encode ``frames`` (`(H, W)` uint8/uint16 grey or `(H, W, 3)` uint8 RGB, all one size) at ``frame_rate``
    into ``path`` atomically (a temporary file, renamed when complete). Returns the number of frames.

    ``lossless``: FFV1 in Matroska (``gray``, ``gray16le`` or ``bgr0``: bit-exact); else H.264 in MP4
    (``libx264``, CRF :data:`H264_CRF`, ``yuv420p`` so that every player shows it).

    Raises:
        UsageError: a 16-bit frame for the lossy MP4 output (8 bits would lose its values), no frames.
    """
    import av

    count = 0

    def write(f) -> None:
        nonlocal count
        with av.open(f, "w", format="matroska" if lossless else "mp4") as container:
            stream = None
            for frame in frames:
                if stream is None:
                    stream = _add_stream(container, frame, frame_rate, lossless)
                fmt = "gray16le" if frame.dtype == np.uint16 else ("gray" if frame.ndim == 2 else "rgb24")
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=fmt)
                video_frame.pts = count
                container.mux(stream.encode(video_frame))
                count += 1
            if stream is None:
                raise UsageError(f"{path}: no frames to write")
            container.mux(stream.encode(None))

    write_atomic(path, write)
    return count


def _add_stream(container, frame: np.ndarray, frame_rate: Fraction, lossless: bool):
    import av

    if frame.dtype == np.uint16 and not lossless:
        raise UsageError("a 16-bit video would lose its values in an 8-bit MP4; use --lossless (16-bit FFV1 in MKV)")
    if lossless:
        stream = container.add_stream("ffv1", rate=frame_rate)
        stream.pix_fmt = ("gray16le" if frame.dtype == np.uint16 else "gray") if frame.ndim == 2 else "bgr0"
    elif "libx264" in av.codecs_available:
        stream = container.add_stream("libx264", rate=frame_rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(H264_CRF)}
    else:  # a PyAV built on an FFmpeg without x264 (the PyPI wheels have it): MPEG-4 Part 2, near-lossless q
        stream = container.add_stream("mpeg4", rate=frame_rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
    stream.width, stream.height = frame.shape[1], frame.shape[0]
    stream.time_base = 1 / frame_rate
    return stream
