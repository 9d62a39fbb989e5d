"""``difiisr-dwt bench``: a ``--quick`` smoke run checking the JSON/markdown structure and that every
figure is a positive finite number (never a timing assertion), plus the measuring tools themselves."""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import replace

import pytest
import torch

from difiisr_dwt.benchmarks import FULL, QUICK, timing
from difiisr_dwt.benchmarks.end_to_end import in_run_components, paired_ratio, predicted_ratio
from difiisr_dwt.benchmarks.tiling import bench_tiling
from difiisr_dwt.benchmarks.timing import ComponentTimer, measure_peak_rss
from difiisr_dwt.benchmarks.vq_start import VQStartEncoder
from difiisr_dwt.cli import main


def _run_cli(argv: list[str]) -> int:
    return main(["bench", *argv])


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    # One thread: the quick models are tiny, and extra threads only add contention on a shared machine.
    assert _run_cli(["--quick", "--threads", "1", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # restored
    return json.loads(out.read_text())


def test_quick_encoder_section(quick_results):
    section = quick_results["encoder"]
    assert section["params"]["dwt_encode"] == 90  # the 3x3 depthwise detail downsampler of 9 channels
    assert section["params"]["vq_encoder"] > section["params"]["dwt_encode"]
    assert [(r["height"], r["width"]) for r in section["sizes"]] == [(32, 32), (48, 64)]
    for row in section["sizes"]:
        assert set(row["seconds"]) == {"dwt_haar", "dwt_ptwt", "copy_floor", "elementwise_floor", "vq_encoder"}
        assert all(_positive(v) for v in row["seconds"].values()), row["seconds"]
        assert _positive(row["speedup_vq_over_dwt_haar"]) and _positive(row["dwt_haar_over_copy"])
        assert row["max_abs_diff_haar_vs_ptwt"] < 1e-5  # both paths compute the same transform


def test_quick_end_to_end_section(quick_results):
    section = quick_results["end_to_end"]
    assert [e["steps"] for e in section["pipelines"]] == [1, 4, 15]
    for entry in section["pipelines"]:
        steps = entry["steps"]
        for name in ("dwt", "vq_start"):
            run = entry[name]
            split = run["split_s"]
            assert _positive(run["total_s"]) and _positive(run["cpu_s"])
            assert set(split) == {"encoder", "adapter", "unet", "decoder", "other"}
            assert all(math.isfinite(v) and v >= 0 for v in split.values()), split
            assert sum(split.values()) == pytest.approx(run["total_s"], rel=1e-9)
            assert run["calls"]["unet"] == steps and run["calls"]["decoder"] == 1 and run["calls"]["encoder"] == 1
            # Per-call times of the run add up to its split.
            assert {k: len(v) for k, v in run["call_s"].items()} == run["calls"]
            assert all(sum(run["call_s"][k]) == pytest.approx(split[k], rel=1e-9) for k in run["call_s"])
            assert run["median_total_s"] == pytest.approx(run["total_s"])  # one repeat: the run itself
        assert entry["measured_ratio"] == pytest.approx(entry["dwt"]["total_s"] / entry["vq_start"]["total_s"])
        # The VQ start pipeline runs A once more, on Enc's latent: proof its start state came from the VQ encoder.
        assert entry["dwt"]["calls"]["adapter"] == steps
        assert entry["vq_start"]["calls"]["adapter"] == steps + 1
        assert _positive(entry["measured_ratio"]) and _positive(entry["predicted_ratio"])
        assert entry["predicted_ratio"] == pytest.approx(predicted_ratio(entry["component_seconds"], steps))
        assert entry["component_seconds"] == in_run_components([entry["dwt"]], [entry["vq_start"]])
        assert entry["predicted_isolated_ratio"] == pytest.approx(
            predicted_ratio(entry["isolated_component_seconds"], steps))
        assert entry["predicted_cpu_ratio"] == pytest.approx(predicted_ratio(entry["component_cpu_seconds"], steps))
        assert all(_positive(v) for v in entry["component_seconds"].values())
        assert all(_positive(v) for v in entry["isolated_component_seconds"].values())
    ldm = section["ldm"]
    assert ldm["steps"] == 100 and ldm["calls"]["unet"] == 100 and ldm["calls"]["decoder"] == 1
    acceptance = section["acceptance"]
    assert acceptance["other_share_steps"] == 15 and isinstance(acceptance["ratio_ok"], bool)


def test_quick_tiling_section(quick_results):
    section = quick_results["tiling"]
    assert [r["size"] for r in section["sizes"]] == [32, 64]
    for row in section["sizes"]:
        assert _positive(row["seconds"])
        if row["peak_rss_mb"] is not None:  # Linux: the probe works
            assert _positive(row["peak_rss_mb"]) and row["peak_over_start_mb"] >= 0
    assert quick_results["meta"]["torch_threads"] == 1


def test_quick_prints_markdown_tables(capsys):
    assert _run_cli(["--quick", "--threads", "1", "--only", "encoder"]) == 0
    text = capsys.readouterr().out
    assert "### Encoder" in text and "| output WxH |" in text and "### Tiling" not in text


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--e2e-size", "30"], ["--repeats", "0"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse rejects them before any work
        _run_cli(["--quick", *argv])
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_component_timer_counts_exclusive_time(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    class Model:
        def inner(self):
            clock[0] += 2.0

        def outer(self):
            clock[0] += 1.0
            self.inner()
            clock[0] += 0.5

    model = Model()
    with ComponentTimer() as timer:
        timer.wrap(model, "outer", "outer")
        timer.wrap(model, "inner", "inner")
        model.outer()
        model.inner()
    assert timer.seconds == {"outer": 1.5, "inner": 4.0}
    assert timer.calls == {"outer": 1, "inner": 2}
    assert timer.durations == {"outer": [1.5], "inner": [2.0, 2.0]}
    assert "outer" not in vars(model) and "inner" not in vars(model)  # class methods restored


def test_in_run_components_are_per_call_medians():
    def run(encoder, unet, decoder):
        return {"call_s": {"encoder": [encoder], "adapter": [0.001] * len(unet), "unet": unet, "decoder": [decoder]}}

    dwt_runs = [run(0.002, [1.0, 1.2], 3.0), run(0.004, [1.1, 5.0], 3.4)]
    vq_runs = [run(2.0, [1.3, 1.0], 2.9), run(2.2, [0.9, 1.05], 9.0)]
    c = in_run_components(dwt_runs, vq_runs)
    assert c == pytest.approx({"dwt_encoder": 0.003, "vq_encoder": 2.1, "adapter": 0.001,
                               "unet": (1.05 + 1.1) / 2, "decoder": (3.0 + 3.4) / 2})


def test_paired_ratio_cancels_drift():
    # The machine slows down 50% halfway; each back-to-back pair still shows the true ratio 0.5.
    dwt = [{"total_s": 1.0}, {"total_s": 1.0}, {"total_s": 1.5}, {"total_s": 1.5}]
    vq = [{"total_s": 2.0}, {"total_s": 2.0}, {"total_s": 3.0}, {"total_s": 3.0}]
    assert paired_ratio(dwt, vq, "total_s") == 0.5
    with pytest.raises(ValueError):
        paired_ratio(dwt, vq[:3], "total_s")


def test_predicted_ratio_is_the_ratio_of_component_sums():
    c = {"dwt_encoder": 0.0, "vq_encoder": 7.0, "adapter": 0.0, "unet": 1.5, "decoder": 13.0}
    for steps in (1, 4, 15):
        assert predicted_ratio(c, steps) == pytest.approx((steps * 1.5 + 13.0) / (7.0 + steps * 1.5 + 13.0))


def test_measure_peak_rss_sees_a_64mb_allocation():
    def allocate():
        x = torch.ones(16 * 1024 * 1024)  # 64 MB, written so the pages are resident
        return float(x[-1])

    result, memory = measure_peak_rss(allocate)
    assert result == 1.0
    if memory["peak_over_start_mb"] is None:
        pytest.skip("no resettable resident high-water mark on this OS (/proc/self/clear_refs)")
    assert memory["peak_over_start_mb"] > 50


def test_vq_start_encoder_is_adapter_of_vq_latent(tiny_pipeline):
    encoder = VQStartEncoder(tiny_pipeline.dwt_encoder, tiny_pipeline.vqvae)
    images = torch.rand(2, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        state = encoder.encode(images)
        expected = tiny_pipeline.dwt_encoder.project_latent(tiny_pipeline.vqvae.encode(images).latents)
    assert state.shape == (2, tiny_pipeline.dwt_encoder.out_channels, 4, 6)
    torch.testing.assert_close(state, expected)


@pytest.mark.slow
def test_tiling_child_process_reports_one_size():
    config = replace(QUICK, tiling_sizes=(32,), tiling_steps=1, tiling_isolate=True)
    result = bench_tiling(config, threads=1)
    (row,) = result["sizes"]
    assert row["size"] == 32 and _positive(row["seconds"])
    assert result["settings"]["isolated"] is True


def test_benchmarks_take_the_config_object():
    """Every section reads its settings from one ``BenchConfig``: no function repeats a field as a parameter
    (with a default of its own that could disagree, as the tiling sizes once did)."""
    from dataclasses import fields

    from difiisr_dwt.benchmarks import BenchConfig
    from difiisr_dwt.benchmarks.encoder import bench_encoder
    from difiisr_dwt.benchmarks.end_to_end import bench_end_to_end
    from difiisr_dwt.benchmarks.gpu_check import bench_gpu
    from difiisr_dwt.benchmarks.train_throughput import bench_training

    names = {f.name for f in fields(BenchConfig)}
    for function in (bench_encoder, bench_end_to_end, bench_tiling, bench_training, bench_gpu):
        parameters = list(inspect.signature(function).parameters)
        assert parameters[0] == "config" and not names & set(parameters), (function.__name__, parameters)
    assert FULL.tiling_sizes == (512, 1024, 2048)


def test_train_section_reports_throughput(tmp_path, capsys):
    import numpy as np
    import PIL.Image

    data = tmp_path / "ir"
    data.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        PIL.Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(data / f"{index}.png")
    out = tmp_path / "bench.json"
    code = _run_cli(["--quick", "--threads", "1", "--section", "train", "--train-steps", "2", "--json", str(out),
                     "--", "--train_data_dir", str(data), "--lpips_weight", "0", "--output_dir", str(tmp_path / "run")])
    assert code == 0
    section = json.loads(out.read_text())["train"]
    assert section["preset"] == "test" and section["batch"] == 2 and section["resolution"] == 64
    assert section["timed_steps"] == 2 and section["num_processes"] == 1
    assert _positive(section["s_per_step"]) and 0 <= section["data_wait_share"] < 1
    assert section["samples_per_s"] == pytest.approx(2 / section["s_per_step"])
    assert (tmp_path / "run" / "curves.csv").is_file()  # a training flag after "--" wins: the run is kept
    assert "### Training throughput" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--train-steps", "3"], "need --section train"),
    (["--", "--train_data_dir", "x"], "need --section train"),
    (["--section", "train", "--train-steps", "0"], "--train-steps must be >= 1"),
])
def test_bad_train_section_arguments(argv, message, capsys):
    from difiisr_dwt.cli import main

    assert main(["bench", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_decoder_benchmark_rows_and_ceiling(tmp_path):
    """The decoder comparison: per-size s/MP for each model; the ceiling has a row per model with and without
    back-projection, two copies of one model measure the same, and back-projection brings the output to the LR."""
    import numpy as np
    import PIL.Image

    from difiisr_dwt.benchmarks.decoder import decode_seconds, peak_memory_mb, reconstruction_ceiling
    from difiisr_dwt.presets import build_vqvae

    torch.manual_seed(0)
    vq = build_vqvae("test")
    for name in ("a", "b"):
        vq.save_pretrained(tmp_path / name)
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        smooth = np.kron(rng.integers(40, 220, (6, 8)), np.ones((8, 8))).astype(np.uint8)  # 48x64
        PIL.Image.fromarray(smooth).save(hr_dir / f"{index}.png")
    folders = [str(tmp_path / "a"), str(tmp_path / "b")]
    cost = decode_seconds(folders, [(8, 8), (16, 12)], repeats=1)
    assert all(_positive(cost[f][size]) for f in folders for size in ("8x8", "16x12"))
    memory = peak_memory_mb(folders[0], (16, 12))
    assert memory is None or memory >= 0
    ceiling = reconstruction_ceiling(folders, folders[0], hr_dir, metrics=("psnr_y", "ssim_y"))
    assert set(ceiling) == {"bicubic", "bicubic + BP", *folders, *(f + " + BP" for f in folders)}
    assert ceiling[folders[0]] == ceiling[folders[1]] and ceiling[folders[0]]["images"] == 2
    # an untrained decoder is far from the HR; back-projection onto the LR pulls it most of the way back
    assert ceiling[folders[0] + " + BP"]["psnr_y"] > ceiling[folders[0]]["psnr_y"] + 3


def test_quick_json_says_it_is_complete(quick_results):
    assert quick_results["meta"]["complete"] is True


def test_interrupted_bench_keeps_the_finished_sections(tmp_path, monkeypatch, capsys):
    """``--json`` is rewritten after each section: an interrupt during the second keeps the first."""
    from difiisr_dwt.benchmarks import encoder, end_to_end

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder, "bench_encoder", lambda config: {"done": 1})
    monkeypatch.setattr(end_to_end, "bench_end_to_end", interrupted)
    out = tmp_path / "bench.json"
    assert _run_cli(["--quick", "--section", "encoder", "--section", "end-to-end", "--json", str(out)]) == 130
    assert capsys.readouterr().err.endswith("error: interrupted\n")
    saved = json.loads(out.read_text())
    assert saved["encoder"] == {"done": 1} and "end_to_end" not in saved
    assert saved["meta"]["complete"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary file left


def _vq_folder(path):
    from difiisr_dwt.presets import build_vqvae

    torch.manual_seed(0)
    build_vqvae("test").save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("model, message", [
    ("nothere", "cannot load the VQModel nothere: no such folder"),
    ("pipeline", "no readable config.json"),  # a pipeline folder, not its vqvae/
])
def test_decoder_benchmark_bad_model_is_one_error_line(model, message, tmp_path, monkeypatch, capsys):
    from difiisr_dwt.benchmarks import decoder

    (tmp_path / "pipeline").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(decoder, "decode_seconds", lambda *a, **k: pytest.fail("ran before checking the models"))
    assert decoder.main([_vq_folder(tmp_path / "good"), model]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_decoder_benchmark_checks_lpips_weights_before_any_work(tmp_path, monkeypatch, capsys):
    """The ceiling's LPIPS backbone is looked for first, not after the minutes of the cost section."""
    import PIL.Image

    from difiisr_dwt import metrics
    from difiisr_dwt.benchmarks import decoder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty torchvision cache
    monkeypatch.delenv(metrics.LPIPS_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(metrics, "_LPIPS_CACHE", {})
    monkeypatch.setattr(decoder, "decode_seconds", lambda *a, **k: pytest.fail("ran before checking LPIPS"))
    (tmp_path / "hr").mkdir()
    PIL.Image.new("L", (32, 32)).save(tmp_path / "hr" / "a.png")
    vq = _vq_folder(tmp_path / "vq")
    assert decoder.main([vq, "--encoder", vq, "--hr", str(tmp_path / "hr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No ImageNet backbone for LPIPS-alex") and err.count("\n") == 1
    assert "--lpips_backbone_dir" in err
