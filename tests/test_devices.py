"""``--device``: a device this machine lacks, or a name that is no device, is one ``error:`` line that names
it and the available devices, before any data or model is loaded (upscale, eval, bench, the demo, the API)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from difiisr_dwt.cli import main
from difiisr_dwt.errors import UsageError
from difiisr_dwt.loading import available_devices, load_pipeline, resolve_device

# "cuda:99": no machine has it (a CPU box has no CUDA at all); "foo" names no device type
MISSING = ["foo", "cuda:99"]


def _error_lines(argv, capsys) -> tuple[int, list[str], str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def _assert_device_error(result, device: str) -> None:
    code, lines, err = result
    assert code == 2, err
    assert len(lines) == 1 and device in lines[0] and "available here: cpu" in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    PIL.Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize("device", MISSING)
def test_cli_commands_refuse_a_missing_device_before_loading(device, image_dir, tmp_path, capsys, monkeypatch):
    # a model that does not exist: reaching the model loader would give a different error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing_model = tmp_path / "no_model"
    _assert_device_error(_error_lines(["upscale", image_dir, "-o", tmp_path / "out", "--model", missing_model,
                                       "--device", device], capsys), device)
    assert not (tmp_path / "out").exists()  # refused before the output folder was even made
    _assert_device_error(_error_lines(["eval", "--hr", image_dir, "--model", missing_model, "--device", device],
                                      capsys), device)
    _assert_device_error(_error_lines(["bench", "--quick", "--section", "gpu", "--model", missing_model,
                                       "--device", device], capsys), device)


@pytest.mark.parametrize("device", MISSING)
def test_api_refuses_a_missing_device_before_loading(device, tmp_path):
    with pytest.raises(UsageError, match="available here: cpu"):
        resolve_device(device)
    with pytest.raises(UsageError, match=device):  # the device, not the missing model, is reported
        load_pipeline(tmp_path / "no_model", device=device)


def test_available_devices_are_accepted():
    assert available_devices()[0] == "cpu"
    for device in available_devices():
        assert resolve_device(device).type == device.split(":")[0]
    assert str(resolve_device("auto")) in {"cpu"} | {d.split(":")[0] for d in available_devices()}



def test_cpu_pipeline_decodes_channels_last_with_the_contiguous_output(saved_test_model):
    """On CPU the loaded pipeline decodes from channels-last latents (oneDNN's own layout; the weights stay as
    loaded); the output is the contiguous layout's to float rounding, and ``decode_channels_last = False`` turns it
    off."""
    import torch

    pipe = load_pipeline(str(saved_test_model), device="cpu")
    assert pipe.decode_channels_last
    assert not pipe.vqvae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    decode, layouts = pipe.vqvae.decode, []

    def spy(z, **kwargs):
        layouts.append("channels_last" if not z.is_contiguous() else "contiguous")
        return decode(z, **kwargs)

    pipe.vqvae.decode = spy
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32), dtype=np.uint8))
    outputs = []
    for channels_last in (True, False):
        pipe.decode_channels_last = channels_last
        outputs.append(pipe(image, generator=torch.Generator().manual_seed(0), output_type="np").images[0])
    assert layouts == ["channels_last", "contiguous"]
    assert outputs[0].shape == (96, 128, 1) and np.abs(outputs[0] - outputs[1]).max() * 255 < 0.05


def test_float16_on_the_cpu_runs_with_an_honest_warning(saved_test_model, caplog):
    """diffusers warns that a float16 pipeline on the CPU "will fail"; it runs, so the loader says what is true
    (slow) instead, and the model gives a finite image."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            pipe = load_pipeline(str(saved_test_model), device="cpu", dtype="float16")
    finally:
        diffusers_logging.disable_propagation()
    assert "many times slower" in caplog.text and "fail" not in caplog.text
    assert pipe.unet.dtype == torch.float16
    pipe.set_progress_bar_config(disable=True)
    out = pipe(np.full((8, 8), 100, np.uint8), num_inference_steps=1, output_type="np").images
    assert out.shape == (1, 32, 32, 1) and np.isfinite(out).all()
