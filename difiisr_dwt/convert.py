"""Convert an original VQ-f4 checkpoint (LDM, ResShift, DifIISR) into a diffusers ``VQModel`` folder.

The original autoencoders (``ldm.models.autoencoder.VQModel``, ResShift's ``VQModelTorch``, whose
``autoencoder_vq_f4.pth`` DifIISR reuses) share one key layout: ``encoder.down.N.block.M...``,
``encoder.mid.block_1`` / ``attn_1`` / ``block_2``, ``norm_out``, ``conv_out``, ``quant_conv``,
``quantize.embedding`` (the codebook), ``post_quant_conv`` and ``decoder.up.N...`` (levels indexed
by resolution, so in reverse order relative to diffusers' ``up_blocks``). Encoder, decoder and the
two 1x1 convs are the LDM VAE layout that diffusers already converts
(:func:`diffusers.loaders.single_file_utils.convert_ldm_vae_checkpoint`); the codebook keeps its name.

Every tensor of the checkpoint must land in the model and every model tensor must come from the
checkpoint: anything else is an error, never a silently random weight.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import VQModel
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import not_a_file, replace_dir

# Prefixes under which a full latent-diffusion checkpoint stores its autoencoder.
AUTOENCODER_PREFIXES = ("first_stage_model.", "vae.")
# Present in LDM autoencoder training checkpoints (LPIPS + discriminator); not part of the model.
TRAINING_ONLY_PREFIXES = ("loss.",)
# LDM's ``Normalize`` is ``GroupNorm(num_groups=32)``; group counts are not stored in the weights.
LDM_NORM_GROUPS = 32

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


class CheckpointConversionError(UsageError):
    """A checkpoint that cannot be converted faithfully (the message says which keys or why)."""


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` / ``.ckpt`` / ``.safetensors`` file into a flat ``{name: tensor}`` dict.

    Pickle files are read with ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` wrapper
    (PyTorch Lightning) is unwrapped.
    """
    path = Path(path)
    if problem := not_a_file(path):
        raise CheckpointConversionError(f"{path}: {problem}")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointConversionError(f"{path}: unknown checkpoint type; expected one of {CHECKPOINT_SUFFIXES}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise CheckpointConversionError(f"{path}: not a readable safetensors file ({error})") from error
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save's zip, or a bare pickle
        raise CheckpointConversionError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor a "
                                        f"pickle; it starts with {head!r})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointConversionError(
            f"{path}: torch.load(weights_only=True) refused it ({str(error).splitlines()[0]}). The file holds "
            "Python objects besides tensors. If you trust its origin, re-save only its tensors once, e.g. "
            "`sd = torch.load(p, weights_only=False)`; `safetensors.torch.save_file(sd.get('state_dict', sd), "
            "'vq.safetensors')`, and convert that."
        ) from error
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as error:  # a damaged file
        raise CheckpointConversionError(f"{path}: not a readable PyTorch checkpoint ({error!r})") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise CheckpointConversionError(f"{path}: expected a state dict, got {type(checkpoint).__name__}")
    not_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointConversionError(f"{path}: entries that are not tensors: {not_tensors[:8]}")
    return checkpoint


def extract_autoencoder(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The autoencoder's tensors with any ``module.`` / ``first_stage_model.`` / ``vae.`` prefix removed.

    Returns:
        ``(autoencoder_state_dict, ignored)``: ``ignored`` counts the keys left out by top-level
        name (the diffusion model of a full LDM checkpoint, the training loss's LPIPS/discriminator).
    """
    if state_dict and all(key.startswith("module.") for key in state_dict):  # saved from DistributedDataParallel
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    ignored: dict[str, int] = {}
    prefix = next((p for p in AUTOENCODER_PREFIXES if any(key.startswith(p) for key in state_dict)), "")
    autoencoder = {}
    for key, value in state_dict.items():
        name = key[len(prefix):]
        if not key.startswith(prefix):
            group = key.split(".")[0] + "."
        elif name.startswith(TRAINING_ONLY_PREFIXES):
            group = prefix + name.split(".")[0] + "."
        else:
            autoencoder[name] = value
            continue
        ignored[group] = ignored.get(group, 0) + 1
    if not autoencoder:
        raise CheckpointConversionError("the checkpoint holds no autoencoder tensors")
    return autoencoder, ignored


def infer_vq_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """``VQModel`` keyword arguments read off the tensor shapes of an original-layout state dict."""
    required = ["encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_out.weight",
                "quant_conv.weight", "post_quant_conv.weight", "quantize.embedding.weight"]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointConversionError(
            f"not an LDM/ResShift VQ autoencoder state dict: missing {missing} "
            f"(first keys: {sorted(state_dict)[:5]})"
        )
    attention = sorted({key.split(".attn.")[0] for key in state_dict if ".attn." in key})
    if attention:
        raise CheckpointConversionError(
            f"attention inside down/up levels ({attention}; LDM attn_resolutions != []) is not supported: "
            "VQ-f4 has none, and diffusers' DownEncoderBlock2D/UpDecoderBlock2D have no attention"
        )
    levels = 0
    while f"encoder.down.{levels}.block.0.conv1.weight" in state_dict:
        levels += 1
    layers = 0
    while f"encoder.down.0.block.{layers}.conv1.weight" in state_dict:
        layers += 1
    if levels == 0 or layers == 0:
        raise CheckpointConversionError("no encoder.down.N.block.M.conv1.weight keys: not an LDM autoencoder")
    block_out_channels = [state_dict[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(levels)]
    odd = [c for c in block_out_channels if c % LDM_NORM_GROUPS]
    if odd:
        raise CheckpointConversionError(
            f"channels {odd} are not multiples of {LDM_NORM_GROUPS}, the GroupNorm groups of the LDM layout"
        )
    return dict(
        in_channels=state_dict["encoder.conv_in.weight"].shape[1],
        out_channels=state_dict["decoder.conv_out.weight"].shape[0],
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers,
        latent_channels=state_dict["encoder.conv_out.weight"].shape[0],
        vq_embed_dim=state_dict["quant_conv.weight"].shape[0],
        num_vq_embeddings=state_dict["quantize.embedding.weight"].shape[0],
        norm_num_groups=LDM_NORM_GROUPS,
        mid_block_add_attention="encoder.mid.attn_1.q.weight" in state_dict,
    )


def convert_vq_state_dict(
    state_dict: dict[str, torch.Tensor], config: dict
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename an original-layout autoencoder state dict to diffusers' ``VQModel`` names.

    Returns:
        ``(converted, origins)``: the renamed tensors and, for each new name, the original one.

    Raises:
        CheckpointConversionError: some input tensors have no place in the diffusers layout.
    """
    # Standalone tensors, so that "which input did this come from?" is a question of identity (see below).
    source = {key: value if value._base is None else value.clone() for key, value in state_dict.items()}
    converted = convert_ldm_vae_checkpoint(source, config)
    converted["quantize.embedding.weight"] = source["quantize.embedding.weight"]  # same name in both layouts
    # diffusers' converter drops keys it does not know without a word; find them: every output is an
    # input tensor or a view of one (attention 1x1 convs become linear weights by slicing).
    key_of = {id(value): key for key, value in source.items()}
    origins = {new: key_of[id(t if t._base is None else t._base)] for new, t in converted.items()}
    unused = sorted(set(source) - set(origins.values()))
    if unused:
        raise CheckpointConversionError(f"{len(unused)} unexpected key(s) with no diffusers counterpart: {unused}")
    return converted, origins


def load_into_vqmodel(
    converted: dict[str, torch.Tensor], config: dict, origins: dict[str, str] | None = None
) -> VQModel:
    """Build ``VQModel(**config)`` and load ``converted`` with zero missing/unexpected keys and equal shapes."""
    origins = origins or {}

    def named(key: str) -> str:
        return f"{key} (from {origins[key]})" if key in origins and origins[key] != key else key

    model = VQModel(**config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(named(key) for key in set(converted) - set(expected))
    mismatched = sorted(
        f"{named(key)}: checkpoint {tuple(converted[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(converted)
        if converted[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:
        raise CheckpointConversionError(
            f"the checkpoint does not fit a VQModel with block_out_channels={config['block_out_channels']}, "
            f"layers_per_block={config['layers_per_block']}:\n  missing: {missing}\n  unexpected key(s): "
            f"{unexpected}\n  shape mismatches: {mismatched}"
        )
    model.load_state_dict({key: value.float() for key, value in converted.items()}, strict=True)
    return model.eval()


def convert_vq_checkpoint(path: str | os.PathLike) -> tuple[VQModel, dict[str, int]]:
    """Original VQ checkpoint file -> loaded diffusers ``VQModel`` and the ignored-key counts."""
    autoencoder, ignored = extract_autoencoder(load_checkpoint(path))
    config = infer_vq_config(autoencoder)
    converted, origins = convert_vq_state_dict(autoencoder, config)
    return load_into_vqmodel(converted, config, origins), ignored


def save_vqmodel_atomic(model: VQModel, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """``model.save_pretrained`` into a temporary folder beside ``out``, then rename it into place.

    Replacing an earlier model folder (``overwrite``) replaces its config and weights; every other file
    in it is kept.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if out.exists() and not (out / "config.json").is_file():
        raise FileExistsError(f"{out} exists and is not a model folder (no config.json); refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        replace_dir(tmp, out, keep_others=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
