"""``difiisr-dwt bench --section gpu`` on the CPU (``--quick``): the checks of the accelerator path run end
to end and report what they should where the answer is known on a CPU."""

from __future__ import annotations

import json
import math

import pytest

from difiisr_dwt.cli import build_parser
from difiisr_dwt.presets import build_pipeline


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    build_pipeline("test", seed=0).save_pretrained(root / "pipeline")
    args = build_parser("bench").parse_args(["bench", "--quick", "--section", "gpu", "--model", str(root / "pipeline"),
                              "--device", "cpu", "--json", str(root / "gpu.json")])
    assert args.func(args) == 0
    section = json.loads((root / "gpu.json").read_text())["gpu"]
    assert section["model"] == str(root / "pipeline") and section["device"] == "cpu" and section["quick"] is True
    return {r["check"]: r for r in section["checks"]}


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


def test_an_installed_package_without_example_frames_still_has_a_frame(monkeypatch, tmp_path):
    """After a wheel install the checkout's examples/images is absent: the checks run on a synthetic 160x128
    frame instead of failing with a missing file."""
    import numpy as np

    from difiisr_dwt.benchmarks import gpu_check

    monkeypatch.setattr(gpu_check, "EXAMPLE", tmp_path / "absent.png")
    frame = gpu_check.example_frame()
    assert frame.mode == "L" and frame.size == (160, 128) and np.asarray(frame).std() > 10
    assert np.array_equal(np.asarray(frame), np.asarray(gpu_check.example_frame()))  # seeded
