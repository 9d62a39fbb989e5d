"""Reruns: an input changed under its name since its output was made (an image, a video, a --sequence frame
folder) is upscaled again, not counted as done; an unchanged one is skipped (a newer modification time alone
changes nothing), and an output log line of an earlier version (which did not record the input) still counts
as done. The output log survives a line cut short or not UTF-8."""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.output_folder import OUTPUT_LOG
from difiisr_dwt.sequence import input_fingerprint, plan_sequence
from difiisr_dwt.video import write_video


def _image(seed: int, size: tuple[int, int] = (16, 12)) -> PIL.Image.Image:
    rng = np.random.RandomState(seed)
    return PIL.Image.fromarray((rng.rand(size[1], size[0]) * 255).astype(np.uint8))


def _upscale(model: Path, *args: str) -> list[str]:
    return ["upscale", *args, "--model", str(model), "--steps", "1", "--device", "cpu"]


def _pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("L"), np.int16)


def _replace(path: Path, image: PIL.Image.Image) -> None:
    """Save ``image`` over ``path`` with a modification time surely after the earlier one."""
    before = path.stat().st_mtime_ns
    image.save(path)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_a_changed_image_is_redone_and_an_unchanged_one_skipped(saved_test_model, tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    _image(0).save(folder / "a.png")
    _image(1).save(folder / "b.png")
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out))) == 0
    old_a, old_b = _pixels(out / "a_x4.png"), _pixels(out / "b_x4.png")
    capsys.readouterr()

    _replace(folder / "a.png", _image(2))  # same name, same size, other content
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out))) == 0
    captured = capsys.readouterr()
    assert "1 written, 1 skipped" in captured.out
    assert "a.png changed since" in captured.err
    assert np.abs(_pixels(out / "a_x4.png") - old_a).max() > 20  # the new content's upscale
    np.testing.assert_array_equal(_pixels(out / "b_x4.png"), old_b)

    assert main(_upscale(saved_test_model, str(folder), "-o", str(out))) == 0  # now both are current
    assert "0 written, 2 skipped" in capsys.readouterr().out
    for path in folder.iterdir():  # a copy without times (cp without -p, a checkout): the same inputs
        os.utime(path, ns=(path.stat().st_mtime_ns + 5 * 10**9,) * 2)
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out))) == 0
    captured = capsys.readouterr()
    assert "0 written, 2 skipped" in captured.out and "changed since" not in captured.err


def test_a_log_line_without_its_input_still_counts_as_done(saved_test_model, tmp_path, capsys):
    """Output folders of earlier versions: their lines do not say what the output was made from."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    _image(0).save(folder / "a.png")
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out))) == 0
    log = out / OUTPUT_LOG
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert all("input" in entry for entry in entries)
    log.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "input"}) + "\n" for e in entries))
    _replace(folder / "a.png", _image(2))
    capsys.readouterr()
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out))) == 0
    assert "0 written, 1 skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_a_changed_video_and_frame_folder_are_redone(saved_test_model, tmp_path, capsys):
    clip, frames, out = tmp_path / "clip.mkv", tmp_path / "frames", tmp_path / "out"
    rng = np.random.default_rng(0)
    write_video((rng.integers(0, 256, (12, 16), dtype=np.uint8) for _ in range(3)), clip, Fraction(25), True)
    frames.mkdir()
    for i in range(3):
        _image(i).save(frames / f"{i:03d}.png")
    run = _upscale(saved_test_model, str(clip), str(frames), "--sequence", "-o", str(out))
    assert main(run) == 0
    assert main(run) == 0
    assert "0 written, 2 skipped" in capsys.readouterr().out

    write_video((rng.integers(0, 256, (12, 16), dtype=np.uint8) for _ in range(3)), clip, Fraction(25), True)
    old_frame = _pixels(out / "frames_x4" / "001.png")  # a sequence's frames keep their names
    _replace(frames / "001.png", _image(7))
    assert main(run) == 0
    captured = capsys.readouterr()
    assert "2 written, 0 skipped" in captured.out
    assert "clip.mkv changed since" in captured.err and "frames changed since" in captured.err
    assert np.abs(_pixels(out / "frames_x4" / "001.png") - old_frame).max() > 20

    other = tmp_path / "other"
    other.mkdir()
    write_video((rng.integers(0, 256, (12, 16), dtype=np.uint8) for _ in range(3)), other / "clip.mkv",
                Fraction(25), True)
    assert main(_upscale(saved_test_model, str(other / "clip.mkv"), "-o", str(out))) == 1  # another clip.mkv
    assert f"was made from another input, {clip}" in capsys.readouterr().err

    _image(9).save(frames / "003.png")  # a frame added: the folder's input changed, so it is redone too
    assert main(run) == 0
    assert "1 written, 1 skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "frames_x4").iterdir()) == [f"{i:03d}.png" for i in range(4)]

    (frames / "000.png").unlink()  # a frame removed: redone, and its old output frame goes with it
    assert main(run) == 0
    assert "1 written, 1 skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "frames_x4").iterdir()) == ["001.png", "002.png", "003.png"]

    _image(5).save(out / "frames_x4" / "002.png")  # an output frame edited: not this tool's file any more
    (frames / "001.png").unlink()
    for overwrite in ([], ["--overwrite"]):
        assert main([*run, *overwrite]) == 1
        assert "frames_x4 exists and holds files this tool did not write there or that were edited since " \
               "(002.png)" in capsys.readouterr().err
    np.testing.assert_array_equal(_pixels(out / "frames_x4" / "002.png"), np.asarray(_image(5)))  # kept

    shutil.rmtree(out / "frames_x4")  # the user moves the edited folder away: redone from frames 002, 003
    assert main(run) == 0
    (out / "frames_x4" / "003.png").unlink()  # an output frame deleted by hand: not finished, and said so
    assert main(run) == 1
    assert "frames_x4 holds 1 of the sequence's 2 frames (frames added to the input folder since, or deleted " \
           "from the output)" in capsys.readouterr().err


def test_a_cut_or_garbled_log_line_loses_only_itself(tmp_path):
    from difiisr_dwt.output_folder import OutputLog

    out = tmp_path / "out"
    out.mkdir()
    for name in ("a_x4.png", "b_x4.png", "c_x4.png"):
        _image(len(name)).save(out / name)
    OutputLog(out).add(out / "a_x4.png")
    with open(out / OUTPUT_LOG, "ab") as f:
        f.write(b'{"output": "z_x4.png", "si')  # a kill or a full disk mid-line
    OutputLog(out).add(out / "b_x4.png")
    with open(out / OUTPUT_LOG, "ab") as f:
        f.write(b"\xff\xfe not UTF-8\n")
    OutputLog(out).add(out / "c_x4.png")
    log = OutputLog(out)
    assert [log.is_output(out / name) for name in ("a_x4.png", "b_x4.png", "c_x4.png")] == [True] * 3


def test_fingerprint_sees_content_not_only_size_and_time(tmp_path):
    """Same path, same size, same modification time, other bytes (video file or one frame file): another input.

    One byte in the middle of a 5 MiB file changes too (the fingerprint once hashed the first and last MiB)."""
    video = tmp_path / "clip.mkv"
    folder = tmp_path / "frames"
    folder.mkdir()
    jobs = []
    size = 5 << 20
    for path in (video, folder / "0.png"):
        path.write_bytes(b"a" * size)
        jobs.append(plan_sequence(video if path == video else folder, tmp_path / "out", "_x4", lossless=True))
    before = [input_fingerprint(job) for job in jobs]
    for path in (video, folder / "0.png"):
        mtime = path.stat().st_mtime_ns
        path.write_bytes(b"a" * (size // 2) + b"b" + b"a" * (size - size // 2 - 1))
        os.utime(path, ns=(mtime, mtime))
    after = [input_fingerprint(job) for job in jobs]
    for a, b in zip(before, after):
        assert a["size"] == b["size"] and a["sha256"] != b["sha256"]


def test_another_input_of_the_same_name_is_refused_not_taken_for_a_change(saved_test_model, tmp_path, capsys):
    """flight2/IMG_1.png into the folder of flight1/IMG_1.png's output: another input, not flight1's changed,
    so its output is not replaced without --overwrite (a copy of flight1 elsewhere is the same input)."""
    out = tmp_path / "out"
    for flight, seed in (("flight1", 0), ("flight2", 5)):
        (tmp_path / flight).mkdir()
        _image(seed).save(tmp_path / flight / "IMG_1.png")
    assert main(_upscale(saved_test_model, str(tmp_path / "flight1"), "-o", str(out))) == 0
    first = _pixels(out / "IMG_1_x4.png")
    capsys.readouterr()
    assert main(_upscale(saved_test_model, str(tmp_path / "flight2"), "-o", str(out))) == 2
    err = capsys.readouterr().err
    assert "was made from another input" in err and str(tmp_path / "flight1" / "IMG_1.png") in err
    np.testing.assert_array_equal(_pixels(out / "IMG_1_x4.png"), first)

    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "IMG_1.png").write_bytes((tmp_path / "flight1" / "IMG_1.png").read_bytes())
    assert main(_upscale(saved_test_model, str(copy), "-o", str(out))) == 0
    assert "0 written, 1 skipped" in capsys.readouterr().out
    assert main(_upscale(saved_test_model, str(tmp_path / "flight2"), "-o", str(out), "--overwrite")) == 0
    assert np.abs(_pixels(out / "IMG_1_x4.png") - first).max() > 20
