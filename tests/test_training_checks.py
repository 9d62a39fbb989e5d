"""Training refuses what it cannot resume or load, with one clear line: a damaged newest checkpoint
(skipped for the previous complete one), another stage's or preset's checkpoint, a wrong component folder.

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
