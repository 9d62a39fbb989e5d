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
