"""Where a fresh ``difiisr-dwt upscale`` process spends its CPU time before and during its first call.

One fresh Python process per run goes through the stages of the CLI's upscale path, in order, and reports
the CPU seconds (user + system, ``resource.getrusage``) of each:

``torch`` (``import torch``), ``diffusers`` (``import diffusers``), ``diffusers models``
(``DiffusionPipeline``, ``UNet2DModel``, ``VQModel``: diffusers imports every model class of a family
with the first one), ``package`` (the CLI's upscale parser, :mod:`difiisr_dwt.archive` and the pipeline
modules), ``load`` (:func:`~difiisr_dwt.loading.load_pipeline`), ``call 1`` and ``call 2`` (the default call
on one 160x128 example frame: the first call pays one-time set-up, a folder's later frames do not).

The stages are run by code given to ``python -c`` that uses only long-standing names of the package, so the
same measurement runs against another checkout (``--roots /work/main .``: the checkouts take turns, the
ratio is of the medians): the before/after of a start-up change, in one session.

``python -m difiisr_dwt.benchmarks.startup [--roots ROOT ...] [--model DIR] [--threads 2] [--repeats 3]
[--frame IMAGE]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from difiisr_dwt.errors import UsageError, report_errors

REPO = Path(__file__).resolve().parents[2]
STAGES = ("torch", "diffusers", "diffusers models", "package", "load", "call 1", "call 2")

# Run in the child: argv[1] is a JSON spec {"model", "threads", "frame"}; prints one JSON line of stage CPU seconds.
_CHILD = r"""
import json, resource, sys
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
spec = json.loads(sys.argv[1])
marks = [("start", cpu())]
import torch
torch.set_num_threads(spec["threads"])
marks.append(("torch", cpu()))
import diffusers
marks.append(("diffusers", cpu()))
from diffusers import DiffusionPipeline, UNet2DModel, VQModel
marks.append(("diffusers models", cpu()))
from difiisr_dwt.cli import build_parser
build_parser("upscale")
import difiisr_dwt.archive, difiisr_dwt.pipelines.pipeline_difiisr_dwt
from difiisr_dwt.loading import load_pipeline
marks.append(("package", cpu()))
pipe = load_pipeline(spec["model"], device="cpu")
pipe.set_progress_bar_config(disable=True)
marks.append(("load", cpu()))
import PIL.Image
image = PIL.Image.open(spec["frame"]).convert("L")
for index in (1, 2):
    pipe(image, generator=torch.Generator().manual_seed(0))
    marks.append((f"call {index}", cpu()))
print(json.dumps({name: end - start for (_, start), (name, end) in zip(marks, marks[1:])}))
"""


def example_frame() -> Path:
    """The first of the checkout's example LR frames (a wheel install has none: pass a frame instead)."""
    frames = sorted((REPO / "examples" / "images").glob("*.png"))
    if not frames:
        raise UsageError(f"no example frames in {REPO / 'examples' / 'images'}: pass --frame IMAGE (an LR frame)")
    return frames[0]


def measure(root: str | os.PathLike, model: str | None = None, threads: int = 2, timeout: float = 3600.0,
            frame: str | os.PathLike | None = None) -> dict:
    """One fresh process of the stages of :data:`STAGES` with the package of checkout ``root``: CPU seconds per
    stage (and ``total``, their sum); the calls are on ``frame`` (default :func:`example_frame`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # absolute: the child runs in ``root``, not in this working directory
    frame = os.path.abspath(frame if frame is not None else example_frame())
    spec = {"model": model, "threads": threads, "frame": frame}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=str(root), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"start-up stages with {root} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    stages = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**stages, "total": sum(stages.values())}


def compare(roots: list[str], model: str | None = None, threads: int = 2, repeats: int = 3,
            timeout: float = 3600.0, frame: str | os.PathLike | None = None) -> dict:
    """:func:`measure` ``repeats`` times per checkout, the checkouts taking turns (order reversed every round);
    per-stage medians, and each checkout's medians over the first one's (``ratio``)."""
    runs: dict[str, list[dict]] = {str(root): [] for root in roots}
    for repeat in range(repeats):
        for root in (roots if repeat % 2 == 0 else roots[::-1]):
            runs[str(root)].append(measure(root, model, threads, timeout, frame))
    medians = {root: {stage: statistics.median(run[stage] for run in values) for stage in (*STAGES, "total")}
               for root, values in runs.items()}
    first = medians[str(roots[0])]
    ratios = {root: {stage: value / first[stage] for stage, value in stages.items()}
              for root, stages in medians.items()}
    return {"threads": threads, "repeats": repeats, "model": model, "runs": runs, "median": medians, "ratio": ratios}


def format_table(result: dict) -> str:
    roots = list(result["median"])
    lines = [f"| stage | {' | '.join(f'{r} CPU s' for r in roots)} |"
             + "".join(f" {r} / first |" for r in roots[1:]), "|" + "---|" * (1 + 2 * len(roots) - 1)]
    for stage in (*STAGES, "total"):
        cells = [f"{result['median'][r][stage]:.3g}" for r in roots]
        cells += [f"{result['ratio'][r][stage]:.2f}" for r in roots[1:]]
        lines.append(f"| {stage} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", nargs="+", default=[str(REPO)], help="checkouts to compare (default: this one)")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frame", type=Path, default=None, metavar="IMAGE",
                        help="LR frame of the calls (default: the checkout's first examples/images frame)")
    args = parser.parse_args(argv)
    if args.frame is not None and not args.frame.is_file():
        raise UsageError(f"--frame {args.frame}: no such file")
    result = compare(args.roots, args.model, args.threads, args.repeats, frame=args.frame)
    print(json.dumps(result))
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(report_errors(main))
