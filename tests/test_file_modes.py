"""Every file and folder the tool writes gets the mode a plain ``open()`` / ``mkdir`` would give
(0o666 / 0o777 less the umask), not ``mkstemp``'s 0o600, ``mkdtemp``'s 0o700 or safetensors' 0o600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.io import current_umask, replace_dir, save_image_atomic, write_text_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tree_modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix() or ".": _mode(p) for p in [folder, *folder.rglob("*")]}


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_current_umask_reads_without_changing(umask_022):
    assert current_umask() == 0o022
    os.umask(0o027)
    assert current_umask() == 0o027 and os.umask(0o027) == 0o027  # still set: reading did not change it


def test_atomic_file_writes(umask_022, tmp_path):
    write_text_atomic("{}", tmp_path / "a.json")
    save_image_atomic(PIL.Image.new("L", (4, 4)), tmp_path / "a_x4.png")
    save_image_atomic(PIL.Image.new("I;16", (4, 4)), tmp_path / "a_x4.tif")
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == {n: 0o644 for n in ("a.json", "a_x4.png", "a_x4.tif")}
    os.chmod(tmp_path / "a.json", 0o640)  # an existing file keeps its mode, as with open(path, "w")
    write_text_atomic("[]", tmp_path / "a.json")
    assert _mode(tmp_path / "a.json") == 0o640
    os.umask(0o077)  # a restrictive umask is honoured, not overridden
    write_text_atomic("{}", tmp_path / "b.json")
    assert _mode(tmp_path / "b.json") == 0o600


def test_eval_reports(umask_022, tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    PIL.Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(hr / "a.png")
    out = tmp_path / "out"
    code = main(["eval", "--hr", str(hr), "--bicubic", "--metrics", "psnr_y", "--json", str(out / "r.json"),
                 "--csv", str(out / "r.csv"), "--grid", str(out / "grid.png")])
    assert code == 0
    assert _tree_modes(out) == {".": 0o755, "r.json": 0o644, "r.csv": 0o644, "grid.png": 0o644}


def test_model_folders(umask_022, tmp_path):
    """convert-vq's folder, training's component folders and checkpoints (``replace_dir``) and a release."""
    import tempfile

    from difiisr_dwt.convert import save_vqmodel_atomic
    from difiisr_dwt.presets import build_pipeline
    from difiisr_dwt.release import export_release
    from difiisr_dwt.training.checkpointing import dump_rank_weights, save_folder_atomic

    pipe = build_pipeline("test", seed=0)
    save_vqmodel_atomic(pipe.vqvae, tmp_path / "vq")
    save_folder_atomic(pipe.unet.save_pretrained, tmp_path / "train" / "unet")
    dump_rank_weights(pipe.dwt_encoder, tmp_path / "train", 0)
    checkpoint = Path(tempfile.mkdtemp(dir=tmp_path))  # what accelerate's save_state leaves: 0o700, 0o600 files
    pipe.dwt_encoder.save_pretrained(checkpoint / "dwt_encoder")
    replace_dir(checkpoint, tmp_path / "train" / "checkpoint-1")
    pipe.save_pretrained(tmp_path / "pipeline")
    export_release(tmp_path / "pipeline", tmp_path / "release")
    for folder in ("vq", "train", "release"):
        modes = _tree_modes(tmp_path / folder)
        assert any(name.endswith(".safetensors") for name in modes)
        wrong = {name: oct(mode) for name, mode in modes.items()
                 if mode != (0o755 if (tmp_path / folder / name).is_dir() else 0o644)}
        assert not wrong, f"{folder}: {wrong}"
