"""Hub layout: the saved folder loads in a fresh offline process with trust_remote_code."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from difiisr_dwt.release import release_code_files

CODE_FILES = release_code_files()  # release path -> package module

LOAD_AND_RUN = """
import sys, numpy as np, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
image = np.load(sys.argv[2])
out = pipe(image, num_inference_steps=4, generator=torch.Generator().manual_seed(7), output_type="np").images
np.save(sys.argv[3], out)
print(type(pipe).__module__, type(pipe.image_processor).__module__, type(pipe.dwt_encoder).__module__,
      type(pipe.scheduler).__module__)
"""


@pytest.mark.parametrize("relative", sorted(CODE_FILES))
def test_hub_code_files_are_self_contained(relative):
    """Each Hub code file imports only the standard library, torch, numpy, PIL, diffusers, ptwt/pywt and
    (relatively) sibling files of its own Hub folder, never the ``difiisr_dwt`` package."""
    allowed = {"torch", "numpy", "PIL", "diffusers", "ptwt", "pywt", "__future__"}
    folder = Path(relative).parent
    siblings = {Path(r).stem for r in CODE_FILES if Path(r).parent == folder and r != relative}
    tree = ast.parse(CODE_FILES[relative].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module in siblings, f"{relative}: relative import of {node.module}"
            continue
        elif isinstance(node, ast.ImportFrom):
            roots = {node.module.split(".")[0]}
        else:
            continue
        for root in roots:
            assert root in allowed or root in sys.stdlib_module_names, f"{relative} imports {root}"


def test_pipeline_imports_every_sibling_directly():
    """diffusers copies a local folder's pipeline file and only the files it imports directly
    (``get_cached_module_file``: ``check_imports`` is not recursive): a sibling imported only by another
    sibling would be missing from the loaded module's folder."""
    from diffusers.utils.dynamic_modules_utils import get_relative_imports

    root_files = {Path(r).stem for r in CODE_FILES if "/" not in r} - {"pipeline_difiisr_dwt"}
    assert root_files >= {"image_processor", "tiling", "fidelity"}
    assert set(get_relative_imports(CODE_FILES["pipeline_difiisr_dwt.py"])) == root_files


def test_saved_folder_loads_offline_in_fresh_process(tiny_pipeline, tmp_path):
    folder = tmp_path / "difiisr-dwt-test"
    tiny_pipeline.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_difiisr_dwt", "DifIISRDWTPipeline"]
    assert index["dwt_encoder"] == ["modeling_dwt_encoder", "DWTEncoder"]
    assert index["scheduler"] == ["scheduler_resshift", "ResShiftScheduler"]
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["vqvae"] == ["diffusers", "VQModel"]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py")) == sorted(CODE_FILES)
    for relative, source in CODE_FILES.items():
        assert (folder / relative).read_bytes() == source.read_bytes(), relative
    assert list(folder.glob("*/*.safetensors")) and not list(folder.glob("*/*.bin"))

    # a scene, not pure noise: the default fidelity step takes a noise image for sensor noise and removes it,
    # and then two seeds would give nearly the same output
    yy, xx = np.mgrid[:20, :28]
    image = (0.5 + 0.3 * np.sin(xx / 3) * np.cos(yy / 4) + 0.01 * np.random.RandomState(0).rand(20, 28))
    image = image.astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    expected = tiny_pipeline(image, num_inference_steps=4, generator=torch.Generator().manual_seed(7),
                             output_type="np").images
    # A fresh process outside the checkout, offline: the code must come from the folder itself.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env["PYTHONPATH"] = ""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, str(folder), str(tmp_path / "image.npy"), str(tmp_path / "out.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    modules = result.stdout.split()
    # the folder's code, not ours: the pipeline, its sibling file (copied beside it by diffusers), the components
    assert all(m.startswith("diffusers_modules.") for m in modules) and len(modules) == 4, modules
    assert modules[1].rsplit(".", 1)[-1] == "image_processor"
    # Same code and weights, another process: float sums may reorder under load (seen: 2.3e-6), a wrong
    # model or wrong code differs by far more than the tolerance.
    got = np.load(tmp_path / "out.npy")
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4, f"max abs difference {np.abs(got - expected).max()}"
    other_seed = tiny_pipeline(image, num_inference_steps=4, generator=torch.Generator().manual_seed(8),
                               output_type="np").images
    assert np.abs(other_seed - expected).max() > 1e-2  # the tolerance still tells different results apart


def test_loading_without_trust_remote_code_explains(tiny_pipeline, tmp_path):
    from diffusers import DiffusionPipeline

    tiny_pipeline.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path)
