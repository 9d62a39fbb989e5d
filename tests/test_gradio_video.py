"""The demo's video section (examples/gradio_app/video_clip.py): a short clip in, the x4 clip out; limits."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e .[demo])")

APP_DIR = Path(__file__).resolve().parent.parent / "examples" / "gradio_app"
sys.path.insert(0, str(APP_DIR))  # video_clip.py imports its sibling imaging.py

import video_clip  # noqa: E402
from imaging import UploadError  # noqa: E402

from difiisr_dwt.video import probe_video, write_video  # noqa: E402


@pytest.fixture(scope="module")
def pipe(saved_test_model):
    from difiisr_dwt.loading import load_pipeline

    pipe = load_pipeline(str(saved_test_model), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _clip(path: Path, frames: int, size=(16, 12), rate=Fraction(15)) -> Path:
    rng = np.random.default_rng(0)
    write_video([rng.integers(0, 255, size[::-1]).astype(np.uint8) for _ in range(frames)], path, rate, False)
    return path


def test_clip_comes_back_x4_at_its_rate(pipe, tmp_path):
    out = video_clip.upscale_clip(pipe, str(_clip(tmp_path / "c.mp4", 3)), tmp_path / "served", steps=1)
    info = probe_video(out.path)
    assert out.path.suffix == ".mp4" and out.path.is_relative_to(tmp_path / "served")
    assert (info.frame_rate, info.frame_count, info.width, info.height, info.grey) == (15, 3, 64, 48, True)
    assert "3 frames of 16x12 at 15 fps -> 64x48" in out.info


def test_clip_limits_are_clear_messages(pipe, tmp_path):
    with pytest.raises(UploadError, match="has 5 frames; this demo takes at most 4"):
        video_clip.upscale_clip(pipe, str(_clip(tmp_path / "long.mp4", 5)), tmp_path, 1, max_frames=4)
    with pytest.raises(UploadError, match="16x12 per frame; this demo takes at most 100 pixels"):
        video_clip.upscale_clip(pipe, str(_clip(tmp_path / "big.mp4", 2)), tmp_path, 1, max_pixels=100)
    (tmp_path / "x.mp4").write_bytes(b"no video here")
    with pytest.raises(UploadError, match="x.mp4: cannot read it as a video"):
        video_clip.upscale_clip(pipe, str(tmp_path / "x.mp4"), tmp_path, 1)
    with pytest.raises(UploadError, match="not a video file"):
        video_clip.upscale_clip(pipe, str(tmp_path / "x.png"), tmp_path, 1)


def test_demo_has_the_video_endpoint(pipe, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("difiisr_gradio_app_video", APP_DIR / "app.py")
    app = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = app  # dataclasses look their module up there
    spec.loader.exec_module(app)
    demo = app.build_demo(pipe, output_root=tmp_path)
    assert {"upscale", "upscale_video"} <= {fn.api_name for fn in demo.fns.values()}
