"""Window attention for the UNet and the VQ decoder (difiisr_dwt.pipelines.attention): what it computes and how the
pipeline sets it."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from difiisr_dwt.pipelines.attention import (
    WindowAttnProcessor,
    set_decoder_attention_window,
    set_unet_attention_window,
)


def _layer(group_norm: bool) -> Attention:
    """A spatial self-attention layer as UNet2DModel builds it (residual, 4 heads of 8 channels)."""
    torch.manual_seed(0)
    layer = Attention(32, heads=4, dim_head=8, norm_num_groups=8 if group_norm else None, residual_connection=True,
                      bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)
    return layer.eval()


@pytest.mark.parametrize("height, width", [(16, 24), (13, 21)])
def test_each_window_is_global_attention_over_that_window(height, width):
    """Without a GroupNorm, every window's output is global attention over that window's tokens alone,
    including the partial windows of a map that is not a multiple of the window (padded tokens are no keys)."""
    layer = _layer(group_norm=False)
    x = torch.randn(2, 32, height, width)
    with torch.no_grad():
        layer.set_processor(WindowAttnProcessor(8))
        windowed = layer(x)
        layer.set_processor(AttnProcessor2_0())
        for top in range(0, height, 8):
            for left in range(0, width, 8):
                crop = x[..., top : top + 8, left : left + 8].contiguous()
                torch.testing.assert_close(windowed[..., top : top + 8, left : left + 8], layer(crop),
                                           atol=1e-5, rtol=1e-5)
        assert (windowed - layer(x)).abs().max() > 1e-3  # and it is not global attention over the whole map


def test_a_map_within_one_window_gets_global_attention():
    layer = _layer(group_norm=True)
    x = torch.randn(1, 32, 8, 6)
    with torch.no_grad():
        reference = layer(x)
        layer.set_processor(WindowAttnProcessor(8))
        torch.testing.assert_close(layer(x), reference)


def test_group_norm_sees_the_whole_map():
    """The GroupNorm before the attention normalises by the whole map's statistics, not each window's: a
    brighter half does not change the other half's normalisation beyond what global statistics do."""
    layer = _layer(group_norm=True)
    x = torch.randn(1, 32, 16, 16)
    x[..., 8:] += 3.0
    with torch.no_grad():
        layer.set_processor(WindowAttnProcessor(8))
        windowed = layer(x)
        normed = layer.group_norm(x)
        layer.group_norm = torch.nn.Identity()
        layer.set_processor(AttnProcessor2_0())
        tokens = normed[..., :8, :8].contiguous()
        expected = layer(tokens) - tokens + x[..., :8, :8]  # global attention of the window's normed tokens
    torch.testing.assert_close(windowed[..., :8, :8], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_bad_window_sizes_are_refused(bad, tiny_pipeline):
    with pytest.raises(ValueError, match="window_size"):
        WindowAttnProcessor(bad)
    for size in (bad, 3):  # the pipeline's window is in LR pixels: a multiple of the UNet's deepest stride (2 here)
        with pytest.raises(ValueError, match="window_size"):
            tiny_pipeline.enable_unet_window_attention(size)
    assert tiny_pipeline.unet_attention_window is None


def test_pipeline_sets_every_unet_attention_layer_and_saves_its_default(tiny_pipeline, tmp_path):
    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline

    layers = [m for m in tiny_pipeline.unet.modules() if isinstance(m, Attention)]
    assert layers and tiny_pipeline.config.unet_attention_window is None
    tiny_pipeline.enable_unet_window_attention(8)  # LR pixels; the test preset's attention (mid-block) is at 1/2
    assert all(isinstance(m.processor, WindowAttnProcessor) and m.processor.window_size == 4 for m in layers)
    tiny_pipeline.disable_unet_window_attention()
    assert all(isinstance(m.processor, AttnProcessor2_0) for m in layers)
    assert set_unet_attention_window(tiny_pipeline.unet, 2) == len(layers)

    tiny_pipeline.register_to_config(unet_attention_window=8)
    tiny_pipeline.save_pretrained(tmp_path)
    loaded = DifIISRDWTPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.unet_attention_window == 8
    assert all(m.processor.window_size == 4 for m in loaded.unet.modules() if isinstance(m, Attention))


def test_each_level_gets_the_window_of_its_stride():
    """The ``tiny`` preset's layout (attention in the last down block, the mid-block and the first up block, all
    at 1/4) and a ``full``-like one (attention at 1/2, 1/4, 1/8): a window of 32 input pixels is 32 / stride
    tokens in every layer."""
    from diffusers import UNet2DModel

    unet = UNet2DModel(in_channels=4, out_channels=4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                       norm_num_groups=4, attention_head_dim=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    assert set_unet_attention_window(unet, 32) == 3 + 1 + 3 * 2
    tokens = {name: m.processor.window_size for name, m in unet.named_modules() if isinstance(m, Attention)}
    assert [tokens[f"down_blocks.{i}.attentions.0"] for i in (1, 2, 3)] == [16, 8, 4]
    assert tokens["mid_block.attentions.0"] == 4
    assert [tokens[f"up_blocks.{i}.attentions.0"] for i in (0, 1, 2)] == [4, 8, 16]
    with pytest.raises(ValueError, match="multiple of 8"):
        set_unet_attention_window(unet, 12)


def test_windowed_pipeline_runs_any_size_and_matches_global_where_one_window_covers_the_map(tiny_pipeline):
    """A 20x28 LR image: the test preset's one attention map (its mid-block, at 1/2) is 10x14, so a window of 32 LR
    pixels (16 tokens) covers it (the global output) and one of 8 (4 tokens, the map padded to 12x16) gives a
    different, finite output of the right size."""
    image = torch.rand(1, 1, 20, 28)
    run = lambda: tiny_pipeline(image, num_inference_steps=2, generator=torch.Generator().manual_seed(0),  # noqa: E731
                                output_type="pt").images
    reference = run()
    tiny_pipeline.enable_unet_window_attention(32)
    torch.testing.assert_close(run(), reference, atol=1e-6, rtol=0)
    tiny_pipeline.enable_unet_window_attention(8)
    windowed = run()
    assert windowed.shape == reference.shape == (1, 1, 80, 112) and torch.isfinite(windowed).all()
    assert (windowed - reference).abs().max() > 1e-5


def test_cli_attention_window_option(tiny_pipeline, saved_test_model, tmp_path, capsys):
    """``--attention-window N|global`` (upscale, eval) sets the pipeline's window; bad values are refused by name."""
    import argparse

    import numpy as np
    import PIL.Image

    from difiisr_dwt.cli import main
    from difiisr_dwt.options import add_sampling_arguments, apply_sampling_arguments

    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    apply_sampling_arguments(tiny_pipeline, parser.parse_args(["--attention-window", "4"]))
    assert tiny_pipeline.unet_attention_window == 4 and tiny_pipeline.decoder_attention_window is None
    apply_sampling_arguments(tiny_pipeline, parser.parse_args(["--decoder-attention-window", "6"]))
    assert tiny_pipeline.decoder_attention_window == 6 and tiny_pipeline.unet_attention_window == 4
    with pytest.raises(ValueError, match="multiple of 2"):  # the pipeline's check, by name
        apply_sampling_arguments(tiny_pipeline, parser.parse_args(["--attention-window", "3"]))
    apply_sampling_arguments(tiny_pipeline, parser.parse_args(["--attention-window", "global",
                                                               "--decoder-attention-window", "global"]))
    assert tiny_pipeline.unet_attention_window is None and tiny_pipeline.decoder_attention_window is None
    assert all(isinstance(m.processor, AttnProcessor2_0) for model in (tiny_pipeline.unet, tiny_pipeline.vqvae)
               for m in model.modules() if isinstance(m, Attention))
    for flag in ("--attention-window", "--decoder-attention-window"):
        for bad in ("0", "-2", "wide"):
            with pytest.raises(SystemExit):
                parser.parse_args([flag, bad])
            assert flag in capsys.readouterr().err

    PIL.Image.fromarray((np.random.RandomState(0).rand(20, 28) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(saved_test_model),
                 "--steps", "1", "--device", "cpu", "--attention-window", "2", "--decoder-attention-window", "4"]) == 0
    assert PIL.Image.open(tmp_path / "out" / "a_x4.png").size == (112, 80)


def test_integer_types_are_taken_and_a_bad_config_value_is_named(tiny_pipeline, tmp_path):
    import numpy as np

    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline

    tiny_pipeline.enable_unet_window_attention(np.int64(8))
    assert tiny_pipeline.unet_attention_window == 8 and type(tiny_pipeline.unet_attention_window) is int
    components = {name: getattr(tiny_pipeline, name) for name in ("dwt_encoder", "unet", "vqvae", "scheduler")}
    with pytest.raises(ValueError, match="unet_attention_window .*multiple of 2"):
        DifIISRDWTPipeline(**components, unet_attention_window=3)


def test_a_newer_config_key_is_ignored_with_a_warning(saved_test_model, tmp_path):
    """A release written by a newer version (a config key this code does not know) still loads."""
    import json
    import shutil

    from difiisr_dwt.loading import load_pipeline

    folder = tmp_path / "newer"
    shutil.copytree(saved_test_model, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "a_future_setting": 1}))
    with pytest.warns(UserWarning, match="a_future_setting"):
        pipe = load_pipeline(str(folder), device="cpu")
    assert "a_future_setting" not in pipe.config


def test_decoder_windows_per_level_and_pipeline_state(tiny_pipeline, tmp_path):
    """The VQ decoder's mid-block works at the latent size (window = N tokens), an attention up block ``i`` at 2^i
    of it (N * 2^i); the pipeline's state follows, is saved in its config and named when wrong."""
    from diffusers import VQModel

    from difiisr_dwt.pipelines.pipeline_difiisr_dwt import DifIISRDWTPipeline

    vq = VQModel(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2, norm_num_groups=4,
                 up_block_types=("AttnUpDecoderBlock2D",) * 2, latent_channels=3, num_vq_embeddings=16)
    assert set_decoder_attention_window(vq.decoder, 5) == 1 + 2 * 2  # mid-block, two layers per up block
    tokens = {name: m.processor.window_size for name, m in vq.decoder.named_modules() if isinstance(m, Attention)}
    assert tokens["mid_block.attentions.0"] == 5 and tokens["up_blocks.0.attentions.0"] == 5
    assert tokens["up_blocks.1.attentions.0"] == 10
    assert set_decoder_attention_window(vq.decoder, None) == 5
    assert all(isinstance(m.processor, AttnProcessor2_0) for m in vq.decoder.modules() if isinstance(m, Attention))

    layers = [m for m in tiny_pipeline.vqvae.decoder.modules() if isinstance(m, Attention)]
    assert layers and tiny_pipeline.decoder_attention_window is None
    tiny_pipeline.enable_decoder_window_attention(6)
    assert all(m.processor.window_size == 6 for m in layers) and tiny_pipeline.config.decoder_attention_window == 6
    for bad in (0, 2.5, "8"):
        with pytest.raises(ValueError, match="window_size"):
            tiny_pipeline.enable_decoder_window_attention(bad)
    tiny_pipeline.save_pretrained(tmp_path)
    loaded = DifIISRDWTPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.decoder_attention_window == 6
    assert all(m.processor.window_size == 6 for m in loaded.vqvae.decoder.modules() if isinstance(m, Attention))
    components = {name: getattr(tiny_pipeline, name) for name in ("dwt_encoder", "unet", "vqvae", "scheduler")}
    with pytest.raises(ValueError, match="decoder_attention_window .*positive integer"):
        DifIISRDWTPipeline(**components, decoder_attention_window=0)
    tiny_pipeline.disable_decoder_window_attention()
    assert tiny_pipeline.decoder_attention_window is None
    assert all(isinstance(m.processor, AttnProcessor2_0) for m in layers)


def test_windowed_decoder_matches_global_where_one_window_covers_the_latent(tiny_pipeline):
    """A 10x14 latent: a window of 16 covers it (the global decode, to float rounding); one of 4 (the latent padded
    to 12x16) gives a different, finite decode of the right size."""
    channels = tiny_pipeline.vqvae.config.latent_channels
    latents = torch.randn(1, channels, 10, 14, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = tiny_pipeline.decode_vq_latents(latents, quantize=False)
        tiny_pipeline.enable_decoder_window_attention(16)
        torch.testing.assert_close(tiny_pipeline.decode_vq_latents(latents, quantize=False), reference,
                                   atol=1e-5, rtol=0)
        tiny_pipeline.enable_decoder_window_attention(4)
        windowed = tiny_pipeline.decode_vq_latents(latents, quantize=False)
    assert windowed.shape == reference.shape == (1, 3, 40, 56) and torch.isfinite(windowed).all()
    assert (windowed - reference).abs().max() > 1e-5


def test_decoder_window_with_decode_tiling_and_the_installed_loader(tiny_pipeline, tmp_path):
    """Windows inside decode tiles (a 24x20 latent in 8-pixel tiles): a window covering each tile is that tile's
    global attention (the same decode); a smaller one runs and changes it. A saved window comes back through
    ``load_pipeline`` (the installed classes)."""
    from difiisr_dwt.loading import load_pipeline

    channels = tiny_pipeline.vqvae.config.latent_channels
    latents = torch.randn(1, channels, 20, 24, generator=torch.Generator().manual_seed(0))
    tiny_pipeline.enable_decode_tiling(tile_size=8, tile_overlap=4)
    decode = lambda: tiny_pipeline.decode_vq_latents(latents, quantize=False)  # noqa: E731
    with torch.no_grad():
        tiled_global = decode()
        tiny_pipeline.enable_decoder_window_attention(16)
        torch.testing.assert_close(decode(), tiled_global, atol=1e-5, rtol=0)
        tiny_pipeline.enable_decoder_window_attention(4)
        tiled_windows = decode()
    assert tiled_windows.shape == (1, 3, 80, 96) and torch.isfinite(tiled_windows).all()
    assert (tiled_windows - tiled_global).abs().max() > 1e-5

    tiny_pipeline.save_pretrained(tmp_path / "saved")
    loaded = load_pipeline(str(tmp_path / "saved"), device="cpu")
    assert loaded.decoder_attention_window == 4
    assert all(m.processor.window_size == 4 for m in loaded.vqvae.decoder.modules() if isinstance(m, Attention))


def test_a_window_on_a_decoder_without_attention_warns(tiny_pipeline, caplog):
    from diffusers import VQModel
    from diffusers.utils import logging as diffusers_logging

    config = {key: value for key, value in tiny_pipeline.vqvae.config.items() if not key.startswith("_")}
    vq = VQModel.from_config({**config, "mid_block_add_attention": False})
    assert not [m for m in vq.decoder.modules() if isinstance(m, Attention)]
    tiny_pipeline.register_modules(vqvae=vq)
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            tiny_pipeline.enable_decoder_window_attention(8)
    finally:
        diffusers_logging.disable_propagation()
    assert "no attention layer" in caplog.text and tiny_pipeline.decoder_attention_window == 8
