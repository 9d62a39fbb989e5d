"""``difiisr-dwt upscale INPUT... -o OUTDIR``: x4 super-resolve image files, folders, globs or a dataset.

x4 super-resolve infrared images. Grayscale stays grayscale, 16-bit stays 16-bit, radiometric files keep their
type, units and tags (16-bit / float TIFF; a FLIR R-JPEG gives a float TIFF of degrees Celsius and a preview;
--range LOW HIGH maps one range in their units for every frame); every frame of a multi-page
TIFF or GIF is kept (a multi-page TIFF out). An embedded ICC profile, the EXIF data (less the orientation,
which is applied) and the physical size (DPI and TIFF resolution x4) are kept. A rerun skips outputs that
exist. A file that cannot be read or processed is reported and skipped; the exit status is 1 if any failed.
A video (.mp4, .avi, .mkv, .mov...) gives NAME_x4.mp4 (H.264) or, with --lossless, NAME_x4.mkv (FFV1,
bit-exact), at the input's frame rate and frame count; with --sequence a folder of numbered frames gives a
folder of upscaled frames. Videos and sequences are sampled without per-frame noise (no flicker); an
interrupted video continues where it stopped.

INPUT - reads one image from standard input (output stdin_x4.png, or .tif for a TIFF or GIF; an existing one
counts as done only if made from the same bytes, else it is refused without --overwrite); -o - writes the
one result to standard output (progress and the summary line go to standard error):
`cat a.png | difiisr-dwt upscale - -o - > a_x4.png`.

Run under `accelerate launch --multi_gpu --num_processes N -m difiisr_dwt.cli upscale ...` to share the inputs
between N processes (GPUs, or CPU processes with ACCELERATE_USE_CPU=1); the work is done by
:func:`difiisr_dwt.archive.run_archive` in every process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from difiisr_dwt.errors import PartialFailure
from difiisr_dwt.loading import add_model_arguments
from difiisr_dwt.options import add_sampling_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``difiisr-dwt upscale`` (the parser itself comes from :mod:`difiisr_dwt.cli`)."""
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image or video files (.mp4 .avi .mkv .mov ...), folders or glob patterns; - for one "
                        "image from standard input")
    parser.add_argument("-o", "--output_dir", "--output-dir", required=True, type=Path,
                        help="folder for results (created if missing; a name ending in an image or video suffix "
                        "such as result.png is refused unless that folder exists: use -o - > result.png for one "
                        "file); - writes the one result to standard output")
    add_model_arguments(parser)
    add_sampling_arguments(parser)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=1,
                        help="same-size frames per pipeline call (default 1); results do not depend on it")
    parser.add_argument("--sequence", action="store_true",
                        help="read each folder INPUT as one sequence of numbered frames (one output folder, same "
                        "frame names; sampled as a video: no per-frame noise, one intensity range)")
    parser.add_argument("--lossless", action="store_true",
                        help="video outputs as FFV1 in MKV (bit-exact, 16-bit grey kept) instead of H.264 in MP4")
    parser.add_argument("--suffix", default="_x4", type=output_suffix,
                        help="appended to each output's file stem (default _x4; no path separators)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo outputs that exist instead of skipping them (only files this tool wrote: "
                        "another file of an output's name is refused)")
    parser.add_argument("--manifest", type=Path, default=None, metavar="OUT.json",
                        help="write a JSON manifest: input, output, size, seconds, status, error per input")
    data = parser.add_argument_group("dataset input (instead of INPUT)")
    data.add_argument("--dataset_name", "--dataset-name", default=None,
                      help="Hub dataset id, or a local image folder (read as `imagefolder`)")
    data.add_argument("--dataset_config", "--dataset-config", default=None, help="dataset configuration name")
    data.add_argument("--dataset_split", "--dataset-split", default="train", help="split (default train)")
    data.add_argument("--image_column", "--image-column", default=None,
                      help="image column (default: the first image column)")
    data.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it first")


def output_suffix(text: str) -> str:
    """An argparse ``type`` for ``--suffix``: text that stays inside the output's file name. A separator
    (``/``, ``\\``, ``os.sep``, ``os.altsep``) would send outputs out of ``-o`` (``--suffix /../../notes``), and
    NUL cannot be in a file name."""
    bad = [ch for ch in ("/", "\\", os.sep, os.altsep, "\0") if ch and ch in text]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r} contains {bad[0]!r}; the suffix is part of a file name, not a path")
    return text


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from difiisr_dwt.archive import run_archive
    from difiisr_dwt.distributed import process_group_ended
    from difiisr_dwt.output_folder import removed_if_left_empty

    if str(args.output_dir) == "-":
        return _run_to_stdout(args)
    # folders this run makes and leaves empty (every input failed, or an error) do not stay behind
    with removed_if_left_empty(args.output_dir), process_group_ended():
        counts = run_archive(args)
    if counts["failed"]:
        # the main process names the count; the others only set the exit status
        raise PartialFailure(f"{counts['failed']} input(s) failed" if PartialState().is_main_process else "")
    return 0


def _run_to_stdout(args: argparse.Namespace) -> int:
    """``-o -``: upscale the one input into a private temporary folder, then copy the result file to standard
    output; everything else the run prints (progress, the summary line) goes to standard error."""
    import shutil
    import sys
    import tempfile

    from difiisr_dwt.errors import UsageError
    from difiisr_dwt.io import is_glob, is_stream
    from difiisr_dwt.radiometric import preview_path

    name = args.inputs[0] if len(args.inputs) == 1 else None
    if name is not None and not is_stream(name) and not is_glob(name) and not Path(name).exists():
        raise UsageError(f"{name}: no such file")  # one file, but missing: not "give exactly one INPUT file"
    single = name is not None and (is_stream(name) or Path(name).is_file())
    if not single or args.dataset_name:
        raise UsageError("-o - writes one image to standard output: give exactly one INPUT file (or - for "
                         "standard input), not a folder, glob, several files or --dataset_name")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("-o - runs in one process; leave out accelerate launch")
    if sys.stdout.isatty():
        raise UsageError("-o - writes the image's bytes to standard output, which is a terminal; redirect it "
                         "(> out.png) or pipe it on")
    with tempfile.TemporaryDirectory(prefix="difiisr-dwt-stdout-") as folder:
        summary: list[str] = []
        args.output_dir, args.output_label, args.report_summary = Path(folder), "standard output", summary.append
        with contextlib.redirect_stdout(sys.stderr):
            run(args)  # a failed input raises: nothing reaches standard output
        files = [p for p in Path(folder).iterdir() if not p.name.startswith(".")]
        # an R-JPEG's temperatures go out; their 8-bit preview beside them does not
        (result,) = [p for p in files if not any(preview_path(q) == p for q in files if q != p)]
        try:
            with open(result, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # as the Python docs advise: stdout to devnull, so that the flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise UsageError("standard output was closed before the whole image was written (broken pipe: did "
                             "the command after | fail or stop reading?)") from None
    print(*summary, file=sys.stderr)
    return 0
