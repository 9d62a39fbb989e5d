"""Upscale whole archives: job list and output names, sharding over accelerate processes, batching of
same-size frames, resumable runs and a JSON manifest. :mod:`difiisr_dwt.commands.upscale` is its CLI.

One job is one input (a file, or a row of a ``datasets`` dataset: :mod:`difiisr_dwt.dataset_input`) and one
output file; an input of several frames (multi-page TIFF, animated GIF) gives one multi-page TIFF. Output
names are fixed before any compute and are distinct, so processes never write the same file and a rerun finds the
outputs of an interrupted run (writes are atomic: an existing output is a complete one).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from difiisr_dwt import radiometric
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import (
    IMAGE_SUFFIXES,
    STDIN,
    ImageReadError,
    InputGuard,
    collect_inputs,
    is_stream,
    kept_metadata,
    read_frames,
    read_stream,
    save_frames_atomic,
    scale_resolution,
    write_text_atomic,
)
from difiisr_dwt.output_folder import OUTPUT_LOG, OutputLog, check_writable, file_fingerprint, remove_stale_temps
from difiisr_dwt.video import VIDEO_SUFFIXES

#: Input suffixes whose outputs are TIFF (multi-page where the input has several frames); the others give PNG,
#: which is lossless and keeps 16-bit grayscale. A FLIR radiometric JPEG gives a float TIFF of temperatures.
TIFF_OUTPUT_SUFFIXES = (".tif", ".tiff", ".gif")


@dataclass
class Source:
    """One input: a file (``path``), or a dataset row (``index``, with ``data`` bytes once fetched)."""

    name: str  # as the user knows it: the path, or ``dataset[index]`` / the row's file name
    stem: str
    suffix: str  # lower-case, with the dot; "" when unknown
    path: Path | None = None
    index: int | None = None
    data: bytes | None = field(default=None, repr=False)
    radiometric_jpeg: bool = False  # a FLIR R-JPEG: its output is a TIFF of temperatures
    # SHA-256 of a stream's bytes: its name ("stdin") says nothing of its content, so an existing output
    # counts as done only when it was made from these bytes (see :func:`check_stream_outputs`)
    digest: str | None = None


@dataclass
class Job:
    source: Source
    output: Path
    position: int  # in the full job list: the manifest keeps input order
    fingerprint: dict | None = None  # of the input file, once read (see OutputLog.input_changed)


@dataclass
class Record:
    """One manifest entry. ``size`` is the output's ``[width, height]`` in pixels; ``seconds`` this
    input's share of the compute (its frames' share of their batches)."""

    input: str
    output: str
    status: str  # "written", "skipped" or "failed"
    size: list[int] | None = None
    frames: int | None = None
    seconds: float = 0.0
    error: str | None = None
    warning: str | None = None  # written, but something is off (a video that looks truncated)
    rank: int = 0
    position: int = 0


# ------------------------------------------------------------------------------------------------ planning
def file_sources(inputs: list[str]) -> list[Source]:
    """Sources for files, folders (incl. ``.gif``) and globs; the same file named twice counts once.

    ``-`` is one image from standard input, named ``stdin`` (output ``stdin_x4.png``); it and other streams
    (``/dev/stdin``, a named pipe) are read here, once, so that their format picks the output's.
    """
    sources, seen = [], set()
    for path in collect_inputs(inputs):
        if is_stream(path):
            stdin = str(path) == STDIN
            if stdin and STDIN in seen:
                raise UsageError("INPUT - (standard input) given twice; it holds one image")
            seen.add(STDIN if stdin else os.path.realpath(path))
            data, suffix = read_stream(path)
            sources.append(Source(name="<stdin>" if stdin else str(path), stem="stdin" if stdin else path.stem,
                                  suffix=suffix, data=data, digest=hashlib.sha256(data).hexdigest(),
                                  radiometric_jpeg=radiometric.is_flir_jpeg(f"x{suffix}", data)))
            continue
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            sources.append(Source(name=str(path), stem=path.stem, suffix=path.suffix.lower(), path=path,
                                  radiometric_jpeg=radiometric.is_flir_jpeg(path)))
    return sources


def output_name(stem: str, input_suffix: str, suffix: str, tiff: bool = False) -> str:
    ext = ".tif" if tiff or input_suffix in TIFF_OUTPUT_SUFFIXES else ".png"
    return f"{stem}{suffix}{ext}"


def plan_jobs(sources: list[Source], output_dir: Path, suffix: str) -> list[Job]:
    """One output path per source, all distinct (compared case-insensitively, as macOS and Windows do).

    Inputs that would share a name get their input suffix in it (``a.png`` + ``a.jpg`` ->
    ``a_png_x4.png`` + ``a_jpg_x4.png``), dataset rows also their index.

    Raises:
        UsageError: inputs that still collide (same file name in two folders), each pair named; an
            output that would replace an input.
    """
    names = [_candidate(s, suffix, level=0) for s in sources]
    for level in (1, 2):  # rename only the inputs that clash, so that the others keep their plain names
        clashing = _collisions(names)
        for i in clashing:
            names[i] = _candidate(sources[i], suffix, level)
    clashing = _collisions(names)
    if clashing:
        by_name: dict[str, list[str]] = {}
        for i in clashing:
            by_name.setdefault(names[i].casefold(), []).append(sources[i].name)
        first = {names[i].casefold(): names[i] for i in reversed(clashing)}
        pairs = "; ".join(f"{' and '.join(group)} -> {first[key]}" for key, group in by_name.items())
        raise UsageError(
            f"{len(by_name)} output name collision(s) in {output_dir}: {pairs}; rename one of each, or upscale "
            "them into different folders"
        )
    jobs = [Job(source, output_dir / name, position) for position, (source, name) in enumerate(zip(sources, names))]
    inputs = {os.path.realpath(s.path) for s in sources if s.path is not None}
    overwritten = [job.source.name for job in jobs if os.path.realpath(job.output) in inputs]
    if overwritten:  # e.g. --suffix "" with -o the input folder
        raise UsageError(f"the output of {overwritten[0]} would replace an input ({len(overwritten)} in all); choose "
                         "another output folder or --suffix")
    return jobs


def check_stream_outputs(jobs: list[Job], output_log: OutputLog, overwrite: bool) -> None:
    """Refuse, before any compute, an existing output of a stream input (standard input, a pipe) that was
    not made from the same bytes: a rerun with other data piped in must not count the stale result as
    done. The same bytes again are done (skipped, as a file's existing output is).

    Raises:
        UsageError: naming the output, unless ``overwrite``.
    """
    for job in jobs:
        digest = job.source.digest
        if digest is None or overwrite or not job.output.exists() or output_log.made_from(job.output, digest):
            continue
        raise UsageError(f"{job.output} exists and was not made from the image now on {job.source.name} (the name "
                         "says nothing of a stream's content); --overwrite replaces it, or choose another output "
                         "folder")


def _candidate(source: Source, suffix: str, level: int) -> str:
    """Output name: level 0 the stem, 1 also the input suffix, 2 also a dataset row's index."""
    stem = source.stem
    if level >= 1 and source.suffix:
        stem += "_" + source.suffix.lstrip(".")
    if level >= 2 and source.index is not None:
        stem += f"_{source.index}"
    return output_name(stem, source.suffix, suffix, tiff=source.radiometric_jpeg)


def _collisions(names: list[str]) -> list[int]:
    count: dict[str, int] = {}
    for name in names:
        count[name.casefold()] = count.get(name.casefold(), 0) + 1
    return [i for i, name in enumerate(names) if count[name.casefold()] > 1]


# ------------------------------------------------------------------------------------------------ running
@dataclass
class UpscaleOptions:
    """How :func:`upscale_jobs` runs the pipeline: frames per call, the seed of every frame, whether
    existing outputs are redone, and the pipeline's keyword arguments (``num_inference_steps``,
    ``noise_scale``, ``lr_consistency``; see :func:`difiisr_dwt.options.apply_sampling_arguments`)."""

    batch_size: int = 1
    seed: int = 0
    overwrite: bool = False
    pipeline_options: dict = field(default_factory=dict)
    output_log: OutputLog | None = None  # where written outputs are logged (see :class:`OutputLog`)


def read_source(source: Source) -> list[PIL.Image.Image]:
    """The frames of a file or fetched dataset row (see :func:`difiisr_dwt.io.read_frames`); a radiometric
    file as ``I;16`` / ``F`` frames in its units (:func:`difiisr_dwt.radiometric.read_pil_frames`)."""
    # a stream or dataset row is named by its stem and the suffix of the format it holds
    path = source.path if source.path is not None else Path(f"{source.stem}{source.suffix}")
    frames = radiometric.read_pil_frames(path, data=source.data)
    if frames is None:
        return read_frames(source.path if source.path is not None else source.name, data=source.data)
    if frames[0].info[radiometric.PIL_INFO_KEY].source == "flir-rjpeg" and not source.radiometric_jpeg:
        raise ImageReadError(f"{source.name}: a FLIR radiometric JPEG gives a TIFF of temperatures; upscale it as a "
                             "file (a dataset row's output name is fixed before it is read)")
    return frames


class _Pending:
    """A job whose frames are in flight: results fill in by frame index; written when all are back."""

    def __init__(self, job: Job, frames: list[PIL.Image.Image]):
        self.job, self.results, self.seconds = job, [None] * len(frames), 0.0
        self.metadata = [kept_metadata(frame) for frame in frames]  # ICC, DPI, EXIF...: the outputs keep them
        self.widths = [frame.width for frame in frames]  # the DPI scales with the size (same physical size)
        self.radiometric = frames[0].info.get(radiometric.PIL_INFO_KEY)  # a radiometric file: written by tifffile
        self.extra: dict = {}  # pipeline arguments of this job's frames only (a sequence's)


def upscale_jobs(
    pipe,
    jobs: Iterable[Job],
    options: UpscaleOptions,
    read: Callable[[Source], list[PIL.Image.Image]] = read_source,
    rank: int = 0,
    on_done: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Upscale ``jobs`` with ``pipe``, ``options.batch_size`` same-size frames per pipeline call.

    Each frame gets its own ``torch.Generator("cpu").manual_seed(seed)``, so it comes out the same
    alone or in a batch. Existing outputs are skipped unless ``options.overwrite``. A file that cannot
    be read, upscaled or written fails alone (one ``error: INPUT: reason`` line on stderr); a batch that
    fails is retried frame by frame, so that one bad frame does not fail its neighbours.

    Returns:
        One :class:`Record` per job, in the order the jobs finished.
    """
    records: list[Record] = []
    buckets: dict[tuple[int, int], list[tuple[_Pending, int, PIL.Image.Image]]] = {}

    def finish(record: Record) -> None:
        if record.status == "failed":
            tqdm.write(f"error: {record.input}: {record.error}", file=sys.stderr)
        records.append(record)
        if on_done is not None:
            on_done(record)

    def fail(pending: _Pending, error: Exception) -> None:
        if pending.results is not None:
            pending.results = None  # its other frames are dropped when they come back
            finish(_record(pending.job, "failed", rank, error=_reason(error, pending.job.source.name)))

    def run_bucket(entries: list[tuple[_Pending, int, PIL.Image.Image]]) -> None:
        entries = [e for e in entries if e[0].results is not None]
        if not entries:
            return
        start = time.perf_counter()
        try:
            images = upscale_frames(pipe, [image for _, _, image in entries], options, entries[0][0].extra)
        except (ValueError, RuntimeError, OSError) as error:
            if len(entries) > 1:
                for entry in entries:
                    run_bucket([entry])
            else:
                fail(entries[0][0], error)
            return
        share = (time.perf_counter() - start) / len(entries)
        for (pending, index, _), image in zip(entries, images):
            if pending.results is None:
                continue
            pending.results[index], pending.seconds = image, pending.seconds + share
            if all(r is not None for r in pending.results):
                write(pending)

    def write(pending: _Pending) -> None:
        job, frames = pending.job, pending.results
        for frame, metadata, width in zip(frames, pending.metadata, pending.widths):
            frame.info.update(scale_resolution(metadata, frame.width / width))
        try:
            if pending.radiometric is not None:  # the input's type, units and tags (tifffile)
                radiometric.write_pil_frames(job.output, frames, pending.radiometric)
            else:
                save_frames_atomic(frames, job.output)
            if options.output_log is not None:
                options.output_log.add(job.output, job.source.digest, job.fingerprint, job.source.path)
        except (ValueError, OSError) as error:
            fail(pending, error)
            return
        pending.results = None
        finish(_record(job, "written", rank, size=list(frames[0].size), frames=len(frames), seconds=pending.seconds))

    for job in jobs:
        if job.fingerprint is None:  # before the read: a change during the run shows next time
            job.fingerprint = file_fingerprint(job.source.path)
        if job.output.exists() and not options.overwrite:
            if options.output_log is None or not options.output_log.input_changed(job.output, job.fingerprint):
                finish(_skipped(job, rank))
                continue
            tqdm.write(f"note: {job.source.name} changed since {job.output} was made from it; upscaling it again",
                       file=sys.stderr)
        try:
            frames = read(job.source)
            if len(frames) > 1 and job.output.suffix != ".tif":
                raise ImageReadError(
                    f"has {len(frames)} frames; only TIFF and GIF inputs may hold several (they give a multi-page TIFF)"
                )
        except ImageReadError as error:
            finish(_record(job, "failed", rank, error=_reason(error, job.source.name)))
            continue
        pending = _Pending(job, frames)
        if len(frames) > 1:  # a multi-page TIFF or GIF is a sequence: stable in time
            pending.extra = sequence_call_options(frames[0], frames, options.pipeline_options)
        for index, frame in enumerate(frames):
            key = (frame.size, tuple(sorted(pending.extra.items())))  # a batch shares its call's arguments
            bucket = buckets.setdefault(key, [])
            bucket.append((pending, index, frame))
            if len(bucket) >= options.batch_size:
                run_bucket(buckets.pop(key))
    for bucket in list(buckets.values()):
        run_bucket(bucket)
    return records


def upscale_frames(pipe, images: list[PIL.Image.Image], options: UpscaleOptions, extra: dict | None = None
                   ) -> list[PIL.Image.Image]:
    """One pipeline call for ``images`` (same size: one batch), one seeded generator per image; ``extra``:
    arguments that win over ``options.pipeline_options`` (a sequence's, :func:`sequence_call_options`)."""
    generators = [torch.Generator("cpu").manual_seed(options.seed) for _ in images]
    return pipe(images, generator=generators, **{**options.pipeline_options, **(extra or {})}).images


def sequence_call_options(first, frames: Iterable, pipeline_options: dict) -> dict:
    """The pipeline arguments that make the frames of one sequence (a video, a frame folder, a multi-page
    TIFF) stable in time, unless the user set them: ``prior_noise_scale=0`` (no per-frame noise draw: detail
    moves with the content) and, for 16-bit or float frames, one ``value_range`` for all of them
    (:func:`difiisr_dwt.radiometric.sequence_value_range`, which reads ``frames``; 8-bit frames keep 0..255).

    Args:
        first: the first frame (PIL image or numpy array), whose type decides whether a range is needed.
        frames: all the frames (an iterable read once, only when a range is needed).
    """
    extra = {"prior_noise_scale": pipeline_options.get("prior_noise_scale", 0.0)}
    wide = first.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F") if isinstance(first, PIL.Image.Image) else \
        np.asarray(first).dtype != np.uint8
    if wide and pipeline_options.get("value_range") is None:
        extra["value_range"] = radiometric.sequence_value_range(frames)
    return extra


def _reason(error: Exception, name: str) -> str:
    """The error's message without a leading ``NAME: `` (the line names the input once)."""
    text = str(error)
    return text[len(name) + 2 :] if text.startswith(f"{name}: ") else text


def _record(job: Job, status: str, rank: int, **fields) -> Record:
    return Record(input=job.source.name, output=str(job.output), status=status, rank=rank, position=job.position,
                  **fields)


def _skipped(job: Job, rank: int) -> Record:
    try:  # the header only: cheap even for a large archive
        with PIL.Image.open(job.output) as image:
            size, frames = list(image.size), getattr(image, "n_frames", 1)
    except (OSError, ValueError):
        size, frames = None, None
    return _record(job, "skipped", rank, size=size, frames=frames)


# ------------------------------------------------------------------------------------------------ summary
def summarize(records: list[Record]) -> dict[str, int]:
    counts = {"written": 0, "skipped": 0, "failed": 0}
    for record in records:
        counts[record.status] += 1
    return counts


def write_manifest(path: Path, records: list[Record], meta: dict) -> None:
    """``{"summary": {written, skipped, failed, total, ...meta}, "files": [records in input order]}``, atomically."""
    files = [asdict(r) for r in sorted(records, key=lambda r: r.position)]
    for entry in files:
        entry.pop("position")
    summary = {**summarize(records), "total": len(records), **meta}
    write_text_atomic(json.dumps({"summary": summary, "files": files}, indent=2) + "\n", path)


def progress(total: int | None, num_processes: int, enabled: bool) -> tuple[Callable[[Record], None], Callable]:
    """A bar over all files on the main process, advanced ``num_processes`` per file it finishes (the
    processes share the work evenly, so this tracks the whole run). Returns ``(on_done, close)``."""
    bar = tqdm(total=total, desc="upscale", unit="img", disable=not enabled)

    def on_done(record: Record) -> None:
        bar.update(min(num_processes, bar.total - bar.n) if bar.total else num_processes)

    def close() -> None:
        if bar.total:
            bar.update(bar.total - bar.n)
        bar.close()

    return on_done, close


def chunked_stream(jobs: Iterator[Job], rank: int, num_processes: int) -> Iterator[Job]:
    """Every ``num_processes``-th job of a stream, starting at ``rank`` (the whole stream's order)."""
    for job in jobs:
        if job.position % num_processes == rank:
            yield job


# ------------------------------------------------------------------------------------------------ the run
def _guarded(jobs: list[Job] | Iterator[Job], guard: InputGuard, manifest: Path | None, output_log: OutputLog,
             overwrite: bool) -> list[Job] | Iterator[Job]:
    """``jobs``, refused (:class:`UsageError`) where an output would replace an input or the manifest, or is
    an existing file this tool did not write (``output_log`` does not list it): ``--overwrite`` would replace
    someone's file, and without it the file would be taken for a finished output and skipped; or, without
    ``overwrite``, one it made from another input of the same name (:meth:`OutputLog.other_input`).

    A list is checked whole, before any compute; a stream job by job, before each job's compute.
    """

    def refuse(job: Job) -> None:
        problem = guard.problem(job.output)
        if problem is None and manifest is not None and os.path.realpath(manifest) == os.path.realpath(job.output):
            problem = "is also the --manifest"
        if problem is None and (job.output.exists() or job.output.is_symlink()) and not output_log.is_output(
                job.output):
            problem = (f"exists and is no earlier output of this tool (its {OUTPUT_LOG} does not list it, as it is "
                       "now): " + ("--overwrite replaces only those" if overwrite else
                                   "it would be taken for a finished output and skipped") + ". Move it away, or")
        if problem is None and not overwrite and job.output.exists() and job.source.path is not None:
            job.fingerprint = file_fingerprint(job.source.path)
            other = output_log.other_input(job.output, job.source.path, job.fingerprint)
            if other is not None:
                problem = f"was made from another input, {other} (same name, other content); --overwrite replaces it,"\
                    " or"
        if problem is not None:
            raise UsageError(f"the output {job.output} of {job.source.name} {problem}"
                             + (" " if problem.endswith(" or") else "; ") + "choose another output folder or --suffix")

    if isinstance(jobs, list):
        for job in jobs:
            refuse(job)
        return jobs

    def stream() -> Iterator[Job]:
        for job in jobs:
            refuse(job)
            yield job

    return stream()


def run_archive(args) -> dict[str, int]:
    """``difiisr-dwt upscale``, in every process of an ``accelerate launch`` (or alone).

    Reads from ``args`` (see :mod:`difiisr_dwt.commands.upscale`): ``inputs`` or ``dataset_name``
    (+ ``dataset_config``, ``dataset_split``, ``image_column``, ``streaming``), ``output_dir``, ``suffix``,
    ``model``, ``device``, ``dtype``, ``trust_remote_code``, ``batch_size``, the sampling options of
    :func:`difiisr_dwt.options.add_sampling_arguments`, ``overwrite``, ``manifest``.

    Every check that can fail before compute runs the same way in every process (so all stop
    together); the main process then removes stale temporary files, and the job list is split in
    contiguous shares. The summary and the manifest gather every process's records.

    Returns:
        ``{"written": n, "skipped": n, "failed": n}`` over all processes.

    Raises:
        UsageError: bad options, no inputs, colliding output names, an unwritable output folder.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env

    from difiisr_dwt.dataset_input import dataset_jobs
    from difiisr_dwt.loading import load_pipeline
    from difiisr_dwt.options import apply_sampling_arguments
    from difiisr_dwt.sequence import SequenceRunner, plan_sequences, run_sequences, split_inputs

    started = time.time()
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    radiometric.parse_value_range(getattr(args, "value_range", None))  # a bad --range fails before the model loads
    if bool(args.inputs) == bool(args.dataset_name):
        raise UsageError("give INPUT files/folders/globs or --dataset_name, not both" if args.inputs else
                         "give INPUT files/folders/globs or --dataset_name")
    # PartialState, unlike Accelerator, does not read ACCELERATE_USE_CPU itself
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and state.num_processes == 1:
        raise UsageError(f"launched as {os.environ['WORLD_SIZE']} processes, but accelerate set up a single-process "
                         "run, so each would upscale every input; on a machine without GPUs set ACCELERATE_USE_CPU=1")
    if state.num_processes > 1 and args.device not in ("auto", "cpu"):
        raise UsageError(f"--device {args.device} with {state.num_processes} processes: leave it out, accelerate "
                         "gives each process its own device")
    output_dir = Path(args.output_dir)
    manifest = Path(args.manifest) if args.manifest is not None else None
    guard = InputGuard().add_models(args.model)
    guard.check(output_dir, "-o")
    if not output_dir.exists() and output_dir.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        # "-o result.png" would quietly become a folder holding a_x4.png
        raise UsageError(f"-o {output_dir} names a folder for the outputs (NAME{args.suffix}.png inside it), but "
                         "looks like a file name; for one file use -o - > " + output_dir.name + ", or create the "
                         "folder first")
    if manifest is not None and manifest.is_dir():  # found now, not after all the work
        raise UsageError(f"--manifest {manifest} is a folder; give a file, e.g. {manifest / 'manifest.json'}")
    check_writable(output_dir)
    if manifest is not None:
        guard.check(manifest, "--manifest")
        check_writable(manifest.parent, "--manifest's folder")

    read = read_source
    sequences: list = []  # videos and --sequence folders
    output_log = OutputLog(output_dir, manifest)  # this folder's earlier outputs are not inputs
    if args.dataset_name:
        jobs, total, read = dataset_jobs(args.dataset_name, args.dataset_config, args.dataset_split, args.image_column,
                                         args.streaming, output_dir, args.suffix, state, skip=output_log.is_output)
        if Path(args.dataset_name).is_dir():  # a local folder: every file in it is an input
            guard.add(p for p in Path(args.dataset_name).rglob("*") if p.is_file() and not output_log.is_output(p))
    else:
        image_inputs, found_sequences = split_inputs(args.inputs, getattr(args, "sequence", False))
        sequence_inputs = [p for p in found_sequences if not output_log.is_output(p)]  # an earlier clip_x4.mp4
        found = file_sources(image_inputs)
        sources = [s for s in found if s.path is None or not output_log.is_output(s.path)]
        earlier = len(found) - len(sources) + len(found_sequences) - len(sequence_inputs)
        if not sources and not sequence_inputs:
            raise UsageError("no input images found" + (f" ({earlier} earlier output(s) of this tool in {output_dir}, "
                                                         "listed in its " + OUTPUT_LOG + ", are not inputs)"
                                                         if earlier else ""))
        if earlier and state.is_main_process:
            print(f"left out {earlier} earlier output(s) of this tool in {output_dir} (they are outputs, not inputs)")
        jobs = plan_jobs(sources, output_dir, args.suffix)
        check_stream_outputs(jobs, output_log, args.overwrite)
        sequences = plan_sequences(sequence_inputs, output_dir, args.suffix, getattr(args, "lossless", False),
                                   first_position=len(jobs))
        total = len(jobs) + len(sequences)
    if isinstance(jobs, list):
        guard.add(job.source.path for job in jobs if job.source.path is not None)
    if manifest is not None:
        guard.check(manifest, "--manifest")
    jobs = _guarded(jobs, guard, manifest, output_log, args.overwrite)
    if state.is_main_process and isinstance(jobs, list):
        ours = [job.output.name for job in jobs] + [job.output.name for job in sequences]
        if args.manifest is not None and Path(args.manifest).parent.resolve() == output_dir.resolve():
            ours.append(Path(args.manifest).name)
        removed = remove_stale_temps(output_dir, ours, before=started)
        if removed:
            print(f"removed {removed} temporary file(s) left by an interrupted run in {output_dir}")
    state.wait_for_everyone()

    if not state.is_main_process:  # one "Loading pipeline components" bar, not one per process
        import diffusers

        diffusers.utils.logging.disable_progress_bar()
    device = state.device if args.device == "auto" else args.device
    pipe = load_pipeline(args.model, device=str(device), dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    pipe.set_progress_bar_config(disable=True)  # one bar over files, not one per batch
    try:
        sampling = apply_sampling_arguments(pipe, args)
    except ValueError as error:  # a tile size the UNet cannot take
        raise UsageError(str(error)) from error
    options = UpscaleOptions(batch_size=args.batch_size, seed=args.seed, overwrite=args.overwrite,
                             pipeline_options=sampling, output_log=output_log)
    on_done, close = progress(total, state.num_processes, state.is_main_process)
    loop_start = time.perf_counter()
    if isinstance(jobs, list):
        with state.split_between_processes(jobs) as share:
            records = upscale_jobs(pipe, share, options, read, state.process_index, on_done)
    else:
        records = upscale_jobs(pipe, chunked_stream(jobs, state.process_index, state.num_processes), options, read,
                               state.process_index, on_done)
    if sequences:
        runner = SequenceRunner(pipe, options, {"model": str(args.model), "dtype": args.dtype},
                                show_progress=state.is_main_process)
        records += run_sequences(runner, sequences, state.process_index, state.num_processes, on_done)
    loop_seconds = time.perf_counter() - loop_start
    close()
    records = gather_object(records)
    rank_seconds = gather_object([loop_seconds])
    counts = summarize(records)
    if state.is_main_process:
        if args.manifest is not None:
            meta = {"processes": state.num_processes, "rank_seconds": rank_seconds, "batch_size": args.batch_size,
                    "seed": args.seed, "steps": args.steps, "model": args.model, "output_dir": str(output_dir)}
            write_manifest(Path(args.manifest), records, meta)
        skipped = f"{counts['skipped']} skipped (outputs exist; --overwrite redoes them)" if counts["skipped"] else \
            "0 skipped"
        warned = sum(1 for record in records if record.warning)
        # ``args.report_summary`` (``-o -``) holds the line back until the image is on standard output
        getattr(args, "report_summary", print)(
            f"{counts['written']} written" + (f" ({warned} with a warning, above)" if warned else "")
            + f", {skipped}, {counts['failed']} failed, of {len(records)} inputs -> "
            f"{getattr(args, 'output_label', None) or output_dir}"
            + (f" ({state.num_processes} processes)" if state.num_processes > 1 else ""))
    return counts
