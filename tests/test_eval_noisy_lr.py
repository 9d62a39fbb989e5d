"""``difiisr-dwt eval --noisy-lr / --save-lr / --back-projection``: the noisy LR protocol and the classical
back-projection baseline, measured against the clean HR on the same LR for every method."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.evaluation import SensorNoise, back_projection_baseline, bicubic_down, bicubic_up, fidelity_metrics
from difiisr_dwt.metrics import psnr_y


def run_eval(argv: list) -> int:
    return main(["eval", *map(str, argv)])


@pytest.fixture
def hr_dir(tmp_path):
    """Two smooth 8-bit grey HR images (66x50 is cropped to 64x48 by the protocol) and one RGB one."""
    folder = tmp_path / "hr"
    folder.mkdir()
    for name, shape in [("a.png", (50, 66)), ("b.png", (64, 48))]:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        image = 128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
        PIL.Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / name)
    return folder


def test_sensor_noise_has_the_documented_statistics():
    """Per-pixel sigma and per-column sigma as given, constant down a column, one stream per name."""
    noise = SensorNoise(sigma=2.0, column_sigma=1.5, seed=0)
    field = noise.field("frame.png", 400, 500)
    columns = field.mean(axis=0)
    assert np.std(field - columns[None, :]) == pytest.approx(2.0, rel=0.02)
    assert np.std(columns) == pytest.approx(1.5, rel=0.12)  # 500 column offsets
    np.testing.assert_array_equal(field, SensorNoise().field("frame.png", 400, 500))  # the defaults
    assert not np.allclose(field, noise.field("other.png", 400, 500))
    assert not np.allclose(field, SensorNoise(seed=1).field("frame.png", 400, 500))
    no_stripes = SensorNoise(column_sigma=0.0).field("frame.png", 400, 500)
    assert np.abs(no_stripes.mean(axis=0)).max() < 4 * 2.0 / np.sqrt(400)


def test_sensor_noise_clips_rounds_and_keeps_the_mode():
    grey = PIL.Image.fromarray(np.array([[0, 128, 255, 200]] * 6, np.uint8))
    noisy = SensorNoise(sigma=3.0)(grey, "x.png")
    assert noisy.mode == "L" and noisy.size == grey.size
    expected = np.clip(np.round(np.asarray(grey, np.float64) + SensorNoise(sigma=3.0).field("x.png", 6, 4)), 0, 255)
    np.testing.assert_array_equal(np.asarray(noisy), expected.astype(np.uint8))
    rgb = SensorNoise(sigma=3.0)(grey.convert("RGB"), "x.png")
    assert rgb.mode == "RGB"
    for channel in range(3):  # a grey image stored as RGB stays grey
        np.testing.assert_array_equal(np.asarray(rgb)[:, :, channel], np.asarray(noisy))
    with pytest.raises(ValueError, match="sigmas must be finite and >= 0"):
        SensorNoise(sigma=-1.0)


def test_back_projection_baseline_agrees_with_its_input():
    """10 rounds from bicubic: bicubic_down(SR) reproduces LR (bicubic alone does not), and it is 8-bit."""
    yy, xx = np.mgrid[:24, :32]
    lr = PIL.Image.fromarray((128 + 100 * np.sin(xx / 1.3) * np.cos(yy / 1.7)).astype(np.uint8))
    sr = back_projection_baseline(lr, 10)
    assert sr.mode == "L" and sr.size == (128, 96)
    rgb = lambda image: np.asarray(image.convert("RGB"))  # noqa: E731
    error = fidelity_metrics(rgb(sr), rgb(lr))["lr_error"]
    bicubic_error = fidelity_metrics(rgb(bicubic_up(lr)), rgb(lr))["lr_error"]
    assert error < 0.6 < bicubic_error
    start = np.asarray(back_projection_baseline(lr, 0), np.int16)  # 0 rounds: bicubic (float, then rounded)
    assert np.abs(start - np.asarray(bicubic_up(lr), np.int16)).max() <= 1


def test_noisy_lr_is_saved_and_every_method_is_measured_on_it_against_the_clean_hr(hr_dir, tmp_path):
    saved, out = tmp_path / "lr", tmp_path / "r.json"
    code = run_eval(["--hr", hr_dir, "--noisy-lr", "--bicubic", "--back-projection", "--save-lr", saved,
                     "--metrics", "psnr_y,lr_error", "--json", out])
    assert code == 0
    result = json.loads(out.read_text())
    assert list(result) == ["bicubic", "back_projection"]
    for name in ("a.png", "b.png"):
        hr = PIL.Image.open(hr_dir / name)
        hr = hr.crop((0, 0, hr.width - hr.width % 4, hr.height - hr.height % 4))
        expected_lr = SensorNoise(2.0, 1.5, 0)(bicubic_down(hr), name)
        lr = PIL.Image.open(saved / name)
        np.testing.assert_array_equal(np.asarray(lr), np.asarray(expected_lr))
        assert not np.array_equal(np.asarray(lr), np.asarray(bicubic_down(hr)))  # it is noisy
        clean_hr = np.asarray(hr.convert("RGB"))
        bicubic = np.asarray(bicubic_up(lr).convert("RGB"))
        assert result["bicubic"]["images"][name]["psnr_y"] == pytest.approx(psnr_y(bicubic, clean_hr), rel=1e-12)
        # back-projection reproduces the noisy LR it was given; bicubic does not
        assert result["back_projection"]["images"][name]["lr_error"] < 0.6
        assert result["bicubic"]["images"][name]["lr_error"] > 0.6

    # results made elsewhere from the saved LR are measured against the same noisy LR with --sr
    sr_dir = tmp_path / "sr"
    sr_dir.mkdir()
    for name in ("a.png", "b.png"):
        bicubic_up(PIL.Image.open(saved / name)).save(sr_dir / name)
    out_sr = tmp_path / "sr.json"
    assert run_eval(["--hr", hr_dir, "--noisy-lr", "--sr", sr_dir, "--metrics", "psnr_y,lr_error",
                     "--json", out_sr]) == 0
    assert json.loads(out_sr.read_text())["sr"]["mean"] == pytest.approx(result["bicubic"]["mean"], rel=1e-12)


def test_noise_options_change_the_lr(hr_dir, tmp_path):
    clean, strong = tmp_path / "clean", tmp_path / "strong"
    assert run_eval(["--hr", hr_dir, "--bicubic", "--metrics", "psnr_y", "--save-lr", clean]) == 0
    assert run_eval(["--hr", hr_dir, "--bicubic", "--metrics", "psnr_y", "--save-lr", strong, "--noisy-lr",
                     "--noise-sigma", 6, "--column-noise-sigma", 0, "--noise-seed", 3]) == 0
    hr = PIL.Image.open(hr_dir / "b.png")
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(clean / "b.png")), np.asarray(bicubic_down(hr)))
    expected = SensorNoise(6.0, 0.0, 3)(bicubic_down(hr), "b.png")
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(strong / "b.png")), np.asarray(expected))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bicubic", "--noise-sigma", "3"], "need --noisy-lr"),
        (["--bicubic", "--noisy-lr", "--lr", "{hr}"], "cannot go with --lr"),
        (["--bicubic", "--save-lr", "{tmp}/x", "--lr", "{hr}"], "cannot go with --lr"),
        (["--bicubic", "--noisy-lr", "--noise-sigma", "-1"], "sigmas must be finite and >= 0"),
    ],
)
def test_bad_noise_options(hr_dir, tmp_path, capsys, argv, message):
    argv = [a.replace("{hr}", str(hr_dir)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert run_eval(["--hr", hr_dir, "--metrics", "psnr_y", *argv]) == 2
    assert message in capsys.readouterr().err


def test_default_model_flag_runs_the_embedded_model_beside_the_baselines(hr_dir, tmp_path, capsys):
    """The README's noisy-LR example (``--back-projection`` without ``--model``) ran no model at all, and the
    embedded model could only be named by its installed path (``--model default`` went to the Hub)."""
    from difiisr_dwt import DEFAULT_MODEL
    from difiisr_dwt.cli import build_parser
    from difiisr_dwt.commands.evaluate import select_methods

    args = build_parser("eval").parse_args(["eval", "--hr", str(hr_dir), "--back-projection", "--default-model"])
    assert args.model == DEFAULT_MODEL and select_methods(args) == ["bicubic", "back_projection", "model"]
    with pytest.raises(SystemExit):  # one model at a time
        build_parser("eval").parse_args(["eval", "--hr", str(hr_dir), "--default-model", "--model", "x"])
    capsys.readouterr()
    out = tmp_path / "r.json"
    assert run_eval(["--hr", hr_dir, "--noisy-lr", "--back-projection", "--default-model", "--steps", "1",
                     "--device", "cpu", "--limit", "1", "--metrics", "psnr_y,lr_error", "--json", out]) == 0
    assert list(json.loads(out.read_text())) == ["bicubic", "back_projection", "model"]
