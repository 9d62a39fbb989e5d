"""Code in the working directory never runs without opt-in (issue 18).

A model folder holds code files (``pipeline_difiisr_dwt.py``, its sibling files, the components' modules):
any downloaded model, or ``hub/difiisr-dwt-tiny`` itself. Working from inside such a folder is common
(``cd model && difiisr-dwt upscale ...``), and ``python -m`` / ``python -c`` put the working directory first
on ``sys.path``. Were the package's model code installed as generic top-level modules, the folder's
same-named files would be imported instead. Here every ``.py`` of a copy of the default model writes a
marker file when imported; every entry point runs from inside that copy and must not write it, except
with ``--trust-remote-code``, which must (so the marker can tell).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "hub" / "difiisr-dwt-tiny"
APP_DIR = REPO / "examples" / "gradio_app"

pytestmark = pytest.mark.slow  # one interpreter (torch, diffusers) per entry point


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path, dict]:
    """A copy of the default model whose code files append their module name to ``marker`` when imported,
    a tiny input image and HR folder beside it, and the environment to run commands in (offline)."""
    folder, marker = tmp_path / "model", tmp_path / "marker"
    shutil.copytree(MODEL, folder, ignore=shutil.ignore_patterns("__pycache__"))
    planted_files = sorted(folder.rglob("*.py"))
    assert {p.name for p in planted_files} >= {"pipeline_difiisr_dwt.py", "modeling_dwt_encoder.py",
                                                 "scheduler_resshift.py"}
    for path in planted_files:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"\nwith open({str(marker)!r}, 'a') as _marker:\n    _marker.write(__name__ + '\\n')\n")
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 256, (8, 12), dtype=np.uint8)).save(tmp_path / "lr.png")
    (tmp_path / "hr").mkdir()
    PIL.Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "hr" / "a.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    return folder, marker, env


def _commands(tmp: Path) -> dict[str, list[str]]:
    """Entry point -> argv, run with the planted model folder as the working directory."""
    py = sys.executable
    upscale = ["upscale", str(tmp / "lr.png"), "--steps", "1", "--device", "cpu"]
    # the smallest bench section that builds a pipeline (the encoder section imports no pipeline code)
    bench = ["bench", "--quick", "--section", "end-to-end", "--e2e-size", "32", "--threads", "1", "--repeats", "1"]
    return {
        "python -m cli upscale": [py, "-m", "difiisr_dwt.cli", *upscale, "-o", str(tmp / "out_m")],
        "load_pipeline('.')": [py, "-c", "from difiisr_dwt.loading import load_pipeline; load_pipeline('.', 'cpu')"],
        "python -m cli eval --model .": [py, "-m", "difiisr_dwt.cli", "eval", "--hr", str(tmp / "hr"), "--model",
                                         ".", "--metrics", "psnr_y", "--steps", "1", "--device", "cpu"],
        "python -m cli bench": [py, "-m", "difiisr_dwt.cli", *bench],
        # accelerate's launcher runs `python -m difiisr_dwt.cli` in the same working directory
        "accelerate launch -m cli bench": [py, "-m", "accelerate.commands.accelerate_cli", "launch", "--cpu",
                                           "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                                           "--dynamo_backend", "no", "-m", "difiisr_dwt.cli", *bench],
        "demo load('.')": [py, "-c", f"import sys; sys.path.insert(0, {str(APP_DIR)!r}); import app; "
                                     "app.load('.', 'cpu')"],
    }


def _run(argv: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{argv}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.parametrize("entry", list(_commands(Path("."))))
def test_no_code_from_the_working_directory_runs(entry, planted):
    folder, marker, env = planted
    if entry.startswith("demo"):
        pytest.importorskip("gradio")
    if entry.startswith("accelerate"):
        pytest.importorskip("accelerate")
    _run(_commands(folder.parent)[entry], folder, env)
    assert not marker.exists(), f"{entry} imported {marker.read_text().split()} from {folder}"


def test_console_script_runs_no_code_from_the_working_directory(planted):
    folder, marker, env = planted
    script = shutil.which("difiisr-dwt", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                env.get("PATH", "")]))
    if script is None:
        pytest.skip("the difiisr-dwt console script is not installed")
    tmp = folder.parent
    _run([script, "upscale", str(tmp / "lr.png"), "-o", str(tmp / "out"), "--model", ".", "--steps", "1",
          "--device", "cpu"], folder, env)
    assert not marker.exists(), marker.read_text()
    assert (tmp / "out" / "lr_x4.png").is_file()


def test_trust_remote_code_runs_the_folders_code(planted):
    """The opt-in runs the folder's code: the marker the tests above look for does get written."""
    folder, marker, env = planted
    tmp = folder.parent
    _run([sys.executable, "-m", "difiisr_dwt.cli", "upscale", str(tmp / "lr.png"), "-o", str(tmp / "out"),
          "--model", ".", "--steps", "1", "--device", "cpu", "--trust-remote-code"], folder, env)
    ran = marker.read_text().split()
    # diffusers imports the folder's pipeline with its sibling files, and the components' modules
    assert {name.rsplit(".", 1)[-1] for name in ran} >= {"pipeline_difiisr_dwt", "image_processor", "tiling",
                                                         "fidelity", "modeling_dwt_encoder", "scheduler_resshift"}
    assert (tmp / "out" / "lr_x4.png").is_file()
