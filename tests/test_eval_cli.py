"""``difiisr-dwt eval``: the bicubic reference numbers, a model run, file pairing and its errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt import metrics
from difiisr_dwt.cli import main
from difiisr_dwt.metrics import psnr_y, ssim_y

METRIC_KEYS = {"psnr_y", "ssim_y", "lpips_alex", "lpips_vgg", "lr_error", "mean_shift"}


def run_eval(argv: list[str]) -> int:
    return main(["eval", *map(str, argv)])


def _save(array: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)


@pytest.fixture
def hr_dir(tmp_path):
    """Two smooth-plus-noise 8-bit grayscale HR images, 64x48 and 48x64."""
    rng = np.random.default_rng(0)
    for name, shape in [("a.png", (48, 64)), ("b.png", (64, 48))]:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        image = 128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 8, shape)
        _save(np.clip(image, 0, 255).astype(np.uint8), tmp_path / "hr" / name)
    return tmp_path / "hr"


def _bicubic_x4_of(hr_path) -> np.ndarray:
    hr = PIL.Image.open(hr_path)
    lr = hr.resize((hr.width // 4, hr.height // 4), PIL.Image.BICUBIC)
    return np.asarray(lr.resize(hr.size, PIL.Image.BICUBIC))


@pytest.mark.slow
def test_bicubic_reproduces_roadscene_reference(shared_dir, lpips_weights, tmp_path):
    """DESIGN.md section 6: bicubic x4 on RoadScene val is PSNR_Y 30.28, SSIM_Y 0.8024, LPIPS-alex 0.4614."""
    out = tmp_path / "bicubic.json"
    ir = shared_dir / "data" / "ir"
    code = run_eval([
        "--hr", ir / "roadscene", "--file-list", ir / "roadscene_val.txt", "--bicubic", "--summary-only",
        "--metrics", "psnr_y,ssim_y,lpips_alex", "--lpips_backbone_dir", lpips_weights, "--device", "cpu",
        "--json", out,
    ])
    assert code == 0
    result = json.loads(out.read_text())
    assert list(result) == ["bicubic"]
    assert len(result["bicubic"]["images"]) == 40
    mean = result["bicubic"]["mean"]
    assert mean["psnr_y"] == pytest.approx(30.28, abs=0.01)
    assert mean["ssim_y"] == pytest.approx(0.8024, abs=5e-4)
    assert mean["lpips_alex"] == pytest.approx(0.4614, abs=5e-4)


@pytest.fixture(scope="module")
def saved_test_pipeline(tmp_path_factory):
    from difiisr_dwt.presets import build_pipeline

    folder = tmp_path_factory.mktemp("pipeline") / "test-pipeline"
    build_pipeline("test", seed=0).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_model_run_writes_json_csv_and_grid(saved_test_pipeline, hr_dir, lpips_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_eval([
        "--hr", hr_dir, "--model", saved_test_pipeline, "--steps", 2, "--seed", 0, "--device", "cpu",
        "--lpips_backbone_dir", lpips_weights, "--json", out / "r.json", "--csv", out / "r.csv",
        "--grid", out / "g.png",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| a.png | model |" in printed and "| **mean (2)** | bicubic |" in printed

    result = json.loads((out / "r.json").read_text())
    assert set(result) == {"bicubic", "model"}
    for method in result.values():
        assert set(method) == {"mean", "max", "images", "protocol"}
        assert set(method["mean"]) == METRIC_KEYS
        assert set(method["images"]) == {"a.png", "b.png"}
        for values in method["images"].values():
            assert set(values) == METRIC_KEYS
        assert method["mean"]["psnr_y"] == pytest.approx(np.mean([v["psnr_y"] for v in method["images"].values()]))
    assert result["model"]["images"]["a.png"] != result["bicubic"]["images"]["a.png"]
    # the baseline row is PIL bicubic /4 then x4 of the HR image
    expected = _bicubic_x4_of(hr_dir / "a.png")
    hr = np.asarray(PIL.Image.open(hr_dir / "a.png"))
    assert result["bicubic"]["images"]["a.png"]["psnr_y"] == pytest.approx(psnr_y(expected, hr), rel=1e-12)

    with open(out / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["image"]) for r in rows} == {
        (m, i) for m in ("bicubic", "model") for i in ("a.png", "b.png", "mean")
    }
    row = next(r for r in rows if r["method"] == "model" and r["image"] == "b.png")
    assert float(row["ssim_y"]) == pytest.approx(result["model"]["images"]["b.png"]["ssim_y"], rel=1e-12)

    grid = PIL.Image.open(out / "g.png")
    assert grid.mode == "RGB" and grid.width == 3 * 2 * 48  # bicubic | model | HR, 48-pixel crops at 2x
    assert grid.height > 2 * 2 * 48


def test_sr_folder_pairs_by_name_with_suffix(hr_dir, tmp_path):
    """SR files named ``<stem>_x4.png`` pair with ``<stem>.png``; metrics equal direct calls."""
    sr_dir = tmp_path / "sr"
    expected = {}
    for name in ("a", "b"):
        sr = _bicubic_x4_of(hr_dir / f"{name}.png")
        _save(sr, sr_dir / f"{name}_x4.png")
        hr = np.asarray(PIL.Image.open(hr_dir / f"{name}.png"))
        expected[f"{name}.png"] = (psnr_y(sr, hr), ssim_y(sr, hr))
    out = tmp_path / "sr.json"
    assert run_eval(["--hr", hr_dir, "--sr", sr_dir, "--metrics", "psnr_y,ssim_y", "--json", out]) == 0
    result = json.loads(out.read_text())
    assert list(result) == ["sr"]
    for name, (psnr, ssim) in expected.items():
        assert result["sr"]["images"][name] == {"psnr_y": pytest.approx(psnr), "ssim_y": pytest.approx(ssim)}


def test_lr_folder_and_file_list(hr_dir, tmp_path):
    """``--lr`` files named ``<stem>x4`` are used as given; ``--file-list`` restricts the HR set."""
    lr_dir = tmp_path / "lr"
    hr = PIL.Image.open(hr_dir / "b.png")
    lr = np.zeros((hr.height // 4, hr.width // 4), np.uint8) + 100  # not the bicubic LR: must change the result
    _save(lr, lr_dir / "bx4.png")
    listing = tmp_path / "list.txt"
    listing.write_text("b.png\n")
    out = tmp_path / "lr.json"
    code = run_eval(["--hr", hr_dir, "--lr", lr_dir, "--bicubic", "--file-list", listing, "--metrics", "psnr_y",
                     "--json", out])
    assert code == 0
    result = json.loads(out.read_text())["bicubic"]["images"]
    assert list(result) == ["b.png"]
    flat = np.full((hr.height, hr.width), 100, np.uint8)  # bicubic of a constant image is that constant
    assert result["b.png"]["psnr_y"] == pytest.approx(psnr_y(flat, np.asarray(hr)), rel=1e-12)


def test_missing_pair_is_a_clear_error(hr_dir, tmp_path, capsys):
    sr_dir = tmp_path / "sr"
    _save(np.zeros((48, 64), np.uint8), sr_dir / "a.png")
    assert run_eval(["--hr", hr_dir, "--sr", sr_dir, "--metrics", "psnr_y"]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 HR image(s) have no partner" in err and "b.png" in err and str(sr_dir) in err


def test_ambiguous_pair_is_a_clear_error(hr_dir, tmp_path, capsys):
    sr_dir = tmp_path / "sr"
    for name in ("a_x4.png", "a_SR.png", "b.png"):
        _save(np.zeros((4, 4), np.uint8), sr_dir / name)
    assert run_eval(["--hr", hr_dir, "--sr", sr_dir, "--metrics", "psnr_y"]) == 2
    err = capsys.readouterr().err
    assert "a.png: several candidates" in err and "a_x4.png" in err and "a_SR.png" in err


def test_size_mismatch_is_a_clear_error(hr_dir, tmp_path, capsys):
    sr_dir = tmp_path / "sr"
    _save(np.zeros((48, 64), np.uint8), sr_dir / "a.png")
    _save(np.zeros((60, 48), np.uint8), sr_dir / "b.png")
    assert run_eval(["--hr", hr_dir, "--sr", sr_dir, "--metrics", "psnr_y"]) == 2
    err = capsys.readouterr().err
    assert "b.png" in err and "48x60" in err and "HR is 48x64" in err

    lr_dir = tmp_path / "lr"
    _save(np.zeros((12, 16), np.uint8), lr_dir / "a.png")
    _save(np.zeros((12, 12), np.uint8), lr_dir / "b.png")
    assert run_eval(["--hr", hr_dir, "--lr", lr_dir, "--bicubic", "--metrics", "psnr_y"]) == 2
    err = capsys.readouterr().err
    assert "LR b.png x4 is 48x48 but HR is 48x64" in err


def test_missing_lpips_weights_message(hr_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(metrics, "_LPIPS_CACHE", {})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(metrics.LPIPS_WEIGHTS_ENV, raising=False)
    assert run_eval(["--hr", hr_dir, "--bicubic", "--metrics", "psnr_y,lpips_alex"]) == 2
    err = capsys.readouterr().err
    assert "No ImageNet backbone for LPIPS-alex" in err and "--lpips_backbone_dir" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bicubic", "--metrics", "psnr,ssim_y"], "--metrics: unknown ['psnr']"),
        (["--bicubic", "--file-list", "missing.txt"], "--file-list missing.txt: no such file"),
        (["--model", "{empty}", "--metrics", "psnr_y", "--device", "cpu"], "cannot load the model"),
    ],
)
def test_bad_options(hr_dir, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{empty}", str(tmp_path / "empty")) for a in argv]
    assert run_eval(["--hr", hr_dir, *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "--limit: must be >= 1, got 0"),
    (["--noisy-lr", "--noise-seed", "-1"], "--noise-seed/--noise_seed: must be >= 0, got -1"),
    (["--crop-border", "-1"], "--crop-border/--crop_border: must be >= 0, got -1"),
    (["--grid-images", "0"], "--grid-images/--grid_images: must be >= 1, got 0"),
])
def test_bad_numbers_are_argument_errors(hr_dir, capsys, argv, message):
    """They were numpy / metric ValueErrors with a traceback (exit 1), the crop border's after the model ran."""
    with pytest.raises(SystemExit) as exit_:
        run_eval(["--hr", hr_dir, "--bicubic", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"error: argument {message}" in err and "Traceback" not in err


def test_a_crop_border_larger_than_an_image_is_named_before_any_method_runs(hr_dir, monkeypatch, capsys):
    from difiisr_dwt import evaluation

    ran = []
    monkeypatch.setattr(evaluation, "bicubic_up", lambda lr: ran.append(lr))
    assert run_eval(["--hr", hr_dir, "--bicubic", "--metrics", "psnr_y", "--crop-border", "1000"]) == 2
    assert "--crop-border 1000 removes the whole" in capsys.readouterr().err and not ran



def test_sr_at_the_full_size_of_an_hr_not_a_multiple_of_4(tmp_path, capsys):
    """HR 129x129 and 128x128, SR at each HR's full size: the fidelity columns were measured only for sides that
    are multiples of 4 (here: a KeyError after all images, or silently missing columns), and ``--bicubic`` beside
    ``--sr`` refused 129x129 as "HR is 128x128". Every method is now measured on the mod-cropped HR."""
    rng = np.random.default_rng(1)
    for name, side in (("b.png", 129), ("c.png", 128)):
        hr = np.clip(128 + 40 * rng.standard_normal((side, side)), 0, 255).astype(np.uint8)
        _save(hr, tmp_path / "hr" / name)
        lr = PIL.Image.fromarray(hr[:128, :128]).resize((32, 32), PIL.Image.BICUBIC)  # the protocol's LR
        sr = np.asarray(lr.resize((128, 128), PIL.Image.BICUBIC))
        full = np.pad(sr, ((0, side - 128), (0, side - 128)), mode="edge")  # SR at the HR's full size
        _save(full, tmp_path / "sr" / name)
    out = tmp_path / "r.json"
    assert run_eval(["--hr", tmp_path / "hr", "--sr", tmp_path / "sr", "--bicubic", "--metrics",
                     "psnr_y,lr_error,mean_shift", "--json", out]) == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    for method in ("bicubic", "sr"):
        assert set(results[method]["images"]) == {"b.png", "c.png"}
        for values in results[method]["images"].values():
            assert set(values) == {"psnr_y", "lr_error", "mean_shift"}
    # the SR file is the bicubic upscale of the same LR: the same figures on the same (cropped) HR
    for name in ("b.png", "c.png"):
        assert results["sr"]["images"][name]["psnr_y"] == pytest.approx(results["bicubic"]["images"][name]["psnr_y"])


def test_hr_files_sharing_a_name_are_refused(tmp_path, capsys):
    """``s1/a.png`` and ``s2/a.png`` gave one row (the second overwrote the first) and the same noise; ``a.png``
    and ``a.jpg`` one saved LR."""
    image = np.full((16, 16), 100, np.uint8)
    for name in ("s1/a.png", "s2/a.png"):
        _save(image, tmp_path / "hr" / name)
    (tmp_path / "list.txt").write_text("s1/a.png\ns2/a.png\n")
    assert run_eval(["--hr", tmp_path / "hr", "--file-list", tmp_path / "list.txt", "--bicubic",
                     "--metrics", "psnr_y"]) == 2
    assert "s1/a.png and s2/a.png share the name 'a'" in capsys.readouterr().err
    _save(image, tmp_path / "flat" / "a.png")
    PIL.Image.fromarray(image).save(tmp_path / "flat" / "a.jpg")
    assert run_eval(["--hr", tmp_path / "flat", "--bicubic", "--metrics", "psnr_y", "--save-lr",
                     tmp_path / "lr"]) == 2
    assert "a.jpg and a.png share the name 'a'" in capsys.readouterr().err and not (tmp_path / "lr").exists()


def test_realesrgan_out_suffix_pairs(hr_dir, tmp_path, capsys):
    """Real-ESRGAN's inference_realesrgan.py writes ``NAME_out.png`` by default."""
    for path in sorted(hr_dir.iterdir()):
        PIL.Image.fromarray(_bicubic_x4_of(path)).save(tmp_path / f"{path.stem}_out.png")
    assert run_eval(["--hr", hr_dir, "--sr", tmp_path, "--metrics", "psnr_y"]) == 0, capsys.readouterr().err


def test_the_json_protocol_names_a_limit_only_when_it_left_images_out(hr_dir, tmp_path):
    """``--limit 5`` on 2 images was recorded, and the model card said "the first 5 only"."""
    for limit, recorded in (("5", None), ("1", 1)):
        out = tmp_path / f"l{limit}.json"
        assert run_eval(["--hr", hr_dir, "--bicubic", "--metrics", "psnr_y", "--limit", limit, "--json", out]) == 0
        protocol = json.loads(out.read_text())["bicubic"]["protocol"]
        assert protocol["limit"] == recorded and protocol["images_available"] == 2
