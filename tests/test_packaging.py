"""A non-editable install (``pip install .`` / ``pip install git+URL``) works offline with the default model.

Builds the wheel from a copy of the checkout, installs it into a fresh virtual environment (torch and the
other dependencies come from the running interpreter's import folders, whether it is a venv, a conda env or
the system's: no network) and runs ``difiisr-dwt upscale``
there, outside the checkout, with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import PIL.Image
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "images" / "FLIR_08954_lr.png"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "tests", "out", "runs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = (root / "dist").glob("difiisr_dwt-*.whl")
    return built


def test_wheel_ships_the_default_model_and_nothing_at_the_top_level(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    model = REPO / "hub" / "difiisr-dwt-tiny"
    shipped = {f"difiisr_dwt/default_model/{p.relative_to(model).as_posix()}" for p in model.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped and shipped <= names
    # Nothing at the top level of site-packages but the package: a top-level module (e.g. the pipeline's)
    # would be shadowed by a same-named file in the working directory (sys.path[0]) and run it.
    (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    assert {n.split("/")[0] for n in names} == {"difiisr_dwt", dist_info}, sorted(n for n in names if "/" not in n)
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(f"{dist_info}/top_level.txt").decode().split() == ["difiisr_dwt"]
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "difiisr-dwt = difiisr_dwt.cli:main" in entry_points
    for module in ("pipelines/pipeline_difiisr_dwt", "pipelines/image_processor", "pipelines/tiling",
                   "pipelines/fidelity", "models/modeling_dwt_encoder", "schedulers/scheduling_resshift"):
        assert f"difiisr_dwt/{module}.py" in names


def _interpreter_paths(known: list[str]) -> list[str]:
    """The import folders of the running interpreter (its venv's, a conda env's or the system's
    site-packages, plus what their ``.pth`` files added) that are not in ``known`` (a fresh venv's own
    path: the standard library), less any copy of this project (the checkout on ``PYTHONPATH``)."""
    known = {os.path.realpath(p) for p in known if p}
    paths = []
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else None  # "": the current folder, not an install
        if real is None or real in known or real in paths or not os.path.isdir(real):
            continue
        if not os.path.isdir(os.path.join(real, "difiisr_dwt")):
            paths.append(real)
    return paths


def make_venv(venv: Path) -> Path:
    """A fresh virtual environment that sees this interpreter's installed packages; returns its python.

    Not ``venv --system-site-packages``: that links the *base* interpreter (``sys.base_prefix``), which in a
    venv or virtualenv is not where torch & co. are installed. Instead the venv's own site-packages gets a
    ``.pth`` file naming :func:`_interpreter_paths`, appended after it, so what is installed into the venv
    comes first, and this works in a venv, a conda env and a system interpreter alike. Paths in a ``.pth``
    are not site folders, so their own ``.pth`` files (an editable install of this project) do not run.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-I", "-c", "import json, sys, sysconfig; "
                            "print(json.dumps([sysconfig.get_path('purelib'), sys.path]))"],
                           check=True, capture_output=True, text=True, timeout=60)
    purelib, own_path = json.loads(probe.stdout)
    Path(purelib, "_difiisr_test_parent_env.pth").write_text("\n".join(_interpreter_paths(own_path)) + "\n")
    return python


@pytest.mark.slow
def test_installed_wheel_upscales_offline(wheel, tmp_path):
    venv = tmp_path / "venv"
    python = make_venv(venv)
    # pip from the parent environment, installing into the venv; --ignore-installed: the editable checkout
    # install that the parent environment may hold must not count as "already satisfied"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = subprocess.run(
        [str(python), "-c", "import json, difiisr_dwt; print(json.dumps([difiisr_dwt.__file__, "
         "difiisr_dwt.DEFAULT_MODEL]))"], cwd=work, env=env, capture_output=True, text=True, check=True)
    package_file, default_model = json.loads(probe.stdout)
    assert Path(package_file).is_relative_to(venv) and Path(default_model).is_relative_to(venv), probe.stdout

    result = subprocess.run(
        [str(venv / "bin" / "difiisr-dwt"), "upscale", str(EXAMPLE), "-o", str(work / "out"), "--steps", "1",
         "--device", "cpu"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with PIL.Image.open(EXAMPLE) as lr, PIL.Image.open(work / "out" / "FLIR_08954_lr_x4.png") as sr:
        assert sr.size == (lr.width * 4, lr.height * 4)


def test_package_level_names_load_lazily():
    """``from difiisr_dwt import DifIISRDWTPipeline, DWTEncoder, ResShiftScheduler`` replaces the old top-level
    modules; ``import difiisr_dwt`` alone still imports no torch (the CLI's parsers and --help stay fast)."""
    code = ("import sys, difiisr_dwt; assert 'torch' not in sys.modules, 'torch imported'; "
            "from difiisr_dwt import DifIISRDWTPipeline, DWTEncoder, ResShiftScheduler; "
            "print(DifIISRDWTPipeline.__module__, DWTEncoder.__module__, ResShiftScheduler.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["difiisr_dwt.pipelines.pipeline_difiisr_dwt",
                                     "difiisr_dwt.models.modeling_dwt_encoder",
                                     "difiisr_dwt.schedulers.scheduling_resshift"]
    import difiisr_dwt

    with pytest.raises(AttributeError, match="no attribute 'pipeline_difiisr_dwt'"):
        difiisr_dwt.pipeline_difiisr_dwt  # noqa: B018  (the attribute access is the test)
