"""``difiisr-dwt bench --section cost``: the CPU cost of a model folder's default call against another upscaler."""

from __future__ import annotations

import json
import types
from dataclasses import replace

import pytest

from difiisr_dwt.benchmarks import QUICK, timing
from difiisr_dwt.benchmarks.timing import ComponentTimer

# A stand-in for Real-ESRGAN's runner with the same command line (LR_DIR OUT_DIR --threads N): PIL bicubic x4.
FAKE_UPSCALER = """
import pathlib, sys
import PIL.Image
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
assert sys.argv[3:] == ["--threads", "2"], sys.argv
out.mkdir(parents=True, exist_ok=True)
for path in sorted(src.glob("*.png")):
    image = PIL.Image.open(path)
    image.resize((image.width * 4, image.height * 4), PIL.Image.BICUBIC).save(out / path.name)
"""


def test_component_timer_wraps_module_functions_and_splits_cpu_time(monkeypatch):
    """A module's function is timed while wrapped and put back afterwards; CPU time is split like wall time."""
    clock, cpu = [0.0], [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(timing.time, "process_time", lambda: cpu[0])
    module = types.ModuleType("fake_pipeline_module")

    def inner():
        clock[0] += 2.0
        cpu[0] += 3.0

    def outer():
        clock[0] += 1.0
        cpu[0] += 1.5
        module.inner()

    module.inner, module.outer = inner, outer
    with ComponentTimer() as timer:
        timer.wrap(module, "inner", "fidelity")
        timer.wrap(module, "outer", "decode")
        module.outer()
        assert module.inner is not inner
    assert module.inner is inner and module.outer is outer
    assert timer.seconds == {"decode": 1.0, "fidelity": 2.0}
    assert timer.cpu_seconds == {"decode": 1.5, "fidelity": 3.0}


@pytest.mark.slow
def test_cost_section_measures_a_model_folder_against_another_upscaler(saved_test_model, tmp_path, monkeypatch):
    from difiisr_dwt.benchmarks import cost
    from difiisr_dwt.benchmarks.report import format_markdown

    script = tmp_path / "fake_realesrgan.py"
    script.write_text(FAKE_UPSCALER)
    config = replace(QUICK, gpu_model=str(saved_test_model), cost_realesrgan=str(script), cost_folder_sizes=(1, 2))
    result = cost.bench_cost(config)

    assert result["settings"]["model"] == str(saved_test_model)
    split = result["components"]["per_call"]["cpu_s"]
    assert set(split) == {*cost.CATEGORIES, "total"}
    assert all(split[part] > 0 for part in ("encode", "unet", "decode", "fidelity", "total"))
    assert sum(split[part] for part in cost.CATEGORIES) == pytest.approx(split["total"])
    assert result["components"]["calls"]["unet"] == 3 * config.cost_component_repeats  # the default 3 steps
    for row, (width, height) in zip(result["sizes"], config.cost_sizes):
        assert row["lr_size"] == [width, height]
        assert row["output_megapixels"] == pytest.approx(16 * width * height / 1e6)
        assert row["decode_cpu_s_per_mp"] == pytest.approx(row["split"]["cpu_s"]["decode"] / row["output_megapixels"])
    for count, folder in result["process"]["folders"].items():
        assert folder["frames"] == int(count) and len(folder["runs"]["ours"]) == config.cost_repeats
        medians = folder["median"]
        assert folder["cpu_ratio"] == pytest.approx(medians["ours"]["cpu_s"] / medians["realesrgan"]["cpu_s"])
        assert medians["ours"]["cpu_s"] > 0 and medians["realesrgan"]["cpu_s"] > 0
    from difiisr_dwt.benchmarks.startup import STAGES

    startup = result["startup"]["median"]
    assert set(startup) == {*STAGES, "total"} and all(startup[stage] > 0 for stage in STAGES)
    assert startup["total"] == pytest.approx(sum(startup[stage] for stage in STAGES))
    channels_last = result["channels_last"]
    assert channels_last["cpu_ratio"] > 0 and channels_last["max_abs_diff_grey"] < 0.05
    text = format_markdown({"meta": {"date_utc": "now", "torch": "x", "torch_threads": 2}, "cost": result})
    assert "CPU ratio" in text and "decode CPU s/MP" in text
    assert "Start-up of a fresh process" in text and "channels-last latents" in text
    json.dumps(result)  # JSON-ready


def test_a_size_past_its_time_cap_is_reported_as_capped(tmp_path):
    """A size whose child process outruns ``cost_size_timeout_s`` (an attention decoder on a large frame) gives a
    row that says so, and the table shows the cap instead of figures."""
    from difiisr_dwt.benchmarks import cost
    from difiisr_dwt.benchmarks.report import format_markdown

    config = replace(QUICK, cost_isolate=True, cost_sizes=((16, 16),), cost_size_timeout_s=0.2)
    rows = cost.sizes(config)
    assert rows == [{"lr_size": [16, 16], "timed_out_s": 0.2}]
    section = {"settings": {"model": "m", "threads": 2}, "sizes": rows,
               "components": {"size": [16, 16], "repeats": 1, "per_call": {
                   clock: dict.fromkeys((*cost.CATEGORIES, "total"), 1.0) for clock in ("cpu_s", "wall_s")}}}
    text = format_markdown({"meta": {"date_utc": "now", "torch": "x", "torch_threads": 2}, "cost": section})
    assert "not finished within 0 s (capped)" in text


def test_cost_section_without_the_realesrgan_runner_says_so(tmp_path):
    from difiisr_dwt.benchmarks import cost

    config = replace(QUICK, cost_realesrgan=str(tmp_path / "missing.py"))
    result = cost.whole_process(config, tmp_path)
    assert "not found" in result["skipped"] and "missing.py" in result["skipped"]


def test_example_frames_are_distinct_160x128_frames():
    from difiisr_dwt.benchmarks.cost import example_frames

    frames = example_frames(6)
    assert len(frames) == 6 and all(f.size == (160, 128) and f.mode == "L" for f in frames)
    assert len({f.tobytes() for f in frames}) == 6


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _no_benchmark_run(*args, **kwargs):
    raise AssertionError("the benchmarks ran; the error should have come first")


def test_cost_frames_are_folders_or_files_and_fill_a_folder_of_six(tmp_path):
    """``--cost-frames``: a folder gives its images (sorted), a file itself; fewer frames than a folder needs are
    mirrored, then repeated."""
    import PIL.Image

    from difiisr_dwt.benchmarks.cost import example_frames, frame_files

    folder = tmp_path / "lr"
    folder.mkdir()
    for name, size in (("b.png", (40, 30)), ("a.tif", (40, 30))):
        PIL.Image.new("L", size, 100).save(folder / name)
    (folder / "notes.txt").write_text("not a frame")
    single = tmp_path / "one.png"
    PIL.Image.linear_gradient("L").resize((48, 32)).save(single)
    assert frame_files([folder, single]) == [folder / "a.tif", folder / "b.png", single]
    frames = example_frames(6, [single])
    assert len(frames) == 6 and all(f.size == (48, 32) and f.mode == "L" for f in frames)
    assert frames[1].tobytes() == frames[0].transpose(PIL.Image.FLIP_LEFT_RIGHT).tobytes()


@pytest.mark.parametrize("argv, message", [
    ([], "--cost-frames"),  # no examples/images (a wheel install): the error names the option
    (["--cost-frames", "nothere"], "--cost-frames nothere: no such file or folder"),
])
def test_cost_section_without_frames_names_the_option_before_any_work(argv, message, tmp_path, monkeypatch, capsys):
    from difiisr_dwt.benchmarks import cost
    from difiisr_dwt.cli import main

    monkeypatch.setattr(cost, "EXAMPLES", tmp_path / "site-packages" / "examples" / "images")
    monkeypatch.setattr("difiisr_dwt.commands.bench.run_benchmarks", _no_benchmark_run)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--section", "cost", "--no-whole-process", *argv]) == 2
    assert message in _one_error_line(capsys)


def test_default_realesrgan_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    """``../shared/tools/realesrgan_torch.py``, as ``--help`` says: of the working directory, not of the package
    (which a wheel puts in site-packages)."""
    from difiisr_dwt.benchmarks import cost

    script = tmp_path / "shared" / "tools" / "realesrgan_torch.py"
    script.parent.mkdir(parents=True)
    script.write_text(FAKE_UPSCALER)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("DIFIISR_SHARED", raising=False)
    assert cost.default_realesrgan() == script
    assert cost.realesrgan_script(QUICK) == script
    monkeypatch.setenv("DIFIISR_SHARED", str(tmp_path / "elsewhere"))
    assert cost.default_realesrgan() == tmp_path / "elsewhere" / "tools" / "realesrgan_torch.py"


@pytest.mark.parametrize("argv, message", [
    ([], "pass --realesrgan SCRIPT, or --no-whole-process"),
    (["--realesrgan", "missing.py"], "--realesrgan missing.py: no such file"),
])
def test_cost_section_without_the_runner_names_the_options_before_any_work(argv, message, tmp_path, monkeypatch,
                                                                            capsys):
    from difiisr_dwt.cli import main

    monkeypatch.delenv("DIFIISR_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/tools here
    monkeypatch.setattr("difiisr_dwt.commands.bench.run_benchmarks", _no_benchmark_run)
    assert main(["bench", "--section", "cost", *argv]) == 2
    err = _one_error_line(capsys)
    assert message in err and "--no-whole-process" in err


def test_cost_section_gets_absolute_frames_and_runner(tmp_path, monkeypatch):
    """What the command hands the cost section: the frames and the runner as absolute paths (its child processes
    run elsewhere), the runner found in ``../shared/tools`` of the working directory."""
    import PIL.Image

    from difiisr_dwt.cli import main

    script = tmp_path / "shared" / "tools" / "realesrgan_torch.py"
    script.parent.mkdir(parents=True)
    script.write_text(FAKE_UPSCALER)
    work = tmp_path / "work"
    (work / "lr").mkdir(parents=True)
    PIL.Image.new("L", (40, 32)).save(work / "lr" / "f.png")
    monkeypatch.chdir(work)
    monkeypatch.delenv("DIFIISR_SHARED", raising=False)
    seen = {}

    def fake_run(config, sections, threads=None, on_section=None):
        seen["config"] = config
        raise KeyboardInterrupt

    monkeypatch.setattr("difiisr_dwt.commands.bench.run_benchmarks", fake_run)
    assert main(["bench", "--section", "cost", "--cost-frames", "lr"]) == 130
    assert seen["config"].cost_frames == (str(work / "lr" / "f.png"),)
    assert seen["config"].cost_realesrgan is None  # the default, found: cost.realesrgan_script resolves it again


def test_startup_part_runs_on_the_given_frame_and_an_absolute_model(tmp_path, monkeypatch):
    """The start-up child runs in the package's folder: it gets the ``--cost-frames`` frame and an absolute
    model folder, never the checkout's examples (absent after a wheel install)."""
    import PIL.Image

    from difiisr_dwt.benchmarks import cost, startup

    PIL.Image.new("L", (40, 32)).save(tmp_path / "f.png")
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cost, "EXAMPLES", tmp_path / "no_examples")
    seen = {}

    def fake_compare(roots, model, threads, repeats, timeout, frame=None):
        seen.update(model=model, frame=frame)
        return {"runs": {str(r): [] for r in roots}, "median": {str(r): {} for r in roots}}

    monkeypatch.setattr(startup, "compare", fake_compare)
    cost.startup(replace(QUICK, gpu_model="model", cost_frames=("f.png",)))
    assert seen == {"model": str(tmp_path / "model"), "frame": tmp_path / "f.png"}


def test_an_interrupted_cost_section_keeps_its_finished_parts(tmp_path, monkeypatch):
    """``bench --section cost --json`` wrote the section only when all its parts were done: a run stopped in
    the 640x512 part (minutes) lost the whole-process and component figures measured before it."""
    from difiisr_dwt.benchmarks import cost, run_benchmarks
    from difiisr_dwt.benchmarks.report import format_markdown

    process = {"realesrgan": "r.py", "folders": {}}
    split = {clock: dict.fromkeys((*cost.CATEGORIES, "total"), 1.0) for clock in ("cpu_s", "wall_s")}
    monkeypatch.setattr(cost, "whole_process", lambda config, work: process)
    monkeypatch.setattr(cost, "components", lambda config: {"size": [16, 16], "repeats": 1, "per_call": split})

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(cost, "sizes", interrupted)
    saved = []
    with pytest.raises(KeyboardInterrupt):
        run_benchmarks(replace(QUICK, cost_frames=()), ("cost",),
                       on_section=lambda results: saved.append(json.loads(json.dumps(results))))
    assert [set(s["cost"]) for s in saved] == [{"settings", "process"}, {"settings", "process", "components"}]
    assert saved[-1]["cost"]["process"] == process
    text = format_markdown(saved[-1])
    assert "Per-component split" in text and "Not measured (the run stopped first): sizes." in text
