"""The CLI's one error boundary: every failure prints exactly one ``error: ...`` line on stderr (for argument
errors followed by where the options are listed) and exits 2 (bad arguments or inputs) or 1 (some files failed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main


def run(argv: list[str], capsys) -> tuple[int, list[str], str]:
    """Exit status, the stderr lines starting with ``error:``, and all of stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own exit for argument errors
        code = exit_.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def assert_one_error(result: tuple[int, list[str], str], code: int, text: str) -> None:
    got_code, lines, err = result
    assert got_code == code, err
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in err and not any(line.startswith(("export:", "convert-vq:")) for line in err.splitlines())


@pytest.fixture
def hr_dir(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    PIL.Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(folder / "a.png")
    return folder


def test_eval_failures(hr_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_error(run(["eval", "--hr", tmp_path / "nope", "--bicubic"], capsys), 2, "nope")
    (tmp_path / "empty").mkdir()
    assert_one_error(run(["eval", "--hr", hr_dir, "--model", tmp_path / "empty", "--metrics", "psnr_y",
                          "--device", "cpu"], capsys), 2, "cannot load the model")
    blocker = tmp_path / "file"
    blocker.write_text("")  # --json under a file: the OS refuses, reported as one line with the path
    assert_one_error(run(["eval", "--hr", hr_dir, "--bicubic", "--metrics", "psnr_y", "--json",
                          blocker / "r.json"], capsys), 2, str(blocker))
    (hr_dir / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert_one_error(run(["eval", "--hr", hr_dir, "--bicubic", "--metrics", "psnr_y"], capsys), 2, "b.png")
    assert_one_error(run(["eval", "--hr", hr_dir, "--steps", "x"], capsys), 2, "--steps")


@pytest.mark.parametrize("argv, text", [(["--threads", "0"], "--threads: must be >= 1, got 0"),
                                        (["--repeats", "0"], "--repeats"),
                                        (["--e2e-size", "30"], "multiple of 32")])
def test_bench_argument_errors(argv, text, capsys):
    assert_one_error(run(["bench", "--quick", *argv], capsys), 2, text)


def test_argument_errors_are_not_buried_under_the_usage(capsys):
    """The error and where the options are listed, not upscale's twenty lines of usage first."""
    code, lines, err = run(["upscale", "x.png", "-o", "out", "--steps", "abc"], capsys)
    assert code == 2 and lines == ["error: argument --steps: expected an integer, got 'abc'"], err
    assert err.splitlines() == [lines[0], "Run 'difiisr-dwt upscale --help' for the options."]


def test_component_folder_as_model(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline.save_pretrained(tmp_path / "p")
    hr = tmp_path / "hr"
    hr.mkdir()
    PIL.Image.new("L", (16, 16)).save(hr / "a.png")
    assert_one_error(run(["eval", "--hr", hr, "--model", tmp_path / "p" / "unet", "--device", "cpu",
                          "--metrics", "psnr_y"], capsys), 2, "not a pipeline folder (it holds one component, a "
                     "UNet2DModel)")


def test_export_failures(tiny_pipeline, tmp_path, capsys):
    assert_one_error(run(["export", tmp_path / "missing", "--out", tmp_path / "r"], capsys), 2,
                     "not a pipeline folder")
    assert_one_error(run(["export", "--check", tmp_path, "--out", tmp_path / "r"], capsys), 2, "--check")
    tiny_pipeline.save_pretrained(tmp_path / "p")
    with open(tmp_path / "p" / "scheduler" / "scheduler_resshift.py", "a") as f:
        f.write("# edited\n")
    code, lines, err = run(["export", "--check", tmp_path / "p"], capsys)
    assert_one_error((code, lines, err), 1, "1 of 1 release folder(s) differ")


def test_convert_vq_failures(tmp_path, capsys):
    assert_one_error(run(["convert-vq", tmp_path / "nope.pth", "--out", tmp_path / "vq"], capsys), 2, "no such file")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    assert_one_error(run(["convert-vq", tmp_path / "bad.safetensors", "--out", tmp_path / "vq"], capsys), 2,
                     "bad.safetensors")
    assert_one_error(run(["convert-vq"], capsys), 2, "checkpoint")


def test_train_argument_error(capsys, train_main):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--stage", "diffusion", "--output_dir", "x", "--train_data_dir", "y"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2 and len(lines) == 1 and "--vqvae_model_name_or_path" in lines[0]


def test_partial_failure_reported_per_file_adds_no_line(capsys):
    """A PartialFailure with an empty message (each file reported already) adds no second line."""
    from difiisr_dwt.errors import PartialFailure, report_errors

    def fail():
        raise PartialFailure("")

    assert report_errors(fail) == 1 and capsys.readouterr().err == ""


def test_a_folder_named_like_an_image_is_called_a_folder(tmp_path, capsys, monkeypatch):
    """A directory ``x.png`` is "a directory", not "no such file" (upscale, convert-vq); a missing --model
    path is "no such folder", not a Hub download failure."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    inputs = tmp_path / "in"
    (inputs / "x.png").mkdir(parents=True)
    code, lines, err = run(["upscale", inputs, "-o", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 1 and f"error: {inputs / 'x.png'}: is a directory, not a file" in lines, err
    assert "no such file" not in err
    assert_one_error(run(["convert-vq", inputs / "x.png", "--out", tmp_path / "vq"], capsys), 2,
                     "x.png: is a directory, not a file")
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    for missing in (tmp_path / "no" / "model", "./no_such/model"):
        result = run(["upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--model", missing, "--device", "cpu"],
                     capsys)
        assert_one_error(result, 2, f"{missing}: no such folder")
        assert "huggingface" not in result[2].lower()


@pytest.mark.parametrize("suffix", ["/../../notes", "_x4/", "..\\notes", "a\0b"])
def test_suffix_with_a_path_separator_is_refused_at_parsing(tmp_path, capsys, monkeypatch, suffix):
    """``--suffix /../../notes`` wrote ``./notes.png`` over a foreign file (and made an empty ``out/a/``)."""
    monkeypatch.chdir(tmp_path)
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save("a.png")
    Path("notes.png").write_text("my notes")
    result = run(["upscale", "a.png", "-o", "out", "--suffix", suffix, "--model", tmp_path / "no-model"], capsys)
    assert_one_error(result, 2, "--suffix")
    assert Path("notes.png").read_text() == "my notes" and not Path("out").exists()


def test_checks_that_used_to_come_after_the_work(saved_test_model, tmp_path, capsys):
    """``--manifest DIR``, ``-o result.png`` and ``--steps`` above the model's T fail once, up front."""
    for k in range(2):
        PIL.Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(tmp_path / f"{k}.png")
    base = ["upscale", tmp_path / "0.png", tmp_path / "1.png", "--model", saved_test_model, "--device", "cpu"]
    (tmp_path / "m").mkdir()
    assert_one_error(run([*base, "-o", tmp_path / "out", "--manifest", tmp_path / "m"], capsys), 2, "is a folder")
    assert not (tmp_path / "out").exists()  # refused before the output folder was made
    assert_one_error(run([*base, "-o", tmp_path / "result.png"], capsys), 2, "looks like a file name")
    assert not (tmp_path / "result.png").exists()
    (tmp_path / "made.png").mkdir()  # a folder that exists is taken at its word
    assert run([*base, "-o", tmp_path / "made.png", "--steps", "1"], capsys)[0] == 0
    assert_one_error(run([*base, "-o", tmp_path / "out2", "--steps", "10000"], capsys), 2, "--steps 10000")
    assert not any((tmp_path / "out2").glob("*.png"))


def test_messages_name_what_is_wrong(tmp_path, capsys, monkeypatch):
    """``-o`` an existing file said "output folder F is not writable (File exists)"; ``--manifest`` in it blamed
    "output folder"; bytes PIL cannot read ended in "<_io.BytesIO object at 0x...>", a video on standard input
    too, without saying it is a video."""
    from difiisr_dwt.io import ImageReadError, read_frames

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("mine")
    assert_one_error(run(["upscale", tmp_path / "a.png", "-o", tmp_path / "notes.txt", "--model", tmp_path / "no"],
                         capsys), 2, "output folder " + str(tmp_path / "notes.txt") + " is a file, not a folder")
    assert_one_error(run(["upscale", tmp_path / "a.png", "-o", tmp_path / "out", "--manifest",
                          tmp_path / "notes.txt" / "m.json", "--model", tmp_path / "no"], capsys), 2,
                     "--manifest's folder " + str(tmp_path / "notes.txt") + " is a file, not a folder")
    with pytest.raises(ImageReadError) as error:
        read_frames("-", data=b"not an image at all")
    assert str(error.value) == "-: not a readable image (cannot identify image file)"
    mp4_head = b"\x00\x00\x00\x20ftypisom" + bytes(64)
    with pytest.raises(ImageReadError, match=r"it holds a video, and videos are read from files only"):
        read_frames("-", data=mp4_head)
