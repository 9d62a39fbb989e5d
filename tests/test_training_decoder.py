"""``train_accelerate.py --stage decoder``: the decoder is fine-tuned on the sampler's latents, judged on
exactly the output a user gets (after the fidelity step); nothing but the decoder moves; exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_training import _data_args, _resumed_run_matches


@pytest.fixture(scope="module")
def tiny_pipeline_folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Freshly initialised tiny VQ, DWT-encoder and UNet folders."""
    from difiisr_dwt.presets import build_dwt_encoder, build_unet, build_vqvae

    root = tmp_path_factory.mktemp("pipeline_parts")
    torch.manual_seed(0)
    encoder = build_dwt_encoder("tiny")
    build_vqvae("tiny").save_pretrained(root / "vq")
    encoder.save_pretrained(root / "enc")
    build_unet("tiny", encoder).save_pretrained(root / "unet")
    return root / "vq", root / "enc", root / "unet"


def _argv(shared: Path, parts: tuple[Path, Path, Path]) -> list[str]:
    vq, enc, unet = parts
    return ["--stage", "decoder", *_data_args(shared), "--vqvae_model_name_or_path", str(vq),
            "--dwt_encoder_model_name_or_path", str(enc), "--unet_model_name_or_path", str(unet)]


def test_decoder_stage_needs_the_unet(tmp_path):
    from difiisr_dwt.training.args import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--stage", "decoder", "--train_data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"),
                    "--vqvae_model_name_or_path", "vq", "--dwt_encoder_model_name_or_path", "enc"])


def test_decoder_loss_is_measured_on_the_pipelines_output(shared_dir, tmp_path, tiny_pipeline_folders):
    """The stage's L1 is the L1 of what ``pipe(lr)`` returns with the same generator (its default steps, prior
    noise and fidelity step), so the decoder is trained for the user's output, not for its raw decode."""
    from accelerate import Accelerator

    from difiisr_dwt.training.args import parse_args
    from difiisr_dwt.training.decoder import DecoderStage

    args = parse_args([*_argv(shared_dir, tiny_pipeline_folders), "--output_dir", str(tmp_path / "o")])
    stage = DecoderStage(args, Accelerator(cpu=True))
    hr_u8 = np.array(Image.open(shared_dir / "data" / "ir" / "tno" / "01.png").convert("L"))[100:164, 100:164]
    lr_u8 = np.array(Image.fromarray(hr_u8).resize((16, 16), Image.BICUBIC))
    hr = torch.from_numpy(hr_u8).float().div(127.5).sub(1)[None, None].expand(1, 3, -1, -1)
    lr = torch.from_numpy(lr_u8).float().div(127.5).sub(1)[None, None].expand(1, 3, -1, -1)
    losses = stage.training_step(stage.module, {"hr": hr, "lr": lr}, torch.Generator().manual_seed(3), 0)

    out = stage.pipeline(Image.fromarray(lr_u8), generator=torch.Generator().manual_seed(3), output_type="np")
    sr = torch.from_numpy(out.images[0][..., 0]).float() * 2 - 1  # grey in, grey out
    expected = (sr - hr[0, 0]).abs().mean()
    assert float(losses["l1"].detach()) == pytest.approx(float(expected), abs=2e-3)  # the pipeline clamps to [-1, 1]
    assert {"l1", "raw_l1", "lpips", "loss"} <= set(losses)
    losses["loss"].backward()
    grads = {n for n, p in stage.vqvae.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("decoder.", "post_quant_conv.")) for n in grads)
    assert not any(p.requires_grad for p in stage.unet.parameters())


@pytest.mark.slow
def test_decoder_stage_trains_only_the_decoder_and_resumes(shared_dir, tmp_path, tiny_pipeline_folders):
    """Stopped at step 2 and resumed = the uninterrupted run; encoder, codebook, adapter and UNet unchanged."""
    from diffusers import UNet2DModel, VQModel

    argv = [*_argv(shared_dir, tiny_pipeline_folders), "--checkpointing_steps", "2"]
    full, part, _ = _resumed_run_matches(argv, tmp_path, 3, ("loss", "l1", "raw_l1", "lpips"))

    vq, _, unet = tiny_pipeline_folders
    before, after = VQModel.from_pretrained(vq), VQModel.from_pretrained(full / "vqvae")
    old = dict(before.named_parameters())
    changed = {n for n, p in after.named_parameters() if not torch.equal(p, old[n])}
    assert changed and all(n.startswith(("decoder.", "post_quant_conv.")) for n in changed)
    saved_unet, start_unet = UNet2DModel.from_pretrained(full / "pipeline" / "unet"), UNet2DModel.from_pretrained(unet)
    assert all(torch.equal(p, q) for p, q in zip(saved_unet.parameters(), start_unet.parameters()))
    resumed = VQModel.from_pretrained(part / "vqvae")
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(after.parameters(), resumed.parameters()))


def test_diffusion_image_terms_after_fidelity_are_measured_on_the_fidelity_output(shared_dir, tmp_path,
                                                                                   tiny_pipeline_folders):
    """``--image_loss_after_fidelity``: the image terms see ``apply_lr_consistency(D(z0_hat), y)`` (the user's
    output), not the raw decode; the L1 term is that output's per-sample L1 to the HR luma, timestep-weighted."""
    from accelerate import Accelerator

    from difiisr_dwt.losses import timestep_weights
    from difiisr_dwt.training.args import parse_args
    from difiisr_dwt.training.diffusion import DiffusionStage

    vq, enc, unet = tiny_pipeline_folders
    args = parse_args(["--stage", "diffusion", *_data_args(shared_dir), "--vqvae_model_name_or_path", str(vq),
                       "--dwt_encoder_model_name_or_path", str(enc), "--unet_model_name_or_path", str(unet),
                       "--image_loss_after_fidelity", "--image_l1_weight", "0.5", "--lpips_weight", "0",
                       "--edge_weight", "0", "--output_dir", str(tmp_path / "o")])
    stage = DiffusionStage(args, Accelerator(cpu=True))
    seen = {}
    original = stage.pipeline.apply_lr_consistency

    def spy(sr, lr, input_noise_level=None):
        seen["out"] = original(sr, lr, input_noise_level)
        seen["lr"] = lr
        return seen["out"]

    stage.pipeline.apply_lr_consistency = spy
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 1, 64, 64, generator=g).mul(2).sub(1).expand(-1, 3, -1, -1)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    generator = torch.Generator().manual_seed(1)
    losses = stage.training_step(stage.module, {"hr": hr, "lr": lr}, generator, 0)
    assert seen["out"].shape == (2, 1, 64, 64) and torch.allclose(seen["lr"], lr[:, :1])
    timesteps = torch.randint(0, 15, (2,), generator=torch.Generator().manual_seed(1))  # the step's first draw
    per_sample = (seen["out"].detach() - hr[:, :1]).abs().flatten(1).mean(1)
    expected = (0.5 * timestep_weights(timesteps, 15) * per_sample).mean()
    assert float(losses["l1"].detach()) == pytest.approx(float(expected), rel=1e-4)
