"""Upscale whole archives: job list and output names, sharding over accelerate processes, batching of
same-size frames, resumable runs and a JSON manifest. :mod:`difiisr_dwt.commands.upscale` is its CLI.

One job is one input (a file, or a row of a ``datasets`` dataset) and one output file; an input of
several frames (multi-page TIFF, animated GIF) gives one multi-page TIFF. Output names are fixed
before any compute and are distinct, so processes never write the same file and a rerun finds the
outputs of an interrupted run (writes are atomic: an existing output is a complete one).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import PIL.Image
import torch
from tqdm.auto import tqdm

from difiisr_dwt import radiometric
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import (
    STDIN,
    ImageReadError,
    InputGuard,
    collect_inputs,
    is_stream,
    kept_metadata,
    read_frames,
    read_stream,
    save_frames_atomic,
    write_text_atomic,
)
from difiisr_dwt.output_folder import OUTPUT_LOG, OutputLog, check_writable, remove_stale_temps

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


@dataclass
class Job:
    source: Source
    output: Path
    position: int  # in the full job list: the manifest keeps input order


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
                                  suffix=suffix, data=data,
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
        self.radiometric = frames[0].info.get(radiometric.PIL_INFO_KEY)  # a radiometric file: written by tifffile


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
            images = upscale_frames(pipe, [image for _, _, image in entries], options)
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
        for frame, metadata in zip(frames, pending.metadata):
            frame.info.update(metadata)
        try:
            if pending.radiometric is not None:  # the input's type, units and tags (tifffile)
                radiometric.write_pil_frames(job.output, frames, pending.radiometric)
            else:
                save_frames_atomic(frames, job.output)
            if options.output_log is not None:
                options.output_log.add(job.output)
        except (ValueError, OSError) as error:
            fail(pending, error)
            return
        pending.results = None
        finish(_record(job, "written", rank, size=list(frames[0].size), frames=len(frames), seconds=pending.seconds))

    for job in jobs:
        if job.output.exists() and not options.overwrite:
            finish(_skipped(job, rank))
            continue
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
        for index, frame in enumerate(frames):
            bucket = buckets.setdefault(frame.size, [])
            bucket.append((pending, index, frame))
            if len(bucket) >= options.batch_size:
                run_bucket(buckets.pop(frame.size))
    for bucket in list(buckets.values()):
        run_bucket(bucket)
    return records


def upscale_frames(pipe, images: list[PIL.Image.Image], options: UpscaleOptions) -> list[PIL.Image.Image]:
    """One pipeline call for ``images`` (same size: one batch), one seeded generator per image."""
    generators = [torch.Generator("cpu").manual_seed(options.seed) for _ in images]
    return pipe(images, generator=generators, **options.pipeline_options).images


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


# ------------------------------------------------------------------------------------------------ datasets
def _image_column(features, column: str | None, dataset: str) -> str:
    import datasets

    if features is None:  # a stream without metadata: trust the flag
        return column or "image"
    if column is None:
        found = [k for k, v in features.items() if isinstance(v, datasets.Image)]
        if not found:
            raise UsageError(f"{dataset} has no image column ({list(features)}); pass --image_column")
        return found[0]
    if column not in features:
        raise UsageError(f"--image_column {column!r} is not in {dataset}: {list(features)}")
    return column


def _row_source(dataset: str, index: int, item: dict, with_data: bool) -> Source:
    """A dataset row's source; named from its file name when the dataset keeps one, else its index."""
    file_name = Path(item.get("path") or "").name
    stem, suffix = (Path(file_name).stem, Path(file_name).suffix.lower()) if file_name else (f"{index:06d}", "")
    local = item.get("bytes") is None and item.get("path")
    return Source(name=f"{dataset}[{index}]" + (f" ({file_name})" if file_name else ""), stem=stem, suffix=suffix,
                  path=Path(local) if local else None, index=index,
                  data=item.get("bytes") if with_data else None)


def unique_row_stems(sources: Iterable[Source], suffix: str) -> Iterator[Source]:
    """Dataset rows with output stems that are distinct, by one rule that a stream can follow too.

    A row keeps its file's stem unless an earlier row's output took that name (compared case-insensitively);
    then its row index is appended (``sub1/a.png`` -> ``a_x4.png``, ``sub2/a.png`` at row 1 -> ``a_1_x4.png``).
    The name depends only on the row and the rows before it, so a downloaded and a streamed run of the
    same dataset write the same files, and either one's rerun finds the other's outputs.
    """
    taken: set[str] = set()
    for source in sources:
        stem = source.stem
        while output_name(stem, source.suffix, suffix).casefold() in taken:
            stem = f"{stem}_{source.index}"
        taken.add(output_name(stem, source.suffix, suffix).casefold())
        source.stem = stem
        yield source


def dataset_jobs(
    name: str, config: str | None, split: str, column: str | None, streaming: bool, output_dir: Path, suffix: str,
    state=None, skip: Callable[[Path], bool] | None = None,
) -> tuple[list[Job] | Iterator[Job], int | None, Callable[[Source], list[PIL.Image.Image]]]:
    """Jobs for a Hub dataset or a local folder (``imagefolder``) through ``datasets``.

    Rows are read undecoded (``datasets.Image(decode=False)``) so that every frame of a file is kept
    and a process decodes only its own rows. Without ``streaming`` the job list is planned whole
    (an output that would replace an input refused before compute, see :func:`plan_jobs`); a stream is
    planned as it goes. Both name the outputs by :func:`unique_row_stems`, so they write the same files.
    Rows of local files for which ``skip(path)`` is true (earlier outputs in the folder,
    :meth:`OutputLog.is_output`) are left out before naming.

    Returns:
        ``(jobs, total or None, read)``.
    """
    import contextlib

    import datasets

    first = state.main_process_first() if state is not None else contextlib.nullcontext()
    with first:  # one process downloads and prepares the cache; the others then read it
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    column = _image_column(ds.features, column, name)
    raw = ds.cast_column(column, datasets.Image(decode=False))
    if not streaming:
        import pyarrow.compute as pc

        table = raw.with_format("arrow")[:][column]
        paths = pc.struct_field(table, "path").to_pylist()
        local = pc.is_null(pc.struct_field(table, "bytes")).to_pylist()  # a local file, read from its path
        sources = [_row_source(name, i, {"path": p, "bytes": None if is_local else b""}, with_data=False)
                   for i, (p, is_local) in enumerate(zip(paths, local))]
        sources = [s for s in sources if not (skip and s.path is not None and skip(s.path))]

        def read(source: Source) -> list[PIL.Image.Image]:
            item = raw[source.index][column]
            return read_frames(item.get("path") or source.name, data=item.get("bytes"))

        return plan_jobs(list(unique_row_stems(sources, suffix)), output_dir, suffix), len(sources), read

    def stream() -> Iterator[Job]:
        rows = (_row_source(name, index, row[column], with_data=True) for index, row in enumerate(raw))
        rows = (source for source in rows if not (skip and source.path is not None and skip(source.path)))
        for source in unique_row_stems(rows, suffix):
            yield Job(source, output_dir / output_name(source.stem, source.suffix, suffix), source.index)

    splits = ds.info.splits or {}
    total = splits[split].num_examples if split in splits else None
    return stream(), total, read_source


# ------------------------------------------------------------------------------------------------ the run
def _guarded(jobs: list[Job] | Iterator[Job], guard: InputGuard, manifest: Path | None,
             overwritten: OutputLog | None) -> list[Job] | Iterator[Job]:
    """``jobs``, refused (:class:`UsageError`) where an output would replace an input or the manifest, or
    (with ``overwritten``, the log of an ``--overwrite`` run) an existing file this tool did not write.

    A list is checked whole, before any compute; a stream job by job, before each job's compute.
    """

    def refuse(job: Job) -> None:
        problem = guard.problem(job.output)
        if problem is None and manifest is not None and os.path.realpath(manifest) == os.path.realpath(job.output):
            problem = "is also the --manifest"
        if problem is None and overwritten is not None and job.output.exists() and not overwritten.is_output(
                job.output):
            problem = (f"exists and is no earlier output of this tool (its {OUTPUT_LOG} does not list it); "
                       "--overwrite replaces only those. Move it away, or")
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

    from difiisr_dwt.loading import load_pipeline
    from difiisr_dwt.options import apply_sampling_arguments

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
    check_writable(output_dir)
    if manifest is not None:
        guard.check(manifest, "--manifest")
        check_writable(manifest.parent)

    read = read_source
    output_log = OutputLog(output_dir, manifest)  # this folder's earlier outputs are not inputs
    if args.dataset_name:
        jobs, total, read = dataset_jobs(args.dataset_name, args.dataset_config, args.dataset_split, args.image_column,
                                         args.streaming, output_dir, args.suffix, state, skip=output_log.is_output)
        if Path(args.dataset_name).is_dir():  # a local folder: every file in it is an input
            guard.add(p for p in Path(args.dataset_name).rglob("*") if p.is_file() and not output_log.is_output(p))
    else:
        found = file_sources(args.inputs)
        sources = [s for s in found if s.path is None or not output_log.is_output(s.path)]
        earlier = len(found) - len(sources)
        if not sources:
            raise UsageError("no input images found" + (f" ({earlier} earlier output(s) of this tool in {output_dir}, "
                                                         "listed in its " + OUTPUT_LOG + ", are not inputs)"
                                                         if earlier else ""))
        if earlier and state.is_main_process:
            print(f"left out {earlier} earlier output(s) of this tool in {output_dir} (they are outputs, not inputs)")
        jobs = plan_jobs(sources, output_dir, args.suffix)
        total = len(jobs)
    if isinstance(jobs, list):
        guard.add(job.source.path for job in jobs if job.source.path is not None)
    if manifest is not None:
        guard.check(manifest, "--manifest")
    jobs = _guarded(jobs, guard, manifest, output_log if args.overwrite else None)
    if state.is_main_process and isinstance(jobs, list):
        ours = [job.output.name for job in jobs]
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
        print(f"{counts['written']} written, {skipped}, {counts['failed']} failed, of {len(records)} inputs -> "
              f"{output_dir}" + (f" ({state.num_processes} processes)" if state.num_processes > 1 else ""))
    return counts
