"""The one metric and report path: metric metadata, ``image_metrics`` / ``evaluate`` settings, grids, and the
training validation that goes through them; the ``--lpips_backbone_dir`` flag and its deprecated alias."""

from __future__ import annotations

import argparse

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt import evaluation, model_card
from difiisr_dwt.cli import build_parser
from difiisr_dwt.evaluation import METRICS, MetricSettings, image_grid, image_metrics, save_grid
from difiisr_dwt.metrics import lpips_distance, psnr_y, ssim_y


def _noise(shape, seed) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_metric_metadata_is_defined_once():
    """The eval table and the model card read titles and formats from ``evaluation.METRICS``."""
    assert list(model_card.METRICS) == list(METRICS)
    for key, info in METRICS.items():
        assert model_card.METRICS[key] == (info.heading, info.fmt, info.higher_is_better)
    assert METRICS["psnr_y"].heading == "PSNR_Y (dB) ↑" and METRICS["lpips_vgg"].heading == "LPIPS-vgg ↓"
    results = {"bicubic": evaluation.method_summary({"a.png": {"psnr_y": 30.123, "ssim_y": 0.81234}})}
    table = evaluation.markdown_table(results)
    assert table.splitlines()[0] == "| image | method | PSNR_Y | SSIM_Y |"
    assert "| a.png | bicubic | 30.12 | 0.8123 |" in table


def test_image_metrics_settings_crop_the_border():
    sr, hr = _noise((40, 44, 3), 0), _noise((40, 44, 3), 1)
    settings = MetricSettings(metrics=("ssim_y", "psnr_y"), crop_border=4)
    assert image_metrics(sr, hr, settings) == {"ssim_y": ssim_y(sr, hr, 4), "psnr_y": psnr_y(sr, hr, 4)}
    assert list(image_metrics(sr, hr, MetricSettings(metrics=("psnr_y",)))) == ["psnr_y"]


def test_evaluate_takes_a_settings_object(tmp_path):
    hr = _noise((48, 64), 2)
    PIL.Image.fromarray(hr).save(tmp_path / "a.png")
    settings = MetricSettings(metrics=("psnr_y",), crop_border=4)
    results, grid_rows = evaluation.evaluate([tmp_path / "a.png"], ["bicubic"], settings=settings, grid_images=1)
    up = np.asarray(evaluation.bicubic_up(evaluation.bicubic_down(PIL.Image.fromarray(hr))).convert("RGB"))
    rgb = np.repeat(hr[:, :, None], 3, axis=2)
    assert results["bicubic"]["images"]["a.png"] == {"psnr_y": psnr_y(up, rgb, 4)}
    assert [name for name, _ in grid_rows] == ["a"] and set(grid_rows[0][1]) == {"bicubic", "HR"}
    with pytest.raises(TypeError):  # everything but the images and methods is a keyword
        evaluation.evaluate([tmp_path / "a.png"], ["bicubic"], None, None)


def test_image_grid_scales_every_image_to_the_first(tmp_path):
    hr, lr = _noise((8, 12, 3), 3), _noise((2, 3, 3), 4)
    grid = image_grid([[hr, lr], [hr, hr]])
    assert grid.size == (24, 16)
    array = np.asarray(grid)
    np.testing.assert_array_equal(array[:8, :12], hr)
    np.testing.assert_array_equal(array[:8, 12:], np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1))  # nearest
    save_grid(grid, tmp_path / "g.png", ["HR", "LR"])
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "g.png")), array)
    assert (tmp_path / "g.png.txt").read_text(encoding="utf-8") == "HR | LR\n"
    with pytest.raises(ValueError):
        image_grid([])


def test_validation_measures_through_the_eval_path(shared_dir, lpips_weights, tmp_path):
    from difiisr_dwt.training.validation import save_validation_grid, validation_metric_settings

    args = argparse.Namespace(lpips_backbone_dir=str(lpips_weights))
    sr, hr = _noise((32, 32, 3), 5), _noise((32, 32, 3), 6)
    scores = image_metrics(sr, hr, validation_metric_settings(args))
    assert scores == {"psnr_y": psnr_y(sr, hr), "ssim_y": ssim_y(sr, hr),
                      "lpips_alex": pytest.approx(lpips_distance(sr, hr, "alex", lpips_weights), abs=1e-6)}
    save_validation_grid([[hr, sr]], tmp_path, 12, ["HR", "SR"])
    assert PIL.Image.open(tmp_path / "validation" / "step-0000012.png").size == (64, 32)
    assert (tmp_path / "validation" / "step-0000012.png.txt").read_text() == "HR | SR\n"
    save_validation_grid([], tmp_path, 13, ["HR", "SR"])  # an empty validation set writes nothing
    assert not (tmp_path / "validation" / "step-0000013.png").exists()


def _eval_args(argv: list[str]) -> argparse.Namespace:
    return build_parser("eval").parse_args(["eval", "--hr", "HR", *argv])


@pytest.mark.parametrize("flag", ["--lpips_backbone_dir", "--lpips-backbone-dir"])
def test_lpips_backbone_dir_flag(flag, capsys):
    assert _eval_args([flag, "weights/"]).lpips_backbone_dir == "weights/"
    assert _eval_args([]).lpips_backbone_dir is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flag", ["--lpips_weights", "--lpips-weights"])
def test_old_lpips_weights_flag_still_works_and_warns(flag, capsys):
    assert _eval_args([flag, "weights/"]).lpips_backbone_dir == "weights/"
    err = capsys.readouterr().err
    assert err == f"warning: {flag} is deprecated and will be removed; use --lpips_backbone_dir\n"


def test_training_flag_and_its_deprecated_alias(capsys):
    from difiisr_dwt.training.args import parse_args

    base = ["--stage", "autoencoder", "--train_data_dir", "data", "--output_dir", "out"]
    assert parse_args([*base, "--lpips_backbone_dir", "w"]).lpips_backbone_dir == "w"
    assert capsys.readouterr().err == ""
    args = parse_args([*base, "--lpips_weights", "old"])
    assert args.lpips_backbone_dir == "old" and not hasattr(args, "lpips_weights")
    assert "--lpips_weights is deprecated" in capsys.readouterr().err
    assert parse_args([*base, "--lpips_weight", "0.5"]).lpips_weight == 0.5  # the loss weight is another flag


def test_file_lists_are_read_by_one_parser(tmp_path, capsys):
    """``eval --file-list`` and the training lists share :func:`difiisr_dwt.io.read_file_list`."""
    from difiisr_dwt.cli import main
    from difiisr_dwt.data import list_image_files

    for name in ("a.png", "b.png"):
        PIL.Image.fromarray(_noise((16, 16), 7)).save(tmp_path / name)
    listing = tmp_path / "list.txt"
    listing.write_text("# validation split\n\n  b.png  \n", encoding="utf-8")
    assert evaluation.list_hr(tmp_path, listing) == [tmp_path / "b.png"]
    assert list_image_files(tmp_path, listing) == [tmp_path / "b.png"]
    listing.write_text("# nothing\n\n", encoding="utf-8")
    assert main(["eval", "--hr", str(tmp_path), "--file-list", str(listing), "--bicubic", "--metrics", "psnr_y"]) == 2
    assert capsys.readouterr().err == f"error: {listing}: the file list is empty.\n"
    with pytest.raises(ValueError, match="the file list is empty"):
        list_image_files(tmp_path, listing)


def test_fidelity_metrics_measure_input_agreement_and_level_drift():
    from difiisr_dwt.evaluation import bicubic_down, bicubic_up, fidelity_metrics

    rng = np.random.default_rng(0)
    small = PIL.Image.fromarray(rng.integers(60, 200, (4, 5), dtype=np.uint8))  # smooth at LR too
    hr = np.asarray(small.resize((80, 64)).convert("RGB"))
    lr = np.asarray(bicubic_down(PIL.Image.fromarray(hr)))
    up = np.asarray(bicubic_up(PIL.Image.fromarray(lr)))
    faithful = fidelity_metrics(up, lr)
    assert faithful["mean_shift"] < 0.05 and faithful["lr_error"] < 1.0
    shifted = fidelity_metrics(np.clip(up.astype(int) + 5, 0, 255).astype(np.uint8), lr)
    assert abs(shifted["mean_shift"] - 5.0) < 0.1 and shifted["lr_error"] > 4.0
