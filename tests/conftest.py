"""Shared fixtures: tiny random pipelines and the optional ``../shared`` data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DIFIISR_SHARED", REPO.parent / "shared"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (real IR data, LPIPS weights, reference schedules); skips where it is absent."""
    if not (SHARED / "DESIGN.md").is_file():
        pytest.skip(f"needs the project's shared/ folder beside the checkout ({SHARED} not found)")
    return SHARED


@pytest.fixture(scope="session")
def lpips_weights(shared_dir: Path) -> Path:
    return shared_dir / "lpips"


@pytest.fixture
def tiny_pipeline():
    """A seeded pipeline of freshly initialised ``test``-preset components (no progress bar)."""
    from difiisr_dwt.presets import build_pipeline

    return build_pipeline("test", seed=0)


@pytest.fixture(scope="session")
def train_main():
    """``main`` of ``train_accelerate.py``: a script of the checkout, not an installed module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_accelerate", REPO / "train_accelerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="session")
def saved_test_model(tmp_path_factory) -> Path:
    """A ``test``-preset pipeline saved to a folder (random weights; loads in about a second)."""
    from difiisr_dwt.presets import build_pipeline

    folder = tmp_path_factory.mktemp("test_model")
    build_pipeline("test", seed=0).save_pretrained(folder)
    return folder
