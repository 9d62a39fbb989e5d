"""The process group of a command that ``accelerate launch`` started as several processes is destroyed when
the command ends, normally or by an error (a live gloo group can abort the interpreter's exit: SIGABRT)."""

from __future__ import annotations

import argparse

import pytest
import torch.distributed as dist

from difiisr_dwt.distributed import process_group_ended


@pytest.fixture
def one_process_group():
    """A one-process gloo group in this process, as ``accelerate launch`` would have started (always gone after)."""
    if not dist.is_available():
        pytest.skip("this torch build has no torch.distributed")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_normal_end_destroys_the_group(one_process_group):
    with process_group_ended():
        assert dist.is_initialized()
    assert not dist.is_initialized()


def test_an_error_destroys_the_group_and_is_not_swallowed(one_process_group):
    with pytest.raises(KeyError), process_group_ended():
        raise KeyError("x")
    assert not dist.is_initialized()


def test_without_a_group_nothing_happens():
    with process_group_ended():
        pass
    assert not (dist.is_available() and dist.is_initialized())


def test_a_training_run_that_fails_destroys_the_group(one_process_group, tmp_path):
    """Training's finished run ends through ``Accelerator.end_training``; a failing one must end it too."""
    from difiisr_dwt.training.loop import train
    from difiisr_dwt.training.stage import Stage

    class Failing(Stage):
        name = "failing"

        @staticmethod
        def final_folders() -> list[str]:
            raise RuntimeError("stage failed before training")

    with pytest.raises(RuntimeError, match="stage failed"):
        train(argparse.Namespace(output_dir=str(tmp_path / "run")), Failing)
    assert not dist.is_initialized()
    assert not (tmp_path / "run").exists()
