"""``difiisr_dwt.benchmarks.gpu_check`` on the CPU (``--quick``): the script that checks the accelerator path
runs end to end and its checks report what they should where the answer is known on a CPU."""

from __future__ import annotations

import math

import pytest

from difiisr_dwt.benchmarks.gpu_check import check
from difiisr_dwt.presets import build_pipeline


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_check") / "pipeline"
    build_pipeline("test", seed=0).save_pretrained(path)
    return {r["check"]: r for r in check(str(path), "cpu", quick=True)}


def test_generator_checks(records):
    assert records["device_generator_repeats"]["identical"] is True
    assert records["device_generator_repeats"]["shape"] == [256, 256, 1]  # 64x64 L crop of the example, x4
    # On a CPU "device" the two runs are the same computation.
    assert records["cpu_generator_cpu_vs_device"]["psnr_db"] == math.inf


def test_half_precision_checks(records):
    for name in ("torch.float16_64x64", "torch.bfloat16_64x64"):
        assert records[name]["finite"] is True
        assert records[name]["psnr_vs_float32_db"] > 25, records[name]


def test_every_timing_is_reported(records):
    timed = [r for r in records.values() if "seconds" in r]
    # float32 at 1, 4 and 2 (--quick's full count) steps, the large input whole and tiled, and per half dtype
    # the small and the large input.
    assert len(timed) == 9
    assert all(r["seconds"] > 0 and r["peak_mib"] is None for r in timed)  # no device memory on a CPU
    assert "model_cpu_offload" not in records  # offload needs an accelerator
