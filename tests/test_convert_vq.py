"""``convert-vq``: original LDM/ResShift VQ-f4 checkpoints -> diffusers ``VQModel``.

The reference is a small re-implementation, written here from the original LDM code's structure
(``ldm/modules/diffusionmodules/model.py``: ``Encoder``, ``Decoder``, ``ResnetBlock``, ``AttnBlock``,
``Downsample``, ``Upsample``; ``VectorQuantizer2``), so its ``state_dict()`` has the original key
names and its forward pass is independent of the converter's renaming. A renaming mistake (say the
decoder levels left in LDM's order) gives either a key/shape error or different outputs.
"""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from difiisr_dwt.cli import main  # the CLI with its error boundary
from difiisr_dwt.convert import CheckpointConversionError, convert_vq_checkpoint

CH, CH_MULT, NUM_RES_BLOCKS, Z_CHANNELS, EMBED_DIM, N_EMBED = 32, (1, 2, 2), 2, 3, 3, 64


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)  # LDM's Normalize


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_channels), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2, self.conv2 = _norm(out_channels), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
        w = torch.bmm(q, k.reshape(b, c, hh * ww)) * int(c) ** (-0.5)
        w = torch.softmax(w, dim=2).permute(0, 2, 1)
        h = torch.bmm(v.reshape(b, c, hh * ww), w).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # LDM's asymmetric padding


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1 = ResnetBlock(channels, channels), AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels)
    return mid


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(3, CH, 3, padding=1)
        in_mult = (1,) + CH_MULT
        self.down = nn.ModuleList()
        for level, mult in enumerate(CH_MULT):
            down = nn.Module()
            block_in = CH * in_mult[level]
            down.block = nn.ModuleList()
            for _ in range(NUM_RES_BLOCKS):
                down.block.append(ResnetBlock(block_in, CH * mult))
                block_in = CH * mult
            down.attn = nn.ModuleList()  # attn_resolutions = [] in VQ-f4
            if level != len(CH_MULT) - 1:
                down.downsample = Downsample(block_in)
            self.down.append(down)
        self.mid = _mid(block_in)
        self.norm_out, self.conv_out = _norm(block_in), nn.Conv2d(block_in, Z_CHANNELS, 3, padding=1)  # double_z=False

    def forward(self, x):
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            for block in down.block:
                h = block(h)
            if level != len(CH_MULT) - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        block_in = CH * CH_MULT[-1]
        self.conv_in = nn.Conv2d(Z_CHANNELS, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        self.up = nn.ModuleList()
        for level in reversed(range(len(CH_MULT))):
            up = nn.Module()
            up.block = nn.ModuleList()
            for _ in range(NUM_RES_BLOCKS + 1):
                up.block.append(ResnetBlock(block_in, CH * CH_MULT[level]))
                block_in = CH * CH_MULT[level]
            up.attn = nn.ModuleList()
            if level != 0:
                up.upsample = Upsample(block_in)
            self.up.insert(0, up)  # indexed by resolution level, as in LDM
        self.norm_out, self.conv_out = _norm(block_in), nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(len(CH_MULT))):
            for block in self.up[level].block:
                h = block(h)
            if level != 0:
                h = self.up[level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(N_EMBED, EMBED_DIM)

    def forward(self, z):  # VectorQuantizer2: nearest codebook entry by squared distance
        zf = z.permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
        e = self.embedding.weight
        d = zf.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * zf @ e.t()
        zq = e[d.argmin(1)].view(z.shape[0], z.shape[2], z.shape[3], EMBED_DIM)
        return zq.permute(0, 3, 1, 2)


class LDMVQModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder, self.quantize = Encoder(), Decoder(), Quantizer()
        self.quant_conv = nn.Conv2d(Z_CHANNELS, EMBED_DIM, 1)
        self.post_quant_conv = nn.Conv2d(EMBED_DIM, Z_CHANNELS, 1)

    def encode(self, x):
        return self.quant_conv(self.encoder(x))

    def decode(self, z, quantize: bool = True):
        return self.decoder(self.post_quant_conv(self.quantize(z) if quantize else z))


@pytest.fixture(scope="module")
def reference() -> LDMVQModel:
    torch.manual_seed(0)
    model = LDMVQModel().eval()
    with torch.no_grad():  # non-trivial norms so that a swapped norm1/norm2 or level shows up
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(param))
            elif "embedding" in name:
                param.copy_(torch.randn_like(param))
    return model


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def test_reference_has_the_original_ldm_key_layout(reference):
    keys = set(reference.state_dict())
    for key in [
        "encoder.down.0.block.1.conv2.weight", "encoder.down.0.downsample.conv.weight",
        "encoder.down.1.block.0.nin_shortcut.weight", "encoder.mid.block_1.norm1.weight",
        "encoder.mid.attn_1.q.weight", "encoder.mid.attn_1.proj_out.bias", "encoder.norm_out.weight",
        "quant_conv.weight", "quantize.embedding.weight", "post_quant_conv.bias",
        "decoder.up.0.block.2.conv1.weight", "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.up.2.upsample.conv.weight", "decoder.conv_out.bias",
    ]:
        assert key in keys, key
    assert "decoder.up.0.upsample.conv.weight" not in keys  # the highest-resolution level has no upsampler
    assert reference.state_dict()["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)  # 1x1 convs, not linear


@pytest.mark.parametrize("layout", ["plain.pth", "lightning.ckpt", "ldm_full.ckpt", "plain.safetensors"])
def test_converts_with_zero_missing_keys_and_same_outputs(reference, tmp_path, layout):
    state = _state_dict(reference)
    path = tmp_path / layout
    if layout == "plain.pth":  # ResShift's autoencoder_vq_f4.pth
        torch.save(state, path)
    elif layout == "lightning.ckpt":  # LDM first-stage training checkpoint: wrapper + loss tensors
        loss = {"loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4), "loss.logvar": torch.zeros(())}
        torch.save({"state_dict": {**state, **loss}, "global_step": 7}, path)
    elif layout == "ldm_full.ckpt":  # full LDM: the autoencoder under first_stage_model.
        full = {f"first_stage_model.{k}": v for k, v in state.items()}
        full["model.diffusion_model.input_blocks.0.0.weight"] = torch.randn(8, 6, 3, 3)
        full["cond_stage_model.weight"] = torch.randn(2)
        torch.save({"state_dict": full}, path)
    else:
        save_file(state, str(path))

    model, ignored = convert_vq_checkpoint(path)
    expected_ignored = {"plain.pth": {}, "plain.safetensors": {}, "lightning.ckpt": {"loss.": 2},
                        "ldm_full.ckpt": {"model.": 1, "cond_stage_model.": 1}}[layout]
    assert ignored == expected_ignored
    assert model.config.block_out_channels == (32, 64, 64)
    assert model.config.layers_per_block == NUM_RES_BLOCKS and model.config.num_vq_embeddings == N_EMBED

    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, EMBED_DIM, 8, 8)
    # float32 at the acceptance bound (1e-5), and float64 where only a wrong mapping can leave an error
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        want_model, got_model = copy.deepcopy(reference).to(dtype), model.to(dtype)
        xd, zd = x.to(dtype), z.to(dtype)
        with torch.no_grad():
            pairs = {
                "decode (quantised)": (want_model.decode(zd), got_model.decode(zd).sample),
                "decode (not quantised)": (
                    want_model.decode(zd, quantize=False), got_model.decode(zd, force_not_quantize=True).sample
                ),
                "encode": (want_model.encode(xd), got_model.encode(xd).latents),
            }
        for what, (want, got) in pairs.items():
            assert got.shape == want.shape, what
            error = (got - want).abs().max().item()
            assert error < tolerance, f"{what} ({dtype}): max abs error {error:.3g}"
        assert pairs["decode (quantised)"][0].abs().max() > 0.1  # a non-trivial output was compared


def test_unexpected_and_missing_keys_fail_loudly(reference, tmp_path):
    state = _state_dict(reference)
    extra = tmp_path / "extra.pth"
    torch.save({**state, "encoder.down.0.block.0.extra.weight": torch.zeros(3)}, extra)
    with pytest.raises(CheckpointConversionError, match=r"unexpected key.*encoder\.down\.0\.block\.0\.extra\.weight"):
        convert_vq_checkpoint(extra)

    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "decoder.up.1.block.2.norm2.bias"}, missing)
    missing_key = r"missing: \['decoder\.up_blocks\.1\.resnets\.2\.norm2\.bias'\]"  # LDM up.1 = diffusers up_blocks.1
    with pytest.raises(CheckpointConversionError, match=missing_key):
        convert_vq_checkpoint(missing)

    attention = tmp_path / "attn.pth"
    torch.save({**state, "encoder.down.2.attn.0.q.weight": torch.zeros(64, 64, 1, 1)}, attention)
    with pytest.raises(CheckpointConversionError, match="attention inside down/up levels"):
        convert_vq_checkpoint(attention)


def test_pickles_with_objects_are_refused_with_advice(tmp_path):
    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=4.5e-6)}, path)
    with pytest.raises(CheckpointConversionError, match=r"weights_only=True.*trust its origin"):
        convert_vq_checkpoint(path)
    with pytest.raises(CheckpointConversionError, match="no such file"):
        convert_vq_checkpoint(tmp_path / "absent.pth")


@pytest.mark.parametrize("content", [b"hello world\n", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04 cut short"])
def test_files_that_are_no_checkpoint_are_called_so(tmp_path, content):
    """A text file or a PNG named .pth was 'a file holding Python objects besides tensors' (with advice to load
    it with weights_only=False), or a bare KeyError."""
    path = tmp_path / "g.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointConversionError, match="not a (readable )?PyTorch checkpoint") as error:
        convert_vq_checkpoint(path)
    assert "weights_only" not in str(error.value)


def test_cli_writes_a_loadable_vqmodel_folder(reference, tmp_path, capsys):
    from diffusers import VQModel

    checkpoint = tmp_path / "autoencoder_vq_f4.pth"
    torch.save(_state_dict(reference), checkpoint)
    out = tmp_path / "vq"
    assert main(["convert-vq", str(checkpoint), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    assert "block_out_channels" in capsys.readouterr().out
    loaded = VQModel.from_pretrained(out)
    z = torch.randn(1, EMBED_DIM, 8, 8)
    with torch.no_grad():
        assert (loaded.decode(z).sample - reference.decode(z)).abs().max() < 1e-5

    assert main(["convert-vq", str(checkpoint), "--out", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert-vq", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "vq2")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "vq2").exists()
