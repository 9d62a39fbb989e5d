"""``difiisr-dwt convert-vq CHECKPOINT --out DIR``: an original VQ-f4 checkpoint as a diffusers ``VQModel``.

Convert an original VQ autoencoder checkpoint (ResShift's autoencoder_vq_f4.pth, an LDM first-stage .ckpt, or
a full LDM .ckpt whose autoencoder is under first_stage_model.; .pth, .ckpt or .safetensors, with or without a
state_dict wrapper) into a diffusers VQModel folder, usable as --vqvae_model_name_or_path in training. Pickles
are read with torch.load(weights_only=True); any tensor without a place in the model, or any model tensor
without a source, is an error.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``difiisr-dwt convert-vq`` (the parser itself comes from :mod:`difiisr_dwt.cli`)."""
    parser.add_argument("checkpoint", help="the original checkpoint file")
    parser.add_argument("--out", required=True, help="output folder (config.json + safetensors weights)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it already holds a model (its other files are kept)")


def run(args: argparse.Namespace) -> int:
    from difiisr_dwt.convert import convert_vq_checkpoint, save_vqmodel_atomic
    from difiisr_dwt.io import InputGuard

    # --out is replaced as a whole: it may not be, or hold, the checkpoint
    InputGuard(files=[args.checkpoint]).check(args.out, "--out", replaces_folder=True)
    model, ignored = convert_vq_checkpoint(args.checkpoint)  # errors are reported by the CLI boundary
    out = save_vqmodel_atomic(model, args.out, overwrite=args.overwrite)
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    print(f"Wrote {out} (VQModel, {params / 1e6:.2f}M parameters)")
    for key in ("block_out_channels", "layers_per_block", "latent_channels", "vq_embed_dim", "num_vq_embeddings"):
        print(f"  {key}: {config[key]}")
    for group, count in sorted(ignored.items()):
        print(f"  ignored {count} tensor(s) under {group} (not part of the autoencoder)")
    return 0
