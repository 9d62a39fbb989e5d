"""``upscale -`` reads one image from standard input (output ``stdin_x4.png``), other streams (``/dev/stdin``,
a named pipe) are read like it, and ``-o -`` writes the one result to standard output, everything else to
standard error."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.output_folder import OUTPUT_LOG


def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


GRAY = (np.random.default_rng(0).random((12, 16)) * 255).astype(np.uint8)


def _pipe_in(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _upscale(model: os.PathLike, *argv) -> int:
    return main(["upscale", *map(str, argv), "--model", str(model), "--steps", "1", "--device", "cpu"])


def test_dash_reads_one_image_from_stdin(saved_test_model, tmp_path, monkeypatch, capsys):
    _pipe_in(monkeypatch, _png_bytes(GRAY))
    assert _upscale(saved_test_model, "-", "-o", tmp_path / "out") == 0
    with PIL.Image.open(tmp_path / "out" / "stdin_x4.png") as result:
        assert result.size == (64, 48) and result.mode == "L"
    # a TIFF on stdin gives a TIFF, like a .tif file would
    _pipe_in(monkeypatch, _png_bytes(GRAY, "TIFF"))
    assert _upscale(saved_test_model, "-", "-o", tmp_path / "tif") == 0
    assert sorted(p.name for p in (tmp_path / "tif").iterdir()) == [OUTPUT_LOG, "stdin_x4.tif"]
    capsys.readouterr()


def test_dash_refusals(saved_test_model, tmp_path, monkeypatch, capsys):
    _pipe_in(monkeypatch, b"")
    assert _upscale(saved_test_model, "-", "-o", tmp_path / "out") == 2
    assert "error: standard input: empty" in capsys.readouterr().err
    _pipe_in(monkeypatch, _png_bytes(GRAY))
    assert _upscale(saved_test_model, "-", "-", "-o", tmp_path / "out") == 2
    assert "given twice" in capsys.readouterr().err
    _pipe_in(monkeypatch, b"not an image")
    assert _upscale(saved_test_model, "-", "-o", tmp_path / "out") == 1
    assert "error: <stdin>: not a readable image" in capsys.readouterr().err


def test_named_pipe_is_read_as_a_stream(saved_test_model, tmp_path, capsys):
    """``/dev/stdin`` or ``<(cat a.png)`` is a pipe, not a regular file: read once, not "no such file"."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(_png_bytes(GRAY)), daemon=True)
    writer.start()
    try:
        assert _upscale(saved_test_model, fifo, "-o", tmp_path / "out") == 0
    finally:
        if writer.is_alive():  # the pipe was never read: open it once so that the writer is released
            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            writer.join(timeout=10)
            os.close(reader)
    assert (tmp_path / "out" / "pipe_x4.png").is_file()
    assert "no such file" not in capsys.readouterr().err


def test_dash_o_writes_the_image_to_stdout_and_logs_to_stderr(saved_test_model, tmp_path, monkeypatch,
                                                              capsysbinary):
    source = tmp_path / "a.png"
    source.write_bytes(_png_bytes(GRAY))
    assert _upscale(saved_test_model, source, "-o", "-") == 0
    captured = capsysbinary.readouterr()
    with PIL.Image.open(io.BytesIO(captured.out)) as result:  # stdout holds the PNG and nothing else
        assert result.format == "PNG" and result.size == (64, 48)
    assert b"1 written" in captured.err and b"-> standard output" in captured.err  # not a temporary folder
    assert list(tmp_path.iterdir()) == [source]  # nothing left beside the input
    for argv in ([tmp_path], [source, source.with_name("b.png")]):  # a folder, several files
        assert _upscale(saved_test_model, *argv, "-o", "-") == 2
        assert b"exactly one INPUT" in capsysbinary.readouterr().err
    assert _upscale(saved_test_model, tmp_path / "nothere.png", "-o", "-") == 2
    assert b"nothere.png: no such file" in capsysbinary.readouterr().err


@pytest.mark.slow
def test_cat_into_the_console_script_and_out_again(saved_test_model, tmp_path):
    """The shell form, in a child process: ``cat a.png | difiisr-dwt upscale - -o - > b.png``."""
    result = subprocess.run(
        [sys.executable, "-m", "difiisr_dwt.cli", "upscale", "-", "-o", "-", "--model", str(saved_test_model),
         "--steps", "1", "--device", "cpu"],
        input=_png_bytes(GRAY), capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    with PIL.Image.open(io.BytesIO(result.stdout)) as image:
        assert image.size == (64, 48)
    assert b"1 written" in result.stderr


def test_other_image_on_stdin_is_never_answered_with_the_stale_output(saved_test_model, tmp_path, monkeypatch,
                                                                      capsys):
    """``cat a.png | upscale - -o s/`` then ``cat b.png | upscale - -o s/`` kept a.png's result ("1 skipped")."""
    out = tmp_path / "s"
    _pipe_in(monkeypatch, _png_bytes(GRAY))
    assert _upscale(saved_test_model, "-", "-o", out) == 0
    first = (out / "stdin_x4.png").read_bytes()
    _pipe_in(monkeypatch, _png_bytes(GRAY))  # the same bytes again: done, skipped
    assert _upscale(saved_test_model, "-", "-o", out) == 0
    assert "0 written, 1 skipped" in capsys.readouterr().out
    _pipe_in(monkeypatch, _png_bytes(255 - GRAY))  # other bytes: refused before any work, the file kept
    assert _upscale(saved_test_model, "-", "-o", out) == 2
    err = capsys.readouterr().err
    assert "stdin_x4.png exists and was not made from the image now on <stdin>" in err and "--overwrite" in err
    assert (out / "stdin_x4.png").read_bytes() == first
    _pipe_in(monkeypatch, _png_bytes(255 - GRAY))
    assert _upscale(saved_test_model, "-", "-o", out, "--overwrite") == 0
    assert "1 written" in capsys.readouterr().out and (out / "stdin_x4.png").read_bytes() != first
    _pipe_in(monkeypatch, _png_bytes(GRAY))  # a stdin_x4.png this tool did not make from a stream: refused too
    (tmp_path / "t").mkdir()
    PIL.Image.fromarray(GRAY).save(tmp_path / "t" / "stdin_x4.png")
    assert _upscale(saved_test_model, "-", "-o", tmp_path / "t") == 2
    capsys.readouterr()


@pytest.mark.slow
def test_a_closed_pipe_is_one_error_line(saved_test_model, tmp_path):
    """``difiisr-dwt upscale a.png -o - | reader`` whose reader is gone: one ``error:`` line naming the broken
    pipe, exit status 2, no Python 'Exception ignored' noise."""
    source = tmp_path / "a.png"
    source.write_bytes(_png_bytes(GRAY))
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "difiisr_dwt.cli", "upscale", str(source), "-o", "-", "--model",
             str(saved_test_model), "--steps", "1", "--device", "cpu"],
            stdout=write_end, stderr=subprocess.PIPE, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        os.close(write_end)
    err = result.stderr.decode()
    assert result.returncode == 2, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: standard output was closed before the whole image was written (broken pipe: did the command after | "
        "fail or stop reading?)"]
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "1 written" not in err  # the summary line comes only once the image is out
