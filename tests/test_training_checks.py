"""Training refuses what it cannot resume or load, with one clear line: a damaged newest checkpoint
(skipped for the previous complete one), another stage's or preset's checkpoint, a wrong component folder,
an ``--output_dir`` holding another run, a missing validation set or model folder, a numeric flag out of range.

Fast: ``test``-preset components and checkpoints written by accelerate itself on the CPU; no data."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from difiisr_dwt.training.checkpointing import (
    CheckpointError,
    register_hooks,
    resolve_checkpoint,
    run_identity,
    save_checkpoint,
)

ADAPTER = run_identity("adapter", "test")
RESUME = ("--resume_from_checkpoint", "latest")


@pytest.fixture(scope="module")
def components(tmp_path_factory) -> Path:
    """``test``-preset ``vqvae/`` and ``dwt_encoder/`` folders, as the first two stages leave them."""
    from difiisr_dwt.presets import build_dwt_encoder, build_vqvae

    root = tmp_path_factory.mktemp("components")
    torch.manual_seed(0)
    build_vqvae("test").save_pretrained(root / "vqvae")
    build_dwt_encoder("test").save_pretrained(root / "dwt_encoder")
    return root


def _write_checkpoints(output_dir: Path, steps: tuple[int, ...], identity: dict, component_name: str = "dwt_encoder"):
    """Real accelerate checkpoints (optimizer.bin, RNG states, the component folder) of a small model."""
    from difiisr_dwt.presets import build_dwt_encoder

    accelerator = Accelerator(cpu=True)
    component = build_dwt_encoder("test")
    optimizer = torch.optim.AdamW(component.adapter.parameters(), lr=1e-3)
    module, optimizer = accelerator.prepare(component.adapter, optimizer)
    register_hooks(accelerator, component, component_name, None, lambda: list(module.parameters()))
    for step in steps:
        module(torch.randn(1, component.config.latent_channels, 4, 4)).sum().backward()
        optimizer.step()
        save_checkpoint(accelerator, output_dir, step, {"stage": {}, **identity})
    return accelerator


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


DAMAGES = {
    "weights": "dwt_encoder/diffusion_pytorch_model.safetensors",
    "optimizer": "optimizer.bin",
    "state": "training_state.json",
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_newest_checkpoint_falls_back(damage, tmp_path, caplog):
    accelerator = _write_checkpoints(tmp_path, (2, 4), ADAPTER)
    damaged = tmp_path / "checkpoint-4" / DAMAGES[damage]
    _truncate(damaged)
    with caplog.at_level(logging.WARNING, logger="difiisr_dwt.training.checkpointing"):
        chosen = resolve_checkpoint(tmp_path, "latest", ADAPTER)
    assert chosen == tmp_path / "checkpoint-2"
    assert str(damaged) in caplog.text and "Skipping the damaged checkpoint checkpoint-4" in caplog.text
    accelerator.load_state(str(chosen))  # the fallback really loads

    with pytest.raises(CheckpointError, match="checkpoint-4.*damaged; the newest complete one is .*checkpoint-2"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-4"), ADAPTER)
    _truncate(tmp_path / "checkpoint-2" / DAMAGES[damage])
    with pytest.raises(CheckpointError, match="every checkpoint in .* is damaged"):
        resolve_checkpoint(tmp_path, "latest", ADAPTER)


def _train(main, argv: list[str], capsys) -> tuple[int, list[str], str]:
    threads, handlers = torch.get_num_threads(), list(logging.getLogger().handlers)
    try:
        code = main([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)
        for handler in set(logging.getLogger().handlers) - set(handlers):  # the loop's basicConfig
            logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def _adapter_argv(components: Path, output_dir: Path, *extra) -> list:
    return ["--stage", "adapter", "--preset", "test", "--vqvae_model_name_or_path", components / "vqvae",
            "--train_data_dir", output_dir / "no-data-needed", "--output_dir", output_dir, "--max_train_steps", "2",
            *extra]


def test_resuming_another_stages_checkpoint_is_refused(components, tmp_path, capsys, train_main):
    _write_checkpoints(tmp_path, (2,), run_identity("autoencoder", "test"), component_name="vqvae")
    code, lines, err = _train(train_main, _adapter_argv(components, tmp_path, *RESUME), capsys)
    assert code == 2 and len(lines) == 1, err
    assert "the autoencoder stage with --preset test" in lines[0] and "the adapter stage with --preset test" in lines[0]
    assert "huggingface.co" not in err

    os.rename(tmp_path / "checkpoint-2", tmp_path / "checkpoint-3")  # another preset, same stage
    _write_checkpoints(tmp_path, (4,), run_identity("adapter", "tiny"))
    code, lines, err = _train(train_main, _adapter_argv(components, tmp_path, *RESUME), capsys)
    assert code == 2 and len(lines) == 1 and "--preset tiny" in lines[0] and "--preset test" in lines[0], err


def test_checkpoint_without_identity_of_another_stage_is_refused(components, tmp_path, capsys, train_main):
    """Checkpoints saved before stage and preset were recorded: the missing component folder says it."""
    _write_checkpoints(tmp_path, (2,), {}, component_name="vqvae")
    code, lines, err = _train(train_main, _adapter_argv(components, tmp_path, *RESUME), capsys)
    assert code == 2 and len(lines) == 1 and "has no dwt_encoder/ folder" in lines[0], err
    assert "huggingface.co" not in err


def test_wrong_component_folder_names_both_classes(components, tmp_path, capsys, train_main):
    argv = _adapter_argv(components, tmp_path)
    argv[argv.index(components / "vqvae")] = components / "dwt_encoder"
    code, lines, err = _train(train_main, argv, capsys)
    assert code == 2 and len(lines) == 1, err
    assert "holds a DWTEncoder" in lines[0] and "needs a VQModel folder" in lines[0]

    from difiisr_dwt.errors import UsageError
    from difiisr_dwt.training.stage import load_vqvae

    args = argparse.Namespace(vqvae_model_name_or_path=str(components), vqvae_subfolder=None, revision=None,
                              cache_dir=None)
    with pytest.raises(UsageError, match=r"has no config.json.*VQModel is in .*vqvae \(pass that folder, or "
                                         r"--vqvae_subfolder vqvae\)"):
        load_vqvae(args)
    args.vqvae_subfolder = "vqvae"
    assert type(load_vqvae(args)).__name__ == "VQModel"


def test_a_run_that_fails_before_its_first_file_leaves_no_folder(components, tmp_path, capsys, train_main):
    """The model check comes after accelerate starts and the output folder is made: a new ``runs/new`` that
    the failed run left empty stayed behind (as does any folder the run did not make)."""
    argv = _adapter_argv(components, tmp_path / "runs" / "new")
    argv[argv.index(components / "vqvae")] = components / "dwt_encoder"
    code, lines, err = _train(train_main, argv, capsys)
    assert code == 2 and "needs a VQModel folder" in lines[0], err
    assert list(tmp_path.iterdir()) == []  # neither runs/new nor runs
    (tmp_path / "kept").mkdir()
    argv[argv.index(tmp_path / "runs" / "new")] = tmp_path / "kept"
    assert _train(train_main, argv, capsys)[0] == 2 and (tmp_path / "kept").is_dir()  # not made by the run: stays


class _RunsCode:
    """Unpickling this calls ``os.mkdir(marker)``: what a hostile pickle would do with a shell command."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_hostile_optimizer_pickle_is_refused_in_one_line(components, tmp_path, capsys, train_main):
    _write_checkpoints(tmp_path, (2,), ADAPTER)
    marker = tmp_path / "pwned"
    torch.save({"state": _RunsCode(marker)}, tmp_path / "checkpoint-2" / "optimizer.bin")
    code, lines, err = _train(train_main, _adapter_argv(components, tmp_path, *RESUME), capsys)
    assert not marker.exists()  # refused by weights_only=True, never run
    assert code == 2 and len(lines) == 1, err
    assert "checkpoint-2" in lines[0] and "weights_only=True" in lines[0] and "Traceback" not in err


def test_missing_local_component_folder_is_named_as_missing(components, tmp_path, capsys, train_main):
    for missing in (tmp_path / "no" / "vqvae", "./no_such_dir/vqvae", "out/ae/vqvae"):
        argv = _adapter_argv(components, tmp_path)
        argv[argv.index(components / "vqvae")] = missing
        code, lines, err = _train(train_main, argv, capsys)
        assert code == 2 and len(lines) == 1, err
        assert f"--vqvae_model_name_or_path {missing}: no such folder" in lines[0], err
        assert "huggingface.co" not in err


@pytest.mark.parametrize("flags", [("--keep_latent_space",), ("--vqvae_mid_block_attention", "drop")])
def test_latent_space_flags_need_a_pretrained_autoencoder(flags, tmp_path, capsys):
    from difiisr_dwt.training.args import parse_args

    argv = ["--stage", "autoencoder", "--preset", "test", "--train_data_dir", str(tmp_path), "--output_dir",
            str(tmp_path / "out"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "need --stage autoencoder and a pretrained --vqvae_model_name_or_path" in capsys.readouterr().err


def _images(folder: Path, count: int = 2) -> Path:
    """``count`` random 64x64 grey PNGs: the smallest training set of the ``test`` preset."""
    import numpy as np
    import PIL.Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"ir{i}.png")
    return folder


def test_output_dir_holding_another_run_is_refused_untouched(components, tmp_path, capsys, train_main):
    """A new adapter run into an autoencoder run's folder would replace its checkpoints, curves and summary."""
    _write_checkpoints(tmp_path, (1, 2, 3), run_identity("autoencoder", "test"), component_name="vqvae")
    (tmp_path / "curves.csv").write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for extra in ((), RESUME):
        code, lines, err = _train(train_main, _adapter_argv(components, tmp_path, *extra), capsys)
        assert code == 2 and len(lines) == 1, err
        assert f"--output_dir {tmp_path} holds another run's checkpoints" in lines[0]
        assert "checkpoint-1, checkpoint-2, checkpoint-3 saved by the autoencoder stage with --preset test" in lines[0]
        assert "this run is the adapter stage with --preset test" in lines[0]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_fresh_run_into_a_folder_with_its_own_checkpoints_must_resume(components, tmp_path, capsys, train_main):
    """Same stage and preset, no --resume_from_checkpoint: refused, so the earlier curves and checkpoints stay."""
    _write_checkpoints(tmp_path, (2,), ADAPTER)
    (tmp_path / "curves.csv").write_text("step,loss\n1,0.5\n2,0.4\n")
    code, lines, err = _train(train_main, _adapter_argv(components, tmp_path), capsys)
    assert code == 2 and len(lines) == 1, err
    assert "holds checkpoints of an earlier run of the adapter stage" in lines[0]
    assert "pass --resume_from_checkpoint latest" in lines[0]
    assert (tmp_path / "curves.csv").read_text() == "step,loss\n1,0.5\n2,0.4\n"


def test_fresh_run_into_a_finished_run_without_checkpoints_is_refused(components, tmp_path, capsys, train_main):
    """A finished run whose checkpoints were removed still holds its curves and summary: a new run would
    replace them (another stage's included: nothing left tells which)."""
    (tmp_path / "curves.csv").write_text("step,l1\n1,0.5\n")
    (tmp_path / "run_summary.json").write_text("{}")
    code, lines, err = _train(train_main, _adapter_argv(components, tmp_path), capsys)
    assert code == 2 and len(lines) == 1, err
    assert "holds an earlier run's curves.csv and run_summary.json" in lines[0]
    assert (tmp_path / "curves.csv").read_text() == "step,l1\n1,0.5\n"


def test_missing_validation_set_stops_before_training(components, tmp_path, capsys, train_main):
    data = _images(tmp_path / "data")
    (tmp_path / "val").mkdir()
    for extra, named in [(("--validation_data_dir", tmp_path / "nope"), "nope: no such folder"),
                         (("--validation_data_dir", data, "--validation_file_list", tmp_path / "nope.txt"),
                          f"{tmp_path / 'nope.txt'}: not a readable file list"),
                         (("--validation_data_dir", tmp_path / "val"), "--validation_data_dir"),
                         ]:
        out = tmp_path / "out"
        argv = _adapter_argv(components, out, "--max_train_steps", "1", *extra)
        argv[argv.index(out / "no-data-needed")] = data
        code, lines, err = _train(train_main, argv, capsys)
        assert code == 2 and len(lines) == 1 and named in lines[0], err
        assert not out.exists() or not list(out.glob("checkpoint-*")), "trained before checking"


def test_training_images_that_are_validation_images_are_refused(components, tmp_path, capsys, train_main):
    """A line of the validation list (e.g. ``mixed_val.txt``) in the train list trained and saved silently."""
    data = _images(tmp_path / "data", count=3)
    (tmp_path / "train.txt").write_text("ir0.png\nir1.png\n")
    (tmp_path / "val.txt").write_text("ir1.png\nir2.png\n")
    out = tmp_path / "out"
    argv = _adapter_argv(components, out, "--max_train_steps", "1", "--train_file_list", tmp_path / "train.txt",
                         "--validation_data_dir", data, "--validation_file_list", tmp_path / "val.txt")
    argv[argv.index(out / "no-data-needed")] = data
    code, lines, err = _train(train_main, argv, capsys)
    assert code == 2 and len(lines) == 1, err
    assert "1 training image(s) are also validation images" in lines[0] and "ir1.png" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--train_batch_size", "0", "at least 1"), ("--max_train_steps", "0", "at least 1"),
    ("--checkpointing_steps", "0", "at least 1"), ("--gradient_accumulation_steps", "-1", "at least 1"),
    ("--learning_rate", "0", "above 0"), ("--learning_rate", "nan", "above 0"), ("--resolution", "0", "at least 16"),
    ("--resolution", "40", "multiple of 16"), ("--lr_warmup_steps", "-1", "at least 0"),
    ("--adam_beta2", "1", "in [0, 1)"), ("--ema_decay", "1.5", "in [0, 1]"), ("--edge_weight", "inf", "at least 0"),
    ("--image_loss_batch_fraction", "0", "in (0, 1]"), ("--validation_crop", "8", "at least 16"),
])
def test_numeric_flags_out_of_range_are_usage_errors(flag, value, message, tmp_path, capsys, train_main):
    argv = ["--stage", "autoencoder", "--preset", "test", "--train_data_dir", tmp_path, "--output_dir",
            tmp_path / "out", flag, value]
    with pytest.raises(SystemExit) as exit_info:
        train_main([str(a) for a in argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and f"{flag} must be" in lines[0], lines
    assert message in lines[0] and value in lines[0]


def test_validation_file_list_needs_its_folder(tmp_path, capsys):
    from difiisr_dwt.training.args import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--stage", "autoencoder", "--train_data_dir", str(tmp_path), "--output_dir", str(tmp_path),
                    "--validation_file_list", "val.txt"])
    assert "give that folder too" in capsys.readouterr().err


def test_missing_resume_path_names_what_was_given_and_looked_for(tmp_path, monkeypatch):
    _write_checkpoints(tmp_path / "runs" / "a", (2,), ADAPTER)
    monkeypatch.chdir(tmp_path)
    output_dir = Path("runs") / "bad10"
    message = (r"--resume_from_checkpoint runs/nope: no such checkpoint folder \(looked for runs/nope and "
               r"runs/bad10/runs/nope\)")
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint(output_dir, "runs/nope", ADAPTER)
    with pytest.raises(CheckpointError, match=r"--resume_from_checkpoint /nope/x: no such checkpoint folder "
                                              r"\(looked for /nope/x\)$"):
        resolve_checkpoint(output_dir, "/nope/x", ADAPTER)
    assert resolve_checkpoint(output_dir, "runs/a/checkpoint-2", ADAPTER) == Path("runs/a/checkpoint-2")
    (tmp_path / "runs" / "a" / "checkpoint-2" / "training_state.json").unlink()
    with pytest.raises(CheckpointError, match="runs/a/checkpoint-2 is not a complete checkpoint"):
        resolve_checkpoint(output_dir, "runs/a/checkpoint-2", ADAPTER)


def test_resuming_at_max_train_steps_warns_that_nothing_trains(components, tmp_path, capsys, caplog, train_main):
    data = _images(tmp_path / "data")
    argv = _adapter_argv(components, tmp_path / "out", "--max_train_steps", "1", "--train_batch_size", "1")
    argv[argv.index(tmp_path / "out" / "no-data-needed")] = data
    with caplog.at_level(logging.WARNING, logger="difiisr_dwt.training.loop"):
        code, _, err = _train(train_main, argv, capsys)
        assert code == 0 and "no training step will run" not in caplog.text, err
        code, _, err = _train(train_main, [*argv, *RESUME], capsys)
    assert code == 0, err
    assert "checkpoint-1 is at step 1 and --max_train_steps is 1: no training step will run" in caplog.text


def test_missing_relative_model_folder_never_asks_the_hub(components, tmp_path, monkeypatch, capsys, train_main):
    """``runs/nope`` has a Hub id's form, but ``runs`` is a folder here: it is a missing path, for every
    ``*_model_name_or_path`` (one check, in ``load_component``), while ``owner/name`` stays a Hub id."""
    from diffusers import UNet2DModel

    from difiisr_dwt.errors import UsageError
    from difiisr_dwt.loading import could_be_repo_id
    from difiisr_dwt.training.stage import load_component

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = _adapter_argv(components, tmp_path / "out")
    argv[argv.index(components / "vqvae")] = "runs/nope"
    code, lines, err = _train(train_main, argv, capsys)
    assert code == 2 and len(lines) == 1, err
    assert "--vqvae_model_name_or_path runs/nope: no such folder" in lines[0] and "huggingface.co" not in err
    args = argparse.Namespace(revision=None, cache_dir=None)
    for flag in ("--dwt_encoder_model_name_or_path", "--unet_model_name_or_path"):
        with pytest.raises(UsageError, match=f"{flag} runs/nope: no such folder"):
            load_component(UNet2DModel, "runs/nope", None, flag, args)
    assert could_be_repo_id("someone/model") and not could_be_repo_id("runs/model")


def test_missing_train_extra_packages_are_named_before_training(components, tmp_path, capsys, monkeypatch,
                                                                train_main):
    """An install without the ``train`` extra stopped with ModuleNotFoundError at the first checkpoint's
    ``curves.png`` (matplotlib), or at the first JPEG step of a degradation (kornia): hours in."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("matplotlib", "kornia") else find_spec(name, *a))
    data = _images(tmp_path / "data")
    out = tmp_path / "out"
    for extra, named in [((), "training needs matplotlib, not installed"),
                         (("--degradation", "realesrgan"), "training needs matplotlib, kornia, not installed")]:
        argv = _adapter_argv(components, out, "--max_train_steps", "1", *extra)
        argv[argv.index(out / "no-data-needed")] = data
        code, lines, err = _train(train_main, argv, capsys)
        assert code == 2 and len(lines) == 1 and named in lines[0] and "difiisr-dwt[train]" in lines[0], err
        assert not out.exists()
