"""Upscale sequences: a video file (one output video) or a folder of numbered frames (one output folder).

Temporal stability by design, not by smoothing afterwards:

- **No per-frame noise draw.** Every frame is sampled with ``prior_noise_scale=0`` (and the default
  ``noise_scale=0``): the output is a deterministic function of the frame's content, so content that
  moves between frames gets the same detail, moved (the default image call starts from a fresh
  ``s_lr + kappa sqrt(eta_T) noise`` each frame, fixed to the frame, not to the content).
- **One intensity mapping for the whole sequence.** 8-bit frames map 0..255 to the model's input as
  always; 16-bit frames are not stretched by their own minimum and maximum but by one range for the
  whole sequence (the pipeline's ``value_range``, from
  :func:`difiisr_dwt.radiometric.sequence_value_range`: percentiles over all frames), so a value maps
  to the same model input in every frame.
- **The fidelity step per frame**: each output frame's bicubic /4 gives back its own input frame.

Resume: frames are written one by one (atomically) into a hidden work folder next to the output
(``.NAME.frames``) together with the settings they were made with; a killed run continues where it
stopped, a run with other settings starts over; the video is muxed (or the frame folder moved into
place) only when every frame is done, and the work folder is then removed. A run that fails because of its
input or options (a stream that breaks off, frames of two sizes: a rerun would fail alike) removes the work
folder too; an interrupted one (Ctrl-C, a kill) or one stopped by the machine (out of memory, a full disk)
keeps it for the next run to resume. A 16-bit video meant for the 8-bit MP4 is refused when it is planned,
from its header, before any frame is decoded.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from difiisr_dwt.archive import Record, UpscaleOptions, output_name, sequence_call_options, upscale_frames
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    collect_inputs,
    is_glob,
    read_frames,
    replace_dir,
    save_image_atomic,
    write_text_atomic,
)
from difiisr_dwt.output_folder import files_fingerprint
from difiisr_dwt.video import (
    LOSSY_16BIT,
    FrameTimes,
    VideoInfo,
    audio_note,
    is_video,
    output_rate,
    probe_video,
    read_video_frames,
    refuse_lossy_16bit,
    truncation_note,
    video_output_suffix,
    write_video,
)

SETTINGS_FILE = "settings.json"


@dataclass
class SequenceJob:
    """One sequence: a video file or a folder of frames (``frames``: their paths, in order)."""

    name: str
    path: Path
    output: Path
    frames: list[Path] | None = None  # a frame folder's files; None for a video
    lossless: bool = False
    position: int = 0

    @property
    def is_video(self) -> bool:
        return self.frames is None


def _natural_key(path: Path) -> list:
    """``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` in natural (numbered) order."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=_natural_key)


def plan_sequence(path: Path, output_dir: Path, suffix: str, lossless: bool, position: int = 0) -> SequenceJob:
    """The job of a video file (``out/STEM_x4.mp4``, ``.mkv`` when lossless) or a frame folder
    (``out/NAME_x4/``, one frame per input frame, same names: PNG, or TIFF for TIFF frames).

    Raises:
        ImageReadError: a folder with no image files.
        UsageError: a 16-bit grey video without ``lossless`` (the MP4 is 8-bit), found from its header.
    """
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise ImageReadError(f"{path}: no image files to read as a sequence")
        return SequenceJob(str(path), path, output_dir / f"{path.name}{suffix}", files, lossless, position)
    if not lossless:
        refuse_lossy_16bit(path)
    return SequenceJob(str(path), path, output_dir / f"{path.stem}{suffix}{video_output_suffix(lossless)}", None,
                       lossless, position)


def is_sequence_input(path: Path, sequence_folders: bool) -> bool:
    return is_video(path) or (sequence_folders and path.is_dir())


# ------------------------------------------------------------------------------------------------ frames in
def _frame_array(path: Path) -> np.ndarray:
    frames = read_frames(path)
    if len(frames) != 1:
        raise ImageReadError(f"{path}: has {len(frames)} frames; a sequence folder holds one frame per file")
    image = frames[0]
    if image.mode == "F":
        raise ImageReadError(f"{path}: float frames are not read as a sequence yet; upscale the files with "
                             "--range LOW HIGH --prior-noise-scale 0 (one mapping, no per-frame noise)")
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return np.asarray(image, dtype=np.int64).clip(0, 65535).astype(np.uint16)
    return np.asarray(image.convert("L" if image.mode in ("L", "1", "LA") else "RGB"))


def iter_frames(job: SequenceJob, info: VideoInfo | None, times: FrameTimes | None = None) -> Iterator[np.ndarray]:
    """The job's frames as arrays: `(H, W)` uint8/uint16 grey or `(H, W, 3)` uint8 RGB (``times``: collects a
    video's frame timestamps)."""
    if job.is_video:
        yield from read_video_frames(job.path, info, times)
    else:
        for path in job.frames:
            yield _frame_array(path)


def sequence_value_range(frames, percentiles: tuple[float, float] = (0.5, 99.5), margin: float = 0.05,
                         max_samples: int = 1_000_000) -> tuple[float, float]:
    """One ``(low, high)`` for all the frames of a 16-bit sequence: the ``percentiles`` of their pooled
    values (a few hot or dead pixels do not set the scale), widened by ``margin`` of the span per side;
    a flat sequence gets a span of 1 around its value."""
    samples = []
    for frame in frames:
        values = np.asarray(frame, dtype=np.float64).ravel()
        samples.append(values[:: max(1, values.size // max_samples)])
    low, high = (float(v) for v in np.percentile(np.concatenate(samples), percentiles))
    if high <= low:
        return low - 0.5, low + 0.5
    span = high - low
    return low - margin * span, high + margin * span


# ------------------------------------------------------------------------------------------------ the run
class SequenceRunner:
    """Upscales :class:`SequenceJob` s with one pipeline and one set of options (see the module's doc)."""

    def __init__(self, pipe, options: UpscaleOptions, settings: dict, show_progress: bool = True):
        self.pipe, self.options, self.show_progress = pipe, options, show_progress
        self.settings = {**settings, "call": dict(options.pipeline_options), "seed": options.seed}
        noisy = {k: v for k, v in options.pipeline_options.items() if k in ("noise_scale", "prior_noise_scale") and v}
        if noisy and show_progress:
            flags = " and ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in noisy.items())
            print(f"warning: {flags} draws noise in every frame: videos and sequences will flicker (0 keeps the "
                  "detail moving with the content)", file=sys.stderr)

    def run(self, job: SequenceJob, rank: int = 0) -> Record:
        def record(status: str, **fields) -> Record:
            return Record(input=job.name, output=str(job.output), status=status, rank=rank, position=job.position,
                          **fields)

        start = time.perf_counter()
        fingerprint = input_fingerprint(job)  # read once: is a finished output still current, can a resume go on
        if job.output.exists():
            log = self.options.output_log
            other = log.other_input(job.output, job.path, fingerprint) if log and not self.options.overwrite else None
            if other is not None:  # flight2/clip.mp4 into the folder of flight1/clip.mp4's output
                raise UsageError(f"{job.output} was made from another input, {other} (same name, other content); "
                                 "--overwrite replaces it, or choose another output folder or --suffix")
            changed = log is not None and log.input_changed(job.output, fingerprint)
            self._check_existing(job, changed)
            if not self.options.overwrite:
                if not changed:
                    return record("skipped")
                tqdm.write(f"note: {job.name} changed since {job.output} was made from it; upscaling it again",
                           file=sys.stderr)
        info = probe_video(job.path) if job.is_video else None
        if info is not None and info.bit16 and not job.lossless:  # before any work: not after every frame
            raise UsageError(f"{job.name}: {LOSSY_16BIT}")
        first = next(iter_frames(job, info))
        extra = sequence_call_options(first, iter_frames(job, info), self.options.pipeline_options)
        work = job.output.with_name(f".{job.output.name}.frames")
        settings = {**self.settings, "input": str(job.path.resolve()), "lossless": job.lossless, "extra": extra,
                    "fingerprint": fingerprint}
        settings = json.loads(json.dumps(settings))  # as read back (tuples become lists), to compare
        earlier = _read_settings(work)
        if self.options.overwrite or earlier != settings:
            if earlier is not None and not self.options.overwrite:
                _say_starting_over(job, work, earlier, settings)
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        for stale in work.glob(".*.tmp"):  # a frame whose atomic write was killed
            stale.unlink(missing_ok=True)
        try:
            write_text_atomic(json.dumps(settings, indent=2) + "\n", work / SETTINGS_FILE)
            count, times = self._upscale(job, info, first, work, extra)
            rate = output_rate(info, times) if info is not None else None
            self._finish(job, work, count, rate, fingerprint)
        except ValueError:  # the input or the options are refused (ImageReadError, UsageError): a rerun would
            shutil.rmtree(work, ignore_errors=True)  # fail alike, so no frames are kept for it to resume
            raise
        warnings = [note for note in (truncation_note(info, count, times), audio_note(info)) if note] \
            if info is not None else []
        for note in warnings:
            tqdm.write(f"warning: {job.name}: {note}", file=sys.stderr)
        height, width = first.shape[:2]
        return record("written", size=[width * 4, height * 4], frames=count, seconds=time.perf_counter() - start,
                      warning="; ".join(warnings) or None)

    def _upscale(self, job: SequenceJob, info: VideoInfo | None, first: np.ndarray, work: Path, extra: dict
                 ) -> tuple[int, FrameTimes]:
        """Every frame not in ``work`` yet, upscaled into it; returns the frame count and a video's timestamps."""
        names = [self._frame_name(job, index) for index in range(len(job.frames or ()))]
        total = len(names) if names else (info.frame_count if info else None)
        count = 0
        times = FrameTimes()
        batch: list[tuple[int, np.ndarray]] = []
        with tqdm(total=total, desc=Path(job.name).name, unit="frame", disable=not self.show_progress) as bar:
            for index, frame in enumerate(iter_frames(job, info, times)):
                count += 1
                if frame.shape != first.shape or frame.dtype != first.dtype:
                    raise ImageReadError(f"{job.name}: frame {index} is {frame.shape} {frame.dtype}, frame 0 is "
                                         f"{first.shape} {first.dtype}; a sequence's frames must match")
                name = names[index] if names else f"{index:06d}.png"
                if (work / name).exists():
                    bar.update()
                    continue
                batch.append((index, frame))
                if len(batch) >= self.options.batch_size:
                    self._run_batch(batch, work, names, extra)
                    bar.update(len(batch))
                    batch = []
            if batch:
                self._run_batch(batch, work, names, extra)
                bar.update(len(batch))
        return count, times

    @staticmethod
    def _frame_name(job: SequenceJob, index: int) -> str:
        path = job.frames[index]
        return output_name(path.stem, path.suffix.lower(), "")

    def _run_batch(self, batch: list[tuple[int, np.ndarray]], work: Path, names: list[str], extra: dict) -> None:
        extra = {**extra, "output_type": "np"}
        outputs = upscale_frames(self.pipe, [frame for _, frame in batch], self.options, extra)
        in_units = {**self.options.pipeline_options, **extra}.get("value_range") is not None
        for (index, frame), out in zip(batch, outputs):
            array = _from_unit(out, frame, in_units)
            save_image_atomic(PIL.Image.fromarray(array), work / (names[index] if names else f"{index:06d}.png"))

    def _check_existing(self, job: SequenceJob, changed: bool) -> None:
        """An existing output is this tool's: a video its output log lists; a frame folder whose files are all
        as the log says this tool wrote them, or (a folder an earlier version wrote, not in the log) holding no
        file but the sequence's frames. Without ``--overwrite`` it is skipped as finished, so the folder must
        hold them all (a frame added to the input folder since: not finished), unless the log says its input
        ``changed`` since (it is redone); with it, it is replaced.

        Raises:
            UsageError: naming the output.
        """
        overwrite, log = self.options.overwrite, self.options.output_log
        consequence = "--overwrite replaces only those" if overwrite else "it would be taken for a finished output"
        if job.is_video:
            if log is not None and not log.is_output(job.output):
                raise UsageError(f"{job.output} exists and is no earlier output of this tool ({consequence}). Move "
                                 "it away, or choose another output folder or --suffix")
            return
        frames = {self._frame_name(job, index) for index in range(len(job.frames))}
        found = {p.name for p in job.output.iterdir()} if job.output.is_dir() else {job.output.name}
        others = log.foreign_files(job.output) if log is not None and job.output.is_dir() else None
        what = "files this tool did not write there or that were edited since"
        if others is None:
            others, what = sorted(found - frames), "other files than the sequence's frames"
        if others:
            raise UsageError(f"{job.output} exists and holds {what} ({others[0]}{', ...' if len(others) > 1 else ''}"
                             "); " + ("--overwrite would delete them" if overwrite else consequence)
                             + ". Move it away, or choose another output folder or --suffix")
        if not overwrite and not changed and found != frames:
            raise UsageError(f"{job.output} holds {len(found)} of the sequence's {len(frames)} frames (frames added "
                             "to the input folder since, or deleted from the output); --overwrite redoes it")

    def _finish(self, job: SequenceJob, work: Path, count: int, frame_rate, fingerprint: dict) -> None:
        """Mux a video's frames at ``frame_rate`` (see :func:`~difiisr_dwt.video.output_rate`), or move a
        frame folder into place; the work folder is gone afterwards. The output log gets the output and the
        ``fingerprint`` of the input it was made from."""
        if job.is_video:
            frames = (_load(work / f"{i:06d}.png") for i in range(count))
            write_video(frames, job.output, frame_rate, job.lossless)
            shutil.rmtree(work, ignore_errors=True)
        else:
            (work / SETTINGS_FILE).unlink()
            replace_dir(work, job.output)
        if self.options.output_log is not None:  # a later run knows it for an output, made from this input
            self.options.output_log.add(job.output, input=fingerprint, input_path=job.path)


def input_fingerprint(job: SequenceJob) -> dict:
    """What identifies a sequence's content (:func:`difiisr_dwt.output_folder.files_fingerprint` of the video
    file, or of every frame file), so that a resumed run never mixes frames of two inputs that share a path
    and a finished output whose input changed since is redone."""
    return files_fingerprint([job.path] if job.is_video else list(job.frames))


def _say_starting_over(job: SequenceJob, work: Path, earlier: dict, settings: dict) -> None:
    """One stderr line: the frames an interrupted run left are discarded, and why."""
    done = sum(1 for p in work.iterdir() if p.name != SETTINGS_FILE and not p.name.startswith("."))
    changed = earlier.get("fingerprint") != settings["fingerprint"]
    why = ("its input changed since then (its files or their content)" if changed else
           "it was made with other settings")
    tqdm.write(f"note: {job.name}: discarding the {done} frame(s) an interrupted run left in {work}: {why}; "
               "starting over", file=sys.stderr)


def _load(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image)


def _read_settings(work: Path) -> dict | None:
    try:
        return json.loads((work / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _from_unit(out: np.ndarray, frame: np.ndarray, in_units: bool) -> np.ndarray:
    """The pipeline's `(H, W, C)` float output (in [0, 1], or in the input's units under a ``value_range``)
    -> the input frame's type and channels."""
    out = out[..., 0] if frame.ndim == 2 else out
    if in_units:
        return np.clip(np.round(out), 0, 65535).astype(np.uint16)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ planning
def split_inputs(inputs: list[str], sequence_folders: bool) -> tuple[list[str], list[Path]]:
    """``inputs`` (files, folders, globs) -> ``(image inputs, sequence inputs)``: video files (named, in a
    folder or matched by a glob: all three alike) are sequences, and so are folders when ``sequence_folders``
    (``--sequence``)."""
    images, sequences = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and sequence_folders:
            sequences.append(path)
        elif path.is_dir():
            images.append(item)
            sequences += sorted(p for p in path.iterdir() if p.is_file() and is_video(p))
        elif is_glob(item):
            for match in collect_inputs([item]):
                (sequences if is_video(match) else images).append(match if is_video(match) else str(match))
        elif is_video(path):
            sequences.append(path)
        else:
            images.append(item)
    return images, sequences


def plan_sequences(paths: list[Path], output_dir: Path, suffix: str, lossless: bool, first_position: int = 0
                   ) -> list[SequenceJob]:
    """One :class:`SequenceJob` per path, outputs distinct (compared case-insensitively).

    Raises:
        UsageError: two inputs with one output name, or an output that would replace an input.
        ImageReadError: a sequence folder with no image files.
    """
    jobs = [plan_sequence(path, output_dir, suffix, lossless, first_position + i) for i, path in enumerate(paths)]
    seen: dict[str, SequenceJob] = {}
    for job in jobs:
        other = seen.setdefault(job.output.name.casefold(), job)
        if other is not job:
            raise UsageError(f"{other.name} and {job.name} would both be written to {job.output}; rename one, or "
                             "upscale them into different folders")
        if job.output.resolve() == job.path.resolve():
            raise UsageError(f"the output of {job.name} would replace it; choose another output folder or --suffix")
    return jobs


def run_sequences(runner: SequenceRunner, jobs: list[SequenceJob], rank: int, num_processes: int,
                  on_done=None) -> list[Record]:
    """This process's share of ``jobs`` (every ``num_processes``-th); a sequence that fails is reported as
    one ``error: INPUT: reason`` line and the others go on."""
    records = []
    for job in jobs:
        if job.position % num_processes != rank:
            continue
        try:
            record = runner.run(job, rank)
        except (ValueError, RuntimeError, OSError) as error:  # ImageReadError / UsageError are ValueErrors
            text = str(error)
            reason = text[len(job.name) + 2:] if text.startswith(f"{job.name}: ") else text
            tqdm.write(f"error: {job.name}: {reason}", file=sys.stderr)
            record = Record(input=job.name, output=str(job.output), status="failed", error=reason, rank=rank,
                            position=job.position)
        records.append(record)
        if on_done is not None:
            on_done(record)
    return records
