"""What a trained pipeline's default call costs on CPU (``difiisr-dwt bench --section cost --model DIR``).

Five measurements of one model folder (any: ``--model``; default the embedded model), all at
``cost_threads`` threads (2: a laptop's share):

1. **Whole process against Real-ESRGAN x4plus**, side by side in this run: CPU time (user + system, from
   ``resource.getrusage(RUSAGE_CHILDREN)``) of ``difiisr-dwt upscale DIR -o OUT`` (the default call) and of
   ``python realesrgan_torch.py DIR OUT --threads N`` (``cost_realesrgan``; by default
   ``../shared/tools/realesrgan_torch.py`` beside the checkout), on a folder of one 160x128 frame and a
   folder of six. Each command runs once untimed first (a warm-up: file caches, compiled bytecode), then
   ``cost_repeats`` times, the order alternating (A B, B A, ...); the ratio is of the medians.
2. **Per-component split** of the default call in this process, after a warm-up call: DWT encode
   (``prepare_condition``), UNet (``predict_vq_latents``), adapter (``dwt_encoder.project_latent``), VQ
   decode (``decode_vq_latents``) and the fidelity step (``apply_lr_consistency`` when the pipeline has it,
   else the module functions ``shrink_flat_detail`` / ``back_project``); CPU and wall seconds per call.
3. **Decode time per output megapixel and peak memory** per LR size (``cost_sizes``; 160x128 and 640x512)
   with decode and UNet tiling off, each size in a fresh process (run as ``python -m
   difiisr_dwt.benchmarks.cost '<json spec>'``): the process's resident high-water mark over the call
   (:func:`~difiisr_dwt.benchmarks.timing.measure_peak_rss`) after a warm-up call on a small crop.

4. **Start-up**: CPU seconds of each stage of a fresh process (imports, load, first and second call;
   :mod:`difiisr_dwt.benchmarks.startup`), median of ``cost_repeats`` processes: what the whole-process
   figure of part 1 is made of.
5. **channels_last**: the pipeline decoding from channels-last latents on CPU (its default,
   ``decode_channels_last``) against the same pipeline decoding in the default contiguous layout, calls
   alternating in this process: CPU ratio of the medians and the largest output difference in grey levels.

A size whose child process runs longer than ``cost_size_timeout_s`` (a quadratic attention over the latent
of a large frame) is reported as ``timed_out_s`` instead of figures: measured with a cap.

The frames are ``cost_frames`` (``--cost-frames``: folders or image files, read as grey), by default the
checkout's example LR frames (``examples/images``, four 160x128; a wheel does not ship them, so an installed
package needs ``--cost-frames``); the folder of six is those frames, then the same mirrored left-right (then
again, when there are fewer than six). Figures to report, not assertions.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import PIL.Image

from difiisr_dwt.benchmarks import BenchConfig
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import collect_inputs

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
#: The checkout's example LR frames: the default frames (absent after a wheel install, which ships no examples/).
EXAMPLES = REPO / "examples" / "images"
#: Real-ESRGAN x4plus on CPU (a comparison tool of the project's shared folder, not part of the package), as
#: ``--help`` documents it: relative to the working directory (``$DIFIISR_SHARED/tools/...`` when that is set).
DEFAULT_REALESRGAN = Path("..") / "shared" / "tools" / "realesrgan_torch.py"
#: (object attribute, category): what the split times, where the pipeline has it.
PIPELINE_COMPONENTS = (
    ("prepare_condition", "encode"), ("predict_vq_latents", "unet"), ("decode_vq_latents", "decode"),
    ("apply_lr_consistency", "fidelity"),
)
FIDELITY_FUNCTIONS = ("shrink_flat_detail", "back_project")
CATEGORIES = ("encode", "unet", "adapter", "decode", "fidelity", "other")


def default_realesrgan() -> Path:
    """Where the Real-ESRGAN runner is looked for without ``--realesrgan``: ``$DIFIISR_SHARED/tools`` when set,
    else ``../shared/tools`` of the working directory (not of the package, which may be in site-packages)."""
    shared = os.environ.get("DIFIISR_SHARED")
    script = Path(shared) / "tools" / DEFAULT_REALESRGAN.name if shared else DEFAULT_REALESRGAN
    return Path(os.path.abspath(script))  # against the working directory, '..' folded for the messages


def realesrgan_script(config: BenchConfig) -> Path:
    """The Real-ESRGAN runner ``config`` names, else :func:`default_realesrgan`."""
    return Path(config.cost_realesrgan) if config.cost_realesrgan else default_realesrgan()


def frame_files(paths: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The LR frames of the cost section: the image files of ``paths`` (folders: their images, sorted; files
    as given), or without ``paths`` the checkout's :data:`EXAMPLES`.

    Raises:
        UsageError: a path that does not exist, a folder without images, or no ``paths`` and no examples
            (a wheel install): the message names ``--cost-frames``.
    """
    if not paths:
        files = sorted(EXAMPLES.glob("*.png")) if EXAMPLES.is_dir() else []
        if not files:
            raise UsageError(f"no example frames in {EXAMPLES} (an installed package ships none): "
                             "pass --cost-frames DIR_OR_IMAGE (LR frames, e.g. a checkout's examples/images)")
        return files
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"--cost-frames {path}: no such file or folder")
        found = collect_inputs([str(path)])  # a folder's images, sorted, as upscale lists them; a file itself
        if not found:
            raise UsageError(f"--cost-frames {path}: no images in this folder")
        files += found
    return files


def example_frames(count: int, paths: Sequence[str | os.PathLike] = ()) -> list[PIL.Image.Image]:
    """``count`` grey LR frames from :func:`frame_files` (``paths``; default the checkout's examples): the
    frames, then the frames mirrored left-right, repeated while there are fewer than ``count``."""
    frames = []
    for path in frame_files(paths):
        with PIL.Image.open(path) as image:
            frames.append(image.convert("L"))
    pool = frames + [frame.transpose(PIL.Image.FLIP_LEFT_RIGHT) for frame in frames]
    return [pool[index % len(pool)] for index in range(count)]


def _child_env(threads: int) -> dict[str, str]:
    # The children must import this very checkout (PYTHONPATH first), not another install.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _run_measured(command: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run ``command``; its CPU seconds (user + system of the child and its children) and wall seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall}


def whole_process(config: BenchConfig, work: Path) -> dict:
    """Part 1: CPU time of the default call's whole process vs Real-ESRGAN's, per folder of frames."""
    script = realesrgan_script(config)
    if not script.is_file():
        return {"skipped": f"Real-ESRGAN runner not found at {script} (pass --realesrgan SCRIPT)"}
    env = _child_env(config.cost_threads)
    ours = [sys.executable, "-m", "difiisr_dwt.cli", "upscale", "--device", "cpu"]
    ours += ["--model", str(config.gpu_model)] if config.gpu_model else []
    folders = {}
    for count in config.cost_folder_sizes:
        folder = work / f"frames_{count}"
        folder.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(example_frames(count, config.cost_frames)):
            frame.save(folder / f"frame_{index}.png")

        def command(name: str, run: str, count: int = count, folder: Path = folder) -> list[str]:
            # a fresh output folder every run: `upscale` skips outputs that already exist
            out = str(work / f"{name}_{count}_{run}")
            if name == "ours":
                return [*ours, str(folder), "-o", out]
            return [sys.executable, str(script), str(folder), out, "--threads", str(config.cost_threads)]

        runs: dict[str, list[dict]] = {"ours": [], "realesrgan": []}
        for name in runs:  # warm-up, not counted
            _run_measured(command(name, "warmup"), env, config.cost_timeout_s)
        for repeat in range(config.cost_repeats):
            order = ("ours", "realesrgan") if repeat % 2 == 0 else ("realesrgan", "ours")
            for name in order:
                runs[name].append(_run_measured(command(name, str(repeat)), env, config.cost_timeout_s))
                # hidden files (the upscaler's output log) are not outputs
                folder = work / f"{name}_{count}_{repeat}"
                outputs = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
                if len(outputs) != count:  # a run that wrote nothing measured nothing
                    raise RuntimeError(f"{name} wrote {len(outputs)} outputs for {count} frames: {outputs}")
                logger.info("cost: %d frame(s), %s: %.1f s CPU", count, name, runs[name][-1]["cpu_s"])
        median = {name: {key: statistics.median(r[key] for r in values) for key in ("cpu_s", "wall_s")}
                  for name, values in runs.items()}
        folders[str(count)] = {
            "frames": count, "runs": runs, "median": median,
            "cpu_ratio": median["ours"]["cpu_s"] / median["realesrgan"]["cpu_s"],
            "wall_ratio": median["ours"]["wall_s"] / median["realesrgan"]["wall_s"],
        }
    return {"realesrgan": str(script), "folders": folders}


def _wrap_components(timer, pipe) -> None:
    """Wrap what :data:`PIPELINE_COMPONENTS` names; the fidelity functions only when there is no method."""
    for method, category in PIPELINE_COMPONENTS:
        if hasattr(pipe, method):
            timer.wrap(pipe, method, category)
    timer.wrap(pipe.dwt_encoder, "project_latent", "adapter")
    if not hasattr(pipe, "apply_lr_consistency"):
        module = sys.modules[type(pipe).__module__]
        for name in FIDELITY_FUNCTIONS:
            if hasattr(module, name):
                timer.wrap(module, name, "fidelity")


def split_call(pipe, image: PIL.Image.Image, repeats: int, seed: int = 0) -> dict:
    """Per-call seconds (CPU and wall) of each category over ``repeats`` default calls; ``other`` is the
    call's total minus the wrapped components (pre/post-processing, scheduler, copies)."""
    import torch

    from difiisr_dwt.benchmarks.timing import ComponentTimer

    cpu, wall = [], []
    with ComponentTimer() as timer:
        _wrap_components(timer, pipe)
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            pipe(image, generator=torch.Generator().manual_seed(seed))
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
    per_call = {"cpu_s": {}, "wall_s": {}}
    for key, split, total in (("cpu_s", timer.cpu_seconds, cpu), ("wall_s", timer.seconds, wall)):
        parts = {category: split.get(category, 0.0) / repeats for category in CATEGORIES[:-1]}
        parts["other"] = statistics.mean(total) - sum(parts.values())
        per_call[key] = {**parts, "total": statistics.mean(total)}
    return {"repeats": repeats, "calls": dict(timer.calls), "per_call": per_call}


def components(config: BenchConfig) -> dict:
    """Part 2: the per-component split of the default call on one example frame, in this process."""
    import torch

    from difiisr_dwt.loading import load_pipeline

    pipe = load_pipeline(config.gpu_model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.cost_threads)
    try:
        image = example_frames(1, config.cost_frames)[0]
        pipe(image, generator=torch.Generator().manual_seed(config.seed))  # warm-up
        result = split_call(pipe, image, config.cost_component_repeats, config.seed)
    finally:
        torch.set_num_threads(previous)
    return {"size": list(image.size), **result}


def _size_child(spec: dict) -> dict:
    """One LR size in this (fresh) process: decode time per output MP and the call's peak memory."""
    import torch

    from difiisr_dwt.benchmarks.timing import measure_peak_rss
    from difiisr_dwt.loading import load_pipeline

    torch.set_num_threads(spec["threads"])
    pipe = load_pipeline(spec["model"], device="cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.disable_decode_tiling()
    pipe.disable_unet_tiling()
    width, height = spec["lr_size"]
    image = example_frames(1, spec.get("frames", ()))[0].resize((width, height), PIL.Image.BICUBIC)
    pipe(image.crop((0, 0, min(width, 32), min(height, 32))), generator=torch.Generator().manual_seed(0))  # warm-up
    split, memory = measure_peak_rss(lambda: split_call(pipe, image, 1, spec["seed"]))
    megapixels = width * height * pipe.upscale_factor**2 / 1e6
    decode = {key: split["per_call"][key]["decode"] for key in ("cpu_s", "wall_s")}
    return {
        "lr_size": [width, height], "output_megapixels": megapixels, "split": split["per_call"],
        "decode_cpu_s_per_mp": decode["cpu_s"] / megapixels, "decode_wall_s_per_mp": decode["wall_s"] / megapixels,
        **memory,
    }


def sizes(config: BenchConfig) -> list[dict]:
    """Part 3: :func:`_size_child` per LR size of ``config.cost_sizes``, each in a fresh process (a row with
    ``timed_out_s`` where the child ran past ``config.cost_size_timeout_s``)."""
    rows = []
    for lr_size in config.cost_sizes:
        spec = {"model": config.gpu_model, "threads": config.cost_threads, "lr_size": list(lr_size),
                "seed": config.seed, "frames": [str(Path(p).resolve()) for p in config.cost_frames]}
        if config.cost_isolate:
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "difiisr_dwt.benchmarks.cost", json.dumps(spec)], capture_output=True,
                    text=True, env=_child_env(config.cost_threads), timeout=config.cost_size_timeout_s, check=False,
                )
            except subprocess.TimeoutExpired:
                rows.append({"lr_size": list(lr_size), "timed_out_s": config.cost_size_timeout_s})
                logger.info("cost: size %s timed out after %.0f s", lr_size, config.cost_size_timeout_s)
                continue
            if proc.returncode != 0:
                raise RuntimeError(f"cost benchmark at LR {lr_size} failed (exit {proc.returncode}):\n"
                                   f"{proc.stderr[-2000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            rows.append(_size_child(spec))
        logger.info("cost: size %s", json.dumps(rows[-1]))
    return rows


def startup(config: BenchConfig) -> dict:
    """Part 4: per-stage CPU seconds of a fresh process (:func:`difiisr_dwt.benchmarks.startup.measure`),
    median of ``cost_repeats`` processes."""
    from difiisr_dwt.benchmarks.startup import compare

    # The child runs in REPO, not in this working directory: a relative model folder is made absolute.
    model = config.gpu_model
    if model is not None and Path(model).exists():
        model = os.path.abspath(model)
    frame = Path(os.path.abspath(frame_files(config.cost_frames)[0]))
    result = compare([REPO], model, config.cost_threads, config.cost_repeats, config.cost_timeout_s, frame=frame)
    return {"runs": result["runs"][str(REPO)], "median": result["median"][str(REPO)]}


def channels_last(config: BenchConfig) -> dict:
    """Part 5: the default call with ``decode_channels_last`` on (the pipeline's default) and off, one pipeline, in
    this process: CPU seconds per call (medians of ``cost_component_repeats`` alternating calls after a warm-up
    each), their ratio, and the largest difference of the outputs (float, in 8-bit grey levels)."""
    import numpy as np
    import torch

    from difiisr_dwt.loading import load_pipeline

    pipe = load_pipeline(config.gpu_model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    layouts = {"channels_last": True, "contiguous": False}
    image = example_frames(1, config.cost_frames)[0]
    previous = torch.get_num_threads()
    torch.set_num_threads(config.cost_threads)
    outputs, seconds = {}, {name: [] for name in layouts}
    try:
        def call(name: str) -> None:
            pipe.decode_channels_last = layouts[name]
            generator = torch.Generator().manual_seed(config.seed)
            outputs[name] = pipe(image, generator=generator, output_type="np").images[0] * 255.0

        for name in layouts:  # warm-up
            call(name)
        for repeat in range(config.cost_component_repeats):
            for name in (list(layouts) if repeat % 2 == 0 else list(layouts)[::-1]):
                start = time.process_time()
                call(name)
                seconds[name].append(time.process_time() - start)
    finally:
        torch.set_num_threads(previous)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {"cpu_s": seconds, "median_cpu_s": median, "cpu_ratio": median["channels_last"] / median["contiguous"],
            "max_abs_diff_grey": float(np.abs(outputs["channels_last"] - outputs["contiguous"]).max())}


def bench_cost(config: BenchConfig, progress: Callable[[dict], None] | None = None) -> dict:
    """All three parts for ``config.gpu_model`` (``None``: the embedded model); see the module docstring.

    ``progress`` is called with the result so far after each part (``bench --json`` saves it: the parts take
    minutes each on 2 cores, and an interrupted run keeps those it finished).

    Returns:
        ``{"settings", "components", "sizes", "process", "startup", "channels_last"}`` (``process`` has
        ``skipped`` when the Real-ESRGAN runner is missing, or is absent when ``cost_whole_process`` is off;
        ``startup`` and ``channels_last`` are absent when ``cost_startup`` is off).
    """
    from difiisr_dwt import DEFAULT_MODEL

    settings = {
        "model": str(config.gpu_model or DEFAULT_MODEL), "threads": config.cost_threads,
        "repeats": config.cost_repeats, "component_repeats": config.cost_component_repeats,
        "sizes": [list(s) for s in config.cost_sizes], "folder_sizes": list(config.cost_folder_sizes),
        "size_timeout_s": config.cost_size_timeout_s,
        "frames": [str(path) for path in frame_files(config.cost_frames)],
    }
    # Each part is logged as JSON and reported when done: the 640x512 run without tiling can take long on a
    # busy machine.
    result: dict = {"settings": settings}

    def done(part: str, value, logged=None) -> None:
        result[part] = value
        logger.info("cost: %s %s", part, json.dumps(value if logged is None else logged))
        if progress is not None:
            progress(dict(result))

    if config.cost_whole_process:
        with tempfile.TemporaryDirectory(prefix="difiisr_cost_") as work:
            done("process", whole_process(config, Path(work)))
    done("components", components(config))
    done("sizes", sizes(config))
    if config.cost_startup:
        startup_result = startup(config)
        done("startup", startup_result, startup_result["median"])
        done("channels_last", channels_last(config))
    return result


if __name__ == "__main__":
    print(json.dumps(_size_child(json.loads(sys.argv[1]))))
