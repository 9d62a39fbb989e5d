"""Model folders and repo ids load with the installed classes; the code files inside them run only with
``trust_remote_code=True`` / ``--trust-remote-code`` (a model folder is data a user downloads, not code)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt.cli import main
from difiisr_dwt.errors import ModelLoadError
from difiisr_dwt.loading import load_pipeline

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def planted(tiny_pipeline, tmp_path) -> tuple[Path, Path]:
    """A saved pipeline folder whose scheduler code file writes a marker file when it is imported."""
    folder, marker = tmp_path / "model", tmp_path / "marker"
    tiny_pipeline.save_pretrained(folder)
    with open(folder / "scheduler" / "scheduler_resshift.py", "a", encoding="utf-8") as f:
        f.write(f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    return folder, marker


def _run(pipe) -> np.ndarray:
    image = np.random.RandomState(0).rand(12, 16).astype(np.float32)
    return pipe(image, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images


def test_folder_code_does_not_run_by_default(planted, tiny_pipeline, caplog):
    folder, marker = planted
    with caplog.at_level(logging.WARNING, logger="difiisr_dwt.loading"):
        pipe = load_pipeline(folder, device="cpu")
    assert not marker.exists()
    # the installed modules, not the folder's
    assert type(pipe.scheduler).__module__ == "difiisr_dwt.schedulers.scheduling_resshift"
    assert type(pipe).__module__ == "difiisr_dwt.pipelines.pipeline_difiisr_dwt"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "scheduler_resshift.py differs" in warned[0] and "--trust-remote-code" in warned[0]
    assert "the installed difiisr_dwt/schedulers/scheduling_resshift.py" in warned[0]
    assert np.abs(_run(pipe) - _run(tiny_pipeline)).max() < 1e-5  # the folder's weights and configs


def test_repo_id_loads_offline_with_installed_classes(planted, tmp_path, monkeypatch):
    """A repo id goes through ``snapshot_download`` (here: an offline cache) and then the same loader."""
    from huggingface_hub import constants

    folder, marker = planted
    cache = tmp_path / "hub"
    commit = "0" * 40
    (cache / "models--org--tiny" / "refs").mkdir(parents=True)
    (cache / "models--org--tiny" / "refs" / "main").write_text(commit)
    (cache / "models--org--tiny" / "snapshots").mkdir()
    os.symlink(folder, cache / "models--org--tiny" / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pipe = load_pipeline("org/tiny", device="cpu")
    assert type(pipe.scheduler).__module__ == "difiisr_dwt.schedulers.scheduling_resshift" and not marker.exists()
    with pytest.raises(ModelLoadError, match="cannot load the model org/missing"):
        load_pipeline("org/missing", device="cpu")


def test_cli_runs_folder_code_only_with_the_flag(planted, tmp_path, caplog):
    folder, marker = planted
    hr = tmp_path / "hr"
    hr.mkdir()
    PIL.Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(hr / "a.png")
    argv = ["eval", "--hr", str(hr), "--model", str(folder), "--metrics", "psnr_y", "--steps", "1",
            "--device", "cpu"]
    with caplog.at_level(logging.WARNING, logger="difiisr_dwt.loading"):
        assert main(argv) == 0
    assert not marker.exists()
    assert "scheduler_resshift.py differs" in caplog.text
    # With the flag the folder's code runs (in a fresh process: diffusers caches remote modules by name).
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mods"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "difiisr_dwt.cli", *argv, "--trust-remote-code"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.read_text() == "ran"


def test_gpu_check_and_demo_do_not_run_folder_code(planted, monkeypatch):
    sys.path.insert(0, str(REPO / "examples" / "gradio_app"))
    try:
        import app
    finally:
        sys.path.remove(str(REPO / "examples" / "gradio_app"))
    from difiisr_dwt.benchmarks import gpu_check

    folder, marker = planted
    loaded = [app.load(str(folder), "cpu")]

    class Loaded(Exception):
        pass

    def stop(pipe, *args, **kwargs):  # gpu_check's timing runs are not needed here, only its loading
        loaded.append(pipe)
        raise Loaded

    monkeypatch.setattr(gpu_check, "Checker", stop)
    with pytest.raises(Loaded):
        gpu_check.check(str(folder), "cpu", quick=True)
    assert [type(p.scheduler).__module__ for p in loaded] == ["difiisr_dwt.schedulers.scheduling_resshift"] * 2
    assert not marker.exists()
