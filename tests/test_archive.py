"""``difiisr-dwt upscale`` over archives: output names, multi-frame files, EXIF orientation, batching,
manifest, resume after kill -9, datasets, and two accelerate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.io import ImageReadError, collect_inputs, read_frames, read_image
from difiisr_dwt.output_folder import OUTPUT_LOG

REPO = Path(__file__).resolve().parent.parent


def _frame(seed: int, size: tuple[int, int] = (16, 12), mode: str = "L") -> PIL.Image.Image:
    rng = np.random.RandomState(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    return PIL.Image.fromarray((rng.rand(*shape) * 255).astype(np.uint8))


def _upscale(model: Path, *args: str) -> list[str]:
    return ["upscale", *args, "--model", str(model), "--steps", "1", "--device", "cpu"]


def _max_diff(a: Path, b: Path) -> int:
    frames_a, frames_b = read_frames(a), read_frames(b)
    assert len(frames_a) == len(frames_b)
    return max(int(np.abs(np.asarray(x, np.int64) - np.asarray(y, np.int64)).max()) for x, y in zip(frames_a, frames_b))


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}
    return env


# ------------------------------------------------------------------------------------------------ item 1: names
def test_colliding_names_get_distinct_outputs_and_counts_match_files(saved_test_model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["a.png", "a.jpg", "b.tif", "b.tiff"]):
        _frame(i).save(folder / name)
    out = tmp_path / "out"
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out))) == 0
    created = sorted(p.name for p in out.iterdir())
    assert created == [OUTPUT_LOG, "a_jpg_x4.png", "a_png_x4.png", "b_tif_x4.tif", "b_tiff_x4.tif"]
    assert "4 written, 0 skipped, 0 failed" in capsys.readouterr().out  # the written count is the files created
    # each output is its own input's result, not a copy of its namesake's
    assert _max_diff(out / "a_png_x4.png", out / "a_jpg_x4.png") > 10


def test_same_name_in_two_folders_is_refused_before_compute(tmp_path, capsys):
    for sub in ("day", "night"):
        (tmp_path / sub).mkdir()
        _frame(0).save(tmp_path / sub / "f1.png")
    # a model that does not exist: the refusal must come before it would be loaded
    code = main(_upscale(tmp_path / "no_model", str(tmp_path / "day"), str(tmp_path / "night"), "-o",
                         str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "day" / "f1.png") in err and str(tmp_path / "night" / "f1.png") in err
    assert "collision" in err and not (tmp_path / "out").exists()  # nothing written, the folder not left behind


def test_output_that_would_replace_its_input_is_refused(tmp_path, capsys):
    _frame(0).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    code = main(_upscale(tmp_path / "no_model", str(tmp_path), "-o", str(tmp_path), "--suffix", ""))
    assert code == 2 and "would replace an input" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before


def test_processes_that_each_think_they_are_alone_are_refused(tmp_path, monkeypatch, capsys):
    # `accelerate launch --multi_gpu` on a CPU machine without ACCELERATE_USE_CPU=1: every process
    # would upscale every input into the same files
    _frame(0).save(tmp_path / "a.png")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    code = main(_upscale(tmp_path / "no_model", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")))
    assert code == 2 and "ACCELERATE_USE_CPU=1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ item 2: frames
def test_multi_page_16bit_tiff_and_gif_keep_every_frame(saved_test_model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    pages = [PIL.Image.fromarray((1000 * (k + 1) + np.arange(96).reshape(8, 12) * 7).astype(np.uint16))
             for k in range(3)]
    pages[0].save(folder / "stack.tif", save_all=True, append_images=pages[1:])
    gif = [_frame(k, (12, 8)) for k in range(3)]
    gif[0].save(folder / "clip.gif", save_all=True, append_images=gif[1:])
    assert [p.name for p in collect_inputs([str(folder)])] == ["clip.gif", "stack.tif"]  # folders include .gif
    out = tmp_path / "out"
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out), "--batch-size", "3")) == 0
    tiff = read_frames(out / "stack_x4.tif")
    assert [(f.mode, f.size) for f in tiff] == [("I;16", (48, 32))] * 3
    means = [np.asarray(f, np.float64).mean() for f in tiff]
    assert means[0] < means[1] < means[2]  # the pages in their order, each from its own input page
    clip = read_frames(out / "clip_x4.tif")
    assert [(f.mode, f.size) for f in clip] == [("L", (48, 32))] * 3


def test_multi_frame_png_fails_with_frame_count_and_readers_refuse(saved_test_model, tmp_path, capsys):
    frames = [_frame(k) for k in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])  # APNG
    code = main(_upscale(saved_test_model, str(tmp_path / "anim.png"), "-o", str(tmp_path / "out")))
    assert code == 1 and "anim.png: has 3 frames" in capsys.readouterr().err
    # eval and training read through read_image, which refuses several frames with the count
    with pytest.raises(ImageReadError, match="3 frames"):
        read_image(tmp_path / "anim.png")
    from difiisr_dwt.evaluation import load_8bit

    with pytest.raises(ImageReadError, match="3 frames"):
        load_8bit(tmp_path / "anim.png")


# ------------------------------------------------------------------------------------------------ item 3: EXIF
def _rotated_jpeg(path: Path) -> None:
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    _frame(0, (160, 128), "RGB").save(path, exif=exif, quality=95)


def test_exif_orientation_applied_on_every_read(saved_test_model, tmp_path):
    _rotated_jpeg(tmp_path / "cam.jpg")
    assert PIL.Image.open(tmp_path / "cam.jpg").size == (160, 128)  # stored sideways
    assert read_image(tmp_path / "cam.jpg").size == (128, 160)  # CLI, eval and training data read this way
    out = tmp_path / "out"
    assert main(_upscale(saved_test_model, str(tmp_path / "cam.jpg"), "-o", str(out))) == 0
    assert PIL.Image.open(out / "cam_x4.png").size == (512, 640)


def test_demo_upload_is_upright_and_refuses_several_frames(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_imaging", REPO / "examples" / "gradio_app" / "imaging.py")
    imaging = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(imaging)
    _rotated_jpeg(tmp_path / "cam.jpg")
    assert imaging.open_upload(tmp_path / "cam.jpg", max_pixels=10**6).size == (128, 160)
    pages = [_frame(k) for k in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(imaging.UploadError, match="stack.tif has 3 frames"):
        imaging.open_upload(tmp_path / "stack.tif", max_pixels=10**6)


# ------------------------------------------------------------------------------------------------ item 7
def test_unwritable_output_folder_fails_before_loading_model(tmp_path, capsys):
    _frame(0).save(tmp_path / "a.png")
    (tmp_path / "taken").write_text("a file where the output folder should be")
    code = main(_upscale(tmp_path / "no_model", str(tmp_path / "a.png"), "-o", str(tmp_path / "taken" / "out")))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: output folder") and "not writable" in err[0]


def test_stale_temp_files_of_interrupted_run_are_removed(saved_test_model, tmp_path, capsys):
    _frame(0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    stale, foreign = out / ".a_x4.png.k3j9x.tmp", out / ".notes.txt.abc.tmp"
    for path in (stale, foreign):
        path.write_bytes(b"half an image")
        os.utime(path, (time.time() - 60, time.time() - 60))
    assert main(_upscale(saved_test_model, str(tmp_path / "a.png"), "-o", str(out))) == 0
    assert not stale.exists() and foreign.exists()  # only this tool's temporaries for these outputs
    assert "removed 1 temporary file" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ issue 13
def test_batches_serve_several_frames_and_match_single_frame_runs(saved_test_model, tmp_path, monkeypatch):
    import difiisr_dwt.loading

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        _frame(i, mode="RGB" if i == 1 else "L").save(folder / f"f{i}.png")
    _frame(9, (8, 8)).save(folder / "odd.png")  # another size: its own batch
    calls: list[int] = []
    load = difiisr_dwt.loading.load_pipeline

    def counting_load(*args, **kwargs):
        pipe = load(*args, **kwargs)
        original = pipe.__call__

        class Counting:
            def __getattr__(self, name):
                return getattr(pipe, name)

            def __call__(self, images, **kw):
                calls.append(len(images))
                return original(images, **kw)

        return Counting()

    monkeypatch.setattr(difiisr_dwt.loading, "load_pipeline", counting_load)
    manifest = tmp_path / "m.json"
    assert main(_upscale(saved_test_model, str(folder), "-o", str(tmp_path / "b4"), "--batch-size", "4",
                         "--manifest", str(manifest))) == 0
    assert sorted(calls) == [1, 1, 4]  # 4 same-size frames in one call; the 5th and the odd size alone
    calls.clear()
    assert main(_upscale(saved_test_model, str(folder / "f0.png"), str(folder / "f1.png"), "-o",
                         str(tmp_path / "b1"))) == 0
    assert calls == [1, 1]
    for path in sorted((tmp_path / "b1").glob("*.png")):
        assert _max_diff(path, tmp_path / "b4" / path.name) <= 1  # same seed, same image, to rounding
    entries = json.loads(manifest.read_text())
    assert entries["summary"]["written"] == 6 and entries["summary"]["total"] == 6
    first = entries["files"][0]
    assert first["input"].endswith("f0.png") and first["output"].endswith("f0_x4.png")
    assert first["status"] == "written" and first["size"] == [64, 48] and first["seconds"] > 0
    assert first["error"] is None


def test_kill_9_halfway_then_rerun_completes_every_output_once(saved_test_model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        _frame(i, (48, 48)).save(folder / f"f{i}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "difiisr_dwt.cli", *_upscale(saved_test_model, str(folder), "-o", str(out))]
    command[command.index("--steps") + 1] = "2"
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and list(out.glob("*.png"))):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = sorted(p.name for p in out.glob("*.png"))
    assert 1 <= len(done_before) < 5, "the run should have been killed halfway"
    manifest = tmp_path / "manifest.json"
    assert main([*command[3:], "--manifest", str(manifest)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_LOG] + [f"f{i}_x4.png" for i in range(5)]  # no temp
    assert all(read_image(p).size == (192, 192) for p in out.glob("*.png"))  # every output complete
    files = json.loads(manifest.read_text())["files"]
    assert sorted(Path(f["input"]).name for f in files) == [f"f{i}.png" for i in range(5)]
    statuses = {Path(f["output"]).name: f["status"] for f in files}
    assert sorted(n for n, s in statuses.items() if s == "skipped") == done_before
    assert sum(s == "written" for s in statuses.values()) == 5 - len(done_before)


def test_local_imagefolder_dataset_names_outputs_from_file_names(saved_test_model, tmp_path, capsys):
    pytest.importorskip("datasets")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        _frame(i).save(folder / f"shot{i}.png")
    out = tmp_path / "out"
    assert main(_upscale(saved_test_model, "--dataset_name", str(folder), "-o", str(out), "--batch-size", "2")) == 0
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_LOG, "shot0_x4.png", "shot1_x4.png"]
    reference = tmp_path / "ref"
    assert main(_upscale(saved_test_model, str(folder / "shot1.png"), "-o", str(reference))) == 0
    assert _max_diff(out / "shot1_x4.png", reference / "shot1_x4.png") <= 1
    streamed = tmp_path / "streamed"
    assert main(_upscale(saved_test_model, "--dataset_name", str(folder), "--streaming", "-o", str(streamed),
                         "--batch-size", "2")) == 0
    assert sorted(p.name for p in streamed.iterdir()) == sorted(p.name for p in out.iterdir())


@pytest.mark.slow
def test_two_accelerate_cpu_processes_share_the_work_and_match_one(saved_test_model, tmp_path, capsys):
    pytest.importorskip("accelerate")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        _frame(i, (32, 32)).save(folder / f"f{i}.png")
    single, dual = tmp_path / "single", tmp_path / "dual"
    assert main(_upscale(saved_test_model, str(folder), "-o", str(single), "--batch-size", "3")) == 0
    manifest = tmp_path / "manifest.json"
    # the CLI's main, then a check that it destroyed its process group: a live gloo group can abort the
    # interpreter's exit (SIGABRT, exit -6 after all the work) - too rarely to catch by the exit status alone
    launcher = tmp_path / "cli_then_check.py"
    launcher.write_text("import sys\nimport torch.distributed as dist\nfrom difiisr_dwt.cli import main\n"
                        "status = main(sys.argv[1:])\n"
                        "sys.exit(status or (97 if dist.is_initialized() else 0))\n")
    # --multi_gpu: without a config file it is what makes accelerate start N processes (gloo on the CPU)
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(launcher),
               *_upscale(saved_test_model, str(folder), "-o", str(dual), "--manifest", str(manifest),
                         "--batch-size", "3")]
    command.remove("--device")
    command.remove("cpu")
    env = _env(ACCELERATE_USE_CPU="1")
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(manifest.read_text())
    assert summary["summary"]["processes"] == 2
    assert {f["rank"] for f in summary["files"]} == {0, 1}  # both ranks worked
    assert sorted(p.name for p in dual.iterdir()) == [OUTPUT_LOG] + [f"f{i}_x4.png" for i in range(6)]  # once each
    for i in range(6):
        assert _max_diff(single / f"f{i}_x4.png", dual / f"f{i}_x4.png") <= 1
    capsys.readouterr()
    assert main(_upscale(saved_test_model, str(folder), "-o", str(dual))) == 0  # a rerun (one process: faster)
    assert "0 written, 6 skipped" in capsys.readouterr().out


def test_streaming_and_downloaded_datasets_name_outputs_alike(tmp_path):
    """One naming rule for both modes: a stream cannot see later rows, so neither mode uses them."""
    pytest.importorskip("datasets")
    from difiisr_dwt.dataset_input import dataset_jobs

    folder = tmp_path / "frames"
    for sub, name in [("day", "a.png"), ("night", "a.png"), ("day", "b.png"), ("night", "B.png"), ("day", "c.gif"),
                      ("night", "c.png"), ("night", "a_1.png")]:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        _frame(len(name)).save(folder / sub / name)
    names = {}
    for streaming in (False, True):
        jobs, _, _ = dataset_jobs(str(folder), None, "train", None, streaming, tmp_path / "out", "_x4")
        names[streaming] = [(Path(job.source.name.split(" (")[-1].rstrip(")")).name, job.output.name) for job in jobs]
    assert names[True] == names[False]
    outputs = [output for _, output in names[False]]
    assert len({o.casefold() for o in outputs}) == len(outputs) == 7
    # the first of each name keeps it; later ones get their row index
    assert "a_x4.png" in outputs and "b_x4.png" in outputs and "c_x4.tif" in outputs and "c_x4.png" in outputs
    assert sum(o.startswith("a_") for o in outputs) == 3 and not any("_png_" in o for o in outputs)
