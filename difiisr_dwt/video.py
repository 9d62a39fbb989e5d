"""Video files in and out through PyAV (FFmpeg): frames as numpy arrays, the frame rate kept exactly.

Grey stays grey: a video whose pixel format is grey, or whose first frame has equal colour channels (a
grey picture in a YUV/RGB stream), is read as its luma plane; 16-bit grey (``gray16le``, FFV1) is read
as ``uint16``. Outputs are H.264 in MP4 (``libx264``, ``yuv420p``: plays everywhere; lossy) or, with
``lossless``, FFV1 in Matroska (``gray`` / ``gray16le`` / ``bgr0``: bit-exact, 16-bit grey kept). PyAV's
wheels carry FFmpeg with ``libx264``; a PyAV without it writes MPEG-4 Part 2 into the MP4 instead.
"""

from __future__ import annotations

import os
import re
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
#: Why a 16-bit video is not written as the (8-bit) MP4.
LOSSY_16BIT = "a 16-bit video would lose its values in an 8-bit MP4; use --lossless (16-bit FFV1 in MKV)"


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
        duration: the video stream's own duration in seconds (its header, or Matroska's ``DURATION`` tag of
            the track), never a container's that holds other streams too (audio often runs longer);
            ``None`` when unknown.
        audio_streams: how many audio streams the file holds (they are not carried over to the output).
    """

    frame_rate: Fraction
    frame_count: int | None
    width: int
    height: int
    grey: bool
    bit16: bool
    frame_count_from: str = "header"
    duration: Fraction | None = None
    audio_streams: int = 0


@dataclass
class FrameTimes:
    """The presentation times of the frames read (see :func:`read_video_frames`): what the output's frame
    rate and the truncation check go by, since a variable-rate stream's nominal rate says little."""

    count: int = 0
    first: Fraction | None = None
    last: Fraction | None = None
    last_duration: Fraction | None = None
    complete: bool = True  # every frame had a timestamp, each later than the one before

    def add(self, frame) -> None:
        self.count += 1
        if frame.pts is None or not frame.time_base:
            self.complete = False
            return
        time = Fraction(frame.pts) * Fraction(frame.time_base)
        if self.last is not None and time <= self.last:
            self.complete = False
        if self.first is None:
            self.first = time
        self.last = time
        duration = getattr(frame, "duration", None)  # PyAV >= 14
        self.last_duration = Fraction(duration) * Fraction(frame.time_base) if duration else None

    def span(self, frame_rate: Fraction) -> Fraction | None:
        """From the first frame's start to the last frame's end (its own duration, else one nominal frame);
        ``None`` when a timestamp is missing or out of order."""
        if not self.complete or self.first is None:
            return None
        return self.last - self.first + (self.last_duration or 1 / Fraction(frame_rate))


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


def _is_bit16(pix_fmt: str) -> bool:
    """``gray16le``, ``gray12le``, ...: grey of more than 8 bits, read as ``uint16``."""
    return pix_fmt.startswith("gray") and pix_fmt != "gray"


def refuse_lossy_16bit(path: str | os.PathLike) -> None:
    """Refuse a 16-bit grey video meant for the 8-bit MP4 output, from the stream's header alone (no frame
    is decoded): before any work, not after every frame is upscaled. A file that cannot be read passes
    (reading it reports that).

    Raises:
        UsageError: ``PATH: a 16-bit video would lose its values ...; use --lossless ...``.
    """
    try:
        with _open(Path(path)) as container:
            pix_fmt = container.streams.video[0].codec_context.pix_fmt
    except ImageReadError:
        return
    if pix_fmt and _is_bit16(pix_fmt):
        raise UsageError(f"{path}: {LOSSY_16BIT}")


_DURATION_TAG = re.compile(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def _stream_duration(container, stream) -> tuple[Fraction | None, str]:
    """The video stream's own duration in seconds and where it comes from: its header, else the
    ``DURATION`` tag Matroska writers put on each track, else the container's when it holds no other stream."""
    if stream.duration and stream.time_base:
        return Fraction(stream.duration) * Fraction(stream.time_base), "stream duration"
    for key, value in stream.metadata.items():  # "DURATION" (FFmpeg) or "DURATION-eng" (mkvmerge)
        match = _DURATION_TAG.match(str(value).strip()) if key.upper().split("-")[0] == "DURATION" else None
        if match:
            hours, minutes, seconds = match.groups()
            return (int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)), "stream duration"
    if container.duration and len(container.streams) == 1:  # microseconds
        return Fraction(container.duration, 1_000_000), "container duration"
    return None, "header"


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
        duration, source = _stream_duration(container, stream)
        count = stream.frames or None
        if count is not None:
            source = "header"
        elif duration:
            count = round(duration * Fraction(rate))
        audio_streams = len(container.streams.audio)
        try:
            first = next(container.decode(stream))
        except StopIteration:
            raise ImageReadError(f"{path}: the video has no frames") from None
        except Exception as error:  # av.FFmpegError and its kin: a broken stream
            raise ImageReadError(f"{path}: cannot decode the video ({error})") from error
        pix_fmt = first.format.name
        if pix_fmt.startswith("gray"):
            grey, bit16 = True, _is_bit16(pix_fmt)
        else:
            rgb = first.to_ndarray(format="rgb24").astype(np.int16)
            grey, bit16 = bool(np.abs(rgb - rgb[..., :1]).max() <= 1), False
        return VideoInfo(Fraction(rate), count, first.width, first.height, grey, bit16, source, duration,
                         audio_streams)


def expected_frames(info: VideoInfo, times: FrameTimes | None = None) -> int | None:
    """How many frames the video declares (its header's count) or implies: its own duration times the rate
    of the frames decoded (``times``: their timestamps; a variable-rate stream's nominal rate would imply
    too many), else times its nominal rate; ``None`` when unknown."""
    if info.frame_count_from == "header" or info.duration is None:
        return info.frame_count
    span = times.span(info.frame_rate) if times is not None else None
    if not span or not times.count:
        return info.frame_count
    return round(info.duration * times.count / span)


def truncation_note(info: VideoInfo, decoded: int, times: FrameTimes | None = None) -> str | None:
    """A warning when fewer frames could be decoded than the video declares or its own duration implies (a
    file cut short: a copy or download that stopped), else ``None``. The decoded frames are real, so this
    warns, never fails. ``times``: the decoded frames' timestamps (see :func:`expected_frames`)."""
    expected = expected_frames(info, times)
    if expected is None or decoded >= expected:
        return None
    how = "declares" if info.frame_count_from == "header" else f"implies (its {info.frame_count_from})"
    return (f"looks truncated: {decoded} of the {expected} frames it {how} could be decoded; "
            f"{decoded} frame(s) written")


def audio_note(info: VideoInfo) -> str | None:
    """A warning for a video with audio (the output is video only), else ``None``."""
    if not info.audio_streams:
        return None
    streams = f"{info.audio_streams} stream{'s' if info.audio_streams > 1 else ''}"
    return f"its audio ({streams}) is not carried over: the output has no sound"


def output_rate(info: VideoInfo, times: FrameTimes | None) -> Fraction:
    """The output's frame rate: the input's nominal rate, exactly (``30000/1001`` stays), when the frames
    fill the video's duration at that rate to within half a frame; else (a variable-rate stream) the
    average rate, frames / duration, so that the output lasts as long as the input. The duration is the
    video stream's own (:attr:`VideoInfo.duration`), or the decoded frames' span when that is unknown or
    the file looks truncated."""
    rate = info.frame_rate
    span = times.span(rate) if times is not None else None
    if span is None or times.count < 2:
        return rate
    truncated = (expected_frames(info, times) or 0) > times.count
    duration = info.duration if info.duration and not truncated else span
    if abs(duration - times.count / rate) <= 1 / (2 * rate):
        return rate
    return (times.count / duration).limit_denominator(1001)


def read_video_frames(path: str | os.PathLike, info: VideoInfo, times: FrameTimes | None = None
                      ) -> Iterator[np.ndarray]:
    """The frames of a video in order: `(H, W)` ``uint8``/``uint16`` when ``info.grey``, else `(H, W, 3)` RGB.
    ``times``, when given, collects their timestamps.

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
                if times is not None:
                    times.add(frame)
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
        raise UsageError(LOSSY_16BIT)
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
