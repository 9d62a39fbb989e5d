"""``difiisr-dwt upscale``: files, folders and globs; bad files reported and skipped; atomic writes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.io import ImageReadError, read_image, save_image_atomic
from difiisr_dwt.output_folder import OUTPUT_LOG


@pytest.fixture(scope="module")
def model_dir(saved_test_model):
    return saved_test_model


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.RandomState(0)
    PIL.Image.fromarray((rng.rand(12, 16) * 255).astype(np.uint8)).save(folder / "gray.png")
    PIL.Image.fromarray((rng.rand(10, 8, 3) * 255).astype(np.uint8)).save(folder / "color.jpg")
    PIL.Image.fromarray((3000 + rng.rand(8, 12) * 500).astype(np.uint16)).save(folder / "raw16.tif")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return folder


def test_upscale_folder_skips_bad_file_and_fails_overall(model_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["upscale", str(inputs), "-o", str(out), "--model", str(model_dir), "--steps", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    error_lines = [line for line in captured.err.splitlines() if "broken.png" in line]
    assert len(error_lines) == 1 and error_lines[0].count("broken.png") == 1  # one line, the path once
    assert error_lines[0].startswith("error: ") and "not a readable image" in error_lines[0]
    assert "3 written, 0 skipped, 1 failed" in captured.out
    gray, color, raw = (read_image(out / name) for name in ("gray_x4.png", "color_x4.png", "raw16_x4.tif"))
    assert (gray.mode, gray.size) == ("L", (64, 48))
    assert (color.mode, color.size) == ("RGB", (32, 40))
    assert (raw.mode, raw.size) == ("I;16", (48, 32))
    # in counts, at the input's levels (an edge may overshoot the input's own span, as 8-bit outputs may)
    values, source = np.asarray(raw).astype(np.float64), np.asarray(read_image(inputs / "raw16.tif")).astype(np.float64)
    assert abs(values.mean() - source.mean()) < 10 and values.std() > 0.5 * source.std()
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_LOG, "color_x4.png", "gray_x4.png", "raw16_x4.tif"]


def test_upscale_glob_and_missing_file(model_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["upscale", str(inputs / "*.png"), str(tmp_path / "missing.png"), "-o", str(out),
                 "--model", str(model_dir), "--steps", "1", "--device", "cpu"])
    assert code == 1
    assert "missing.png: no such file" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_LOG, "gray_x4.png"]


def test_upscale_all_good_exits_zero_and_skips_existing(model_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["upscale", str(inputs / "gray.png"), "-o", str(out), "--model", str(model_dir), "--steps", "1"]
    assert main(args) == 0
    first = (out / "gray_x4.png").read_bytes()
    assert main([*args, "--seed", "5"]) == 0  # existing output kept without --overwrite
    assert (out / "gray_x4.png").read_bytes() == first
    assert "1 skipped (outputs exist" in capsys.readouterr().out
    assert main([*args, "--seed", "5", "--overwrite"]) == 0
    assert (out / "gray_x4.png").read_bytes() != first


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "difiisr_dwt.cli", "upscale", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--steps" in result.stdout and "--tile" in result.stdout


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "result.png"
    image = PIL.Image.new("L", (8, 8), 7)
    save_image_atomic(image, target)
    before = target.read_bytes()

    def interrupted_save(self, fp, format=None, **params):
        fp.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(PIL.Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_image_atomic(PIL.Image.new("L", (8, 8), 200), target)
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]  # and no temp file is left


def test_read_image_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_a_run_that_writes_nothing_leaves_no_new_folder(tmp_path, capsys):
    """Every input missing: the -o folder this run created is not left behind empty (an existing one stays)."""
    out, existing = tmp_path / "new", tmp_path / "existing"
    existing.mkdir()
    for folder in (out, existing, out / "a" / "b"):
        assert main(["upscale", str(tmp_path / "nothere.png"), "-o", str(folder), "--device", "cpu"]) == 1
        assert "nothere.png: no such file" in capsys.readouterr().err
    assert not out.exists() and existing.is_dir()
