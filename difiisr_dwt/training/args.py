"""Command-line flags of ``train_accelerate.py``, named like diffusers' official training examples.

Flags left at ``None`` take a default that depends on ``--preset`` and ``--stage`` (:data:`DEFAULTS`):
the ``full`` preset's diffusion defaults follow ResShift (AdamW 5e-5, 5k warm-up steps, EMA 0.999,
256-pixel crops).
"""

from __future__ import annotations

import argparse
import math

from difiisr_dwt.data import AUGMENTATIONS, INTENSITY_AUGMENTATIONS
from difiisr_dwt.degradations import DEGRADATIONS
from difiisr_dwt.errors import ArgumentParser
from difiisr_dwt.options import add_lpips_backbone_dir

STAGES = ("autoencoder", "adapter", "diffusion", "decoder")

# Defaults for the flags left at None: what a preset sets for every stage, what a stage sets for every
# preset, then what each (preset, stage) pair sets on top (see :data:`DEFAULTS`).
_PRESET_DEFAULTS = {
    "tiny": dict(resolution=64, train_batch_size=8, lpips_net="alex", ema_decay=0.999),
    "full": dict(resolution=256, train_batch_size=8, lpips_net="vgg", ema_decay=0.999),
}
_STAGE_DEFAULTS = {"autoencoder": dict(lpips_weight=0.1), "adapter": {}, "diffusion": {},
                   "decoder": dict(lpips_weight=0.1, validation_inference_steps=3)}
_PAIR_DEFAULTS = {
    ("tiny", "autoencoder"): dict(learning_rate=4e-4, lr_warmup_steps=100, max_train_steps=3000, vq_warmup_steps=500),
    ("tiny", "adapter"): dict(learning_rate=1e-3, lr_warmup_steps=50, max_train_steps=1000),
    ("tiny", "diffusion"): dict(learning_rate=2e-4, lr_warmup_steps=200, max_train_steps=4000),
    ("tiny", "decoder"): dict(learning_rate=5e-5, lr_warmup_steps=50, max_train_steps=2000),
    ("full", "autoencoder"): dict(learning_rate=1e-4, lr_warmup_steps=1000, max_train_steps=200_000,
                                  vq_warmup_steps=5000),
    ("full", "adapter"): dict(learning_rate=1e-3, lr_warmup_steps=500, max_train_steps=20_000, train_batch_size=16),
    ("full", "diffusion"): dict(learning_rate=5e-5, lr_warmup_steps=5000, max_train_steps=500_000),
    ("full", "decoder"): dict(learning_rate=2e-5, lr_warmup_steps=500, max_train_steps=50_000),
}
#: (preset, stage) -> defaults of the flags left at None. "test" is the unit-test preset: the tiny defaults,
#: the test model sizes.
DEFAULTS = {
    (preset, stage): {**_PRESET_DEFAULTS[preset], **_STAGE_DEFAULTS[stage], **values}
    for (preset, stage), values in _PAIR_DEFAULTS.items()
}
DEFAULTS.update({("test", stage): DEFAULTS[("tiny", stage)] for stage in STAGES})

# The numeric flags' ranges, checked in one place (:func:`_check_ranges`) so that a bad value is a usage
# error rather than a traceback from deep inside torch: flag -> (low, high, low allowed, high allowed).
_AT_LEAST_ONE = ("train_batch_size", "max_train_steps", "gradient_accumulation_steps", "checkpointing_steps",
                 "checkpoints_total_limit", "validation_steps", "num_validation_images",
                 "validation_inference_steps", "vq_init_batches", "vq_reseed_steps")
_AT_LEAST_ZERO = ("lr_warmup_steps", "vq_warmup_steps", "lpips_ramp_steps", "dataloader_num_workers", "seed",
                  "adam_weight_decay", "adam_epsilon", "max_grad_norm", "lpips_weight", "lpips_weight_start",
                  "edge_weight", "fft_weight", "image_l1_weight", "commitment_weight", "latent_distill_weight",
                  "raw_decoder_l1_weight")
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    **{name: (1, math.inf, True, False) for name in _AT_LEAST_ONE},
    **{name: (0, math.inf, True, False) for name in _AT_LEAST_ZERO},
    "resolution": (16, math.inf, True, False), "validation_crop": (16, math.inf, True, False),
    "learning_rate": (0, math.inf, False, False), "adam_beta1": (0, 1, True, False),
    "adam_beta2": (0, 1, True, False), "ema_decay": (0, 1, True, True),
    "image_loss_batch_fraction": (0, 1, False, True),
}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Train DifIISR-DWT: autoencoder, adapter, diffusion or decoder stage.")
    add = p.add_argument
    # what to train
    add("--stage", choices=STAGES, required=True,
        help="Which component to train: decoder fine-tunes the VQ decoder on the sampler's latents, judged "
             "after the fidelity step (needs the VQ model, DWT encoder and UNet of a trained pipeline).")
    add("--preset", choices=("test", "tiny", "full"), default="tiny", help="Model sizes (difiisr_dwt.presets).")
    add("--vqvae_model_name_or_path", default=None,
        help="VQModel folder or Hub repo (the autoencoder stage's output, or CompVis/ldm-super-resolution-4x-"
             "openimages with --vqvae_subfolder vqvae). Required by the adapter and diffusion stages; the "
             "autoencoder stage fine-tunes it when given.")
    add("--vqvae_subfolder", default=None, help="Subfolder of --vqvae_model_name_or_path that holds the VQModel.")
    add("--dwt_encoder_model_name_or_path", default=None,
        help="DWTEncoder folder (the adapter stage's output). Required by the diffusion stage.")
    add("--dwt_encoder_subfolder", default=None, help="Subfolder of --dwt_encoder_model_name_or_path.")
    add("--no_quantize_decode", action="store_true",
        help="Diffusion: the saved pipeline (and validation) decode without snapping to the codebook.")
    add("--unet_attention_window", type=int, default=None,
        help="Diffusion, decoder: the saved pipeline (and validation) runs the UNet's self-attention within windows "
        "of this many LR pixels (cost linear in the image's area); 0: global attention. Default: diffusion, the LR "
        "side of the training crops (--resolution / 4: each window is what the UNet attended over in training); "
        "decoder, global (the UNet's crops are not known there: give the diffusion stage's).")
    add("--unet_model_name_or_path", default=None, help="Start the diffusion stage from this UNet2DModel folder.")
    add("--revision", default=None, help="Hub revision of the pretrained components.")
    # data
    add("--train_data_dir", default=None, help="Folder of HR training images (or data_dir for imagefolder).")
    add("--train_file_list", default=None, help="Text file naming the training images in --train_data_dir.")
    add("--dataset_name", default=None, help="A `datasets` dataset (Hub id, or 'imagefolder').")
    add("--dataset_config_name", default=None)
    add("--image_column", default="image", help="Image column of --dataset_name.")
    add("--cache_dir", default=None, help="Cache folder for `datasets` and the Hub.")
    add("--lr_data_dir", default=None, help="Paired LR images (same file names as the HR); skips the degradation.")
    add("--degradation", choices=DEGRADATIONS, default="bicubic", help="How LR training inputs are made.")
    add("--resolution", type=int, default=None, help="HR crop side in pixels (multiple of 16).")
    add("--augment", choices=AUGMENTATIONS, default="flip_rot90", help="Random flips / 90-degree rotations.")
    add("--intensity_augment", choices=INTENSITY_AUGMENTATIONS, default="none",
        help='"thermal": random polarity, gamma, level and span of the grey levels (other cameras\' AGC).')
    add("--dataloader_num_workers", type=int, default=0)
    add("--validation_data_dir", default=None, help="Folder of HR validation images (LR = PIL bicubic / 4).")
    add("--validation_file_list", default=None)
    add("--num_validation_images", type=int, default=4, help="Validation images used (the first N).")
    add("--validation_crop", type=int, default=256, help="Centre crop of each validation HR image (pixels).")
    add("--validation_steps", type=int, default=500, help="Validate every N steps (and at the end).")
    add("--validation_inference_steps", type=int, default=None,
        help="Sampling steps of diffusion and decoder validation (default 15; decoder: 3, the pipeline's).")
    # optimisation
    add("--train_batch_size", type=int, default=None, help="Batch size per process.")
    add("--max_train_steps", type=int, default=None, help="Optimiser steps.")
    add("--gradient_accumulation_steps", type=int, default=1)
    add("--gradient_checkpointing", action="store_true", help="Trade compute for memory (UNet).")
    add("--learning_rate", type=float, default=None)
    add("--scale_lr", action="store_true", help="Scale the LR by accumulation x batch size x processes.")
    add("--lr_scheduler", default="constant_with_warmup",
        help='"linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup".')
    add("--lr_warmup_steps", type=int, default=None)
    add("--adam_beta1", type=float, default=0.9)
    add("--adam_beta2", type=float, default=0.999)
    add("--adam_weight_decay", type=float, default=0.0)
    add("--adam_epsilon", type=float, default=1e-8)
    add("--max_grad_norm", type=float, default=1.0)
    add("--use_ema", action="store_true", help="Keep an EMA of the trained weights; it is what gets saved.")
    add("--ema_decay", type=float, default=None)
    add("--mixed_precision", choices=("no", "fp16", "bf16"), default=None,
        help="Defaults to the accelerate config's value.")
    add("--allow_tf32", action="store_true")
    add("--seed", type=int, default=0)
    # losses
    add_lpips_backbone_dir(p)
    add("--lpips_net", choices=("alex", "vgg"), default=None,
        help="LPIPS network of the training losses (default: alex for tiny, 17x cheaper on CPU; vgg for full).")
    add("--lpips_weight", type=float, default=None,
        help="Autoencoder: LPIPS weight. Diffusion: final weight of the LPIPS ramp (default 0.1).")
    add("--lpips_weight_start", type=float, default=0.02, help="Diffusion: LPIPS weight at step 0.")
    add("--lpips_ramp_steps", type=int, default=None, help="Diffusion: steps of the LPIPS ramp (default half).")
    add("--edge_weight", type=float, default=0.1, help="Diffusion: Sobel edge loss weight (0 = off).")
    add("--fft_weight", type=float, default=0.0, help="Diffusion: FFT loss weight (0 = off).")
    add("--image_l1_weight", type=float, default=0.0, help="Diffusion: pixel L1 weight of the decoded estimate.")
    add("--image_loss_after_fidelity", action="store_true",
        help="Diffusion: measure the image-space terms after the pipeline's fidelity step (back-projection onto "
             "the LR), on the output a user gets.")
    add("--image_loss_batch_fraction", type=float, default=1.0,
        help="Diffusion: decode only this fraction of the batch for the image-space terms (saves time).")
    # autoencoder stage
    add("--vq_warmup_steps", type=int, default=None, help="Autoencoder: steps trained without quantisation.")
    add("--vq_init_batches", type=int, default=16, help="Autoencoder: batches of encoder outputs for k-means.")
    add("--vq_reseed_steps", type=int, default=100, help="Autoencoder: re-seed unused codes every N steps.")
    add("--commitment_weight", type=float, default=1.0, help="Autoencoder: weight of the quantiser loss.")
    add("--keep_latent_space", action="store_true",
        help="Autoencoder: keep the latent space of --vqvae_model_name_or_path (so its adapter and UNet stay "
             "valid): a frozen copy of it encodes every crop; the decoder learns to reconstruct the HR from those "
             "latents, the encoder (if its architecture changes) learns to reproduce them; the codebook is frozen.")
    add("--vqvae_mid_block_attention", choices=("keep", "drop"), default="keep",
        help="Autoencoder: 'drop' removes the mid-block self-attention of a pretrained VQModel (cost quadratic in "
             "the image area) and keeps every other weight; use with --keep_latent_space.")
    add("--latent_distill_weight", type=float, default=1.0,
        help="Autoencoder with --keep_latent_space: weight of the MSE between the encoder's latents and the "
             "frozen copy's.")
    # decoder stage
    add("--raw_decoder_l1_weight", type=float, default=0.25,
        help="Decoder: weight of the L1 between the decoder's own output (before the fidelity step) and the HR.")
    # checkpoints, logging, hub
    add("--output_dir", required=True)
    add("--logging_dir", default="logs", help="Tensorboard folder, relative to --output_dir.")
    add("--report_to", default=None, help='"tensorboard", "wandb", "all" (default: CSV + PNG curves only).')
    add("--checkpointing_steps", type=int, default=500)
    add("--checkpoints_total_limit", type=int, default=None)
    add("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint folder.')
    add("--push_to_hub", action="store_true")
    add("--hub_model_id", default=None)
    add("--hub_token", default=None)
    add("--debug_dump_rank_weights", action="store_true",
        help="At the end every process writes its trained weights to OUTPUT_DIR/rank_weights/ (DDP tests).")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags, filling the preset defaults; a bad combination exits with a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _complete(args)
    except ValueError as error:
        parser.error(str(error))


def _complete(args: argparse.Namespace) -> argparse.Namespace:
    for key, value in DEFAULTS[(args.preset, args.stage)].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.validation_inference_steps is None:
        args.validation_inference_steps = 15
    if args.lpips_weight is None:
        args.lpips_weight = 0.1
    if args.lpips_ramp_steps is None:
        args.lpips_ramp_steps = args.max_train_steps // 2
    _check_ranges(args)
    if args.resolution % 16:
        raise ValueError(f"--resolution must be a multiple of 16 (LR crop a multiple of 4), got {args.resolution}.")
    if args.validation_file_list is not None and args.validation_data_dir is None:
        raise ValueError("--validation_file_list names images of --validation_data_dir: give that folder too.")
    if args.stage in ("adapter", "diffusion", "decoder") and args.vqvae_model_name_or_path is None:
        raise ValueError(f"--stage {args.stage} needs --vqvae_model_name_or_path (the autoencoder stage's output).")
    if args.stage in ("diffusion", "decoder") and args.dwt_encoder_model_name_or_path is None:
        raise ValueError(f"--stage {args.stage} needs --dwt_encoder_model_name_or_path (the adapter stage's output).")
    if args.stage == "decoder" and args.unet_model_name_or_path is None:
        raise ValueError("--stage decoder needs --unet_model_name_or_path (the diffusion stage's UNet, kept frozen).")
    if args.unet_attention_window is not None and args.unet_attention_window < 0:
        raise ValueError(f"--unet_attention_window must be 0 (global attention) or a positive number of LR pixels, "
                         f"got {args.unet_attention_window}.")
    if args.dataset_name is None and args.train_data_dir is None:
        raise ValueError("Give --train_data_dir (an image folder) or --dataset_name.")
    if args.push_to_hub and args.hub_model_id is None:
        raise ValueError("--push_to_hub needs --hub_model_id.")
    if (args.keep_latent_space or args.vqvae_mid_block_attention == "drop") and (
            args.stage != "autoencoder" or args.vqvae_model_name_or_path is None):
        raise ValueError("--keep_latent_space and --vqvae_mid_block_attention drop need --stage autoencoder and a "
                         "pretrained --vqvae_model_name_or_path.")
    return args


def _check_ranges(args: argparse.Namespace) -> None:
    """Refuse a numeric flag outside its :data:`RANGES` entry (NaN and infinity included), naming the range."""
    for name, (low, high, low_ok, high_ok) in RANGES.items():
        value = getattr(args, name)
        if value is None:  # an optional limit (--checkpoints_total_limit)
            continue
        above = low < value or low_ok and value == low
        below = value < high or high_ok and value == high
        if not (math.isfinite(value) and above and below):
            if high == math.inf:
                expected = f"at least {low:g}" if low_ok else f"above {low:g}"
            else:
                expected = f"in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
            raise ValueError(f"--{name} must be {expected}, got {value}.")
