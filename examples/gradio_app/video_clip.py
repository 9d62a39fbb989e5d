"""The demo's video tab: a short thermal clip in, the x4 clip out (H.264 MP4, the input's frame rate).

It runs the command line's video path (:class:`difiisr_dwt.sequence.SequenceRunner`: no per-frame noise
draw, one intensity range for the clip, the fidelity step per frame), so it needs the ``difiisr_dwt``
package and PyAV; without them the app has no video tab.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from imaging import UploadError

from difiisr_dwt.archive import UpscaleOptions
from difiisr_dwt.io import ImageReadError
from difiisr_dwt.sequence import SequenceRunner, plan_sequence
from difiisr_dwt.video import VIDEO_SUFFIXES, probe_video

#: A demo request runs while others wait: short clips only (the command line takes any length).
MAX_CLIP_FRAMES = 48
#: 160x128 pixels per frame at most (x4: 640x512 out).
MAX_CLIP_PIXELS = 160 * 128
CLI_HINT = "for longer or larger clips run `difiisr-dwt upscale CLIP -o OUT/` on your machine"


@dataclass
class UpscaledClip:
    path: Path  # the x4 MP4
    info: str


def upscale_clip(pipe, path: str, output_root: Path, steps: int, max_frames: int = MAX_CLIP_FRAMES,
                 max_pixels: int = MAX_CLIP_PIXELS) -> UpscaledClip:
    """Upscale a short clip x4 into ``output_root`` (a fresh folder per request).

    Raises:
        UploadError: not a video, no frame count, too many frames or too large frames (the limits named).
    """
    source = Path(path)
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise UploadError(f"{source.name}: not a video file (use {', '.join(VIDEO_SUFFIXES)}).")
    try:
        info = probe_video(source)
    except ImageReadError as error:
        raise UploadError(f"{source.name}: cannot read it as a video ({error}).") from error
    if info.frame_count is None:
        raise UploadError(f"{source.name}: the file does not say how many frames it has; {CLI_HINT}.")
    if info.frame_count > max_frames:
        raise UploadError(f"{source.name} has {info.frame_count} frames; this demo takes at most {max_frames} "
                          f"({max_frames / float(info.frame_rate):.1f} s at its {float(info.frame_rate):g} fps); "
                          f"trim it, or {CLI_HINT}.")
    if info.width * info.height > max_pixels:
        raise UploadError(f"{source.name} is {info.width}x{info.height} per frame; this demo takes at most "
                          f"{max_pixels:,} pixels per frame; {CLI_HINT}.")
    if info.bit16:
        raise UploadError(f"{source.name}: a 16-bit video needs a lossless output; {CLI_HINT} --lossless.")
    folder = output_root / uuid.uuid4().hex
    folder.mkdir(parents=True)
    job = plan_sequence(source, folder, "_x4", lossless=False)
    options = UpscaleOptions(batch_size=4, seed=0, pipeline_options={"num_inference_steps": steps})
    start = time.perf_counter()
    record = SequenceRunner(pipe, options, {"demo": True}).run(job)  # its tqdm bar feeds gr.Progress
    seconds = time.perf_counter() - start
    width, height = record.size
    text = (f"{source.name}: {record.frames} frames of {info.width}x{info.height} at {float(info.frame_rate):g} fps "
            f"-> {width}x{height}, same rate; {steps} steps, no per-frame noise draw; {seconds:.1f} s on "
            f"{pipe.device.type}")
    return UpscaledClip(job.output, text)
