"""Command-line options shared by the ``difiisr-dwt`` subcommands and ``train_accelerate.py``."""

from __future__ import annotations

import argparse
import sys

from difiisr_dwt.commands import int_at_least
from difiisr_dwt.errors import UsageError
from difiisr_dwt.radiometric import parse_value_range

LPIPS_BACKBONE_DIR_HELP = (
    "folder with alexnet_features.safetensors / vgg16_features.safetensors (the ImageNet backbones of LPIPS, "
    "e.g. shared/lpips), used when the torchvision cache has none (default: $DIFIISR_LPIPS_WEIGHTS)"
)


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores its value like the new one and prints one warning line."""

    def __init__(self, option_strings, dest, new_option: str, **kwargs):
        self.new_option = new_option
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated and will be removed; use {self.new_option}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_lpips_backbone_dir(parser: argparse.ArgumentParser, *, dashes: bool = False) -> None:
    """``--lpips_backbone_dir`` (and ``--lpips-backbone-dir`` when ``dashes``), stored as ``lpips_backbone_dir``.

    ``--lpips_weights`` / ``--lpips-weights``, its old name (one letter from the loss weight ``--lpips_weight``),
    still work and warn.
    """
    new = ["--lpips_backbone_dir"] + (["--lpips-backbone-dir"] if dashes else [])
    old = ["--lpips_weights"] + (["--lpips-weights"] if dashes else [])
    parser.add_argument(*new, dest="lpips_backbone_dir", default=None, metavar="DIR", help=LPIPS_BACKBONE_DIR_HELP)
    parser.add_argument(*old, dest="lpips_backbone_dir", action=DeprecatedAlias, new_option=new[0],
                        help=argparse.SUPPRESS)


def _unit_interval(text: str) -> float:
    """An argparse ``type``: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def _noise_level(text: str) -> str | float:
    """``auto``, ``estimate`` or a finite sigma >= 0 (grey levels), for ``--input-noise-level``."""
    if text in ("auto", "estimate"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'estimate' or a noise sigma >= 0 in grey levels, got {text!r}")
    return value


def _attention_window(text: str) -> int | str:
    """``--attention-window`` / ``--decoder-attention-window``: ``global`` or a window side in LR pixels (>= 1)."""
    return text if text == "global" else int_at_least(1)(text)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """How the pipeline samples, for ``upscale`` and ``eval``: ``--steps``, ``--noise-scale``,
    ``--prior-noise-scale``, ``--no-lr-consistency``, ``--tile`` / ``--tile-overlap``, ``--attention-window``,
    ``--decoder-attention-window``,
    ``--seed``, ``--range``.
    Unset values keep the pipeline's defaults (:func:`apply_sampling_arguments`)."""
    parser.add_argument("--steps", type=int_at_least(1), default=None,
                        help="sampling steps, 1..T (default: the pipeline's, {pipeline:num_inference_steps})")
    parser.add_argument("--noise-scale", "--noise_scale", type=_unit_interval, default=None,
                        help="fidelity-realism knob in [0, 1] (default {pipeline:noise_scale}): 0 = deterministic, "
                        "most faithful; "
                        "1 = the full ResShift posterior, more invented detail")
    parser.add_argument("--prior-noise-scale", "--prior_noise_scale", type=_unit_interval, default=None,
                        help="share of the prior's noise in the starting state, in [0, 1] (default: 1 for images, "
                        "0 for video and sequences: no per-frame noise draw, so detail moves with the content)")
    parser.add_argument("--no-lr-consistency", "--no_lr_consistency", dest="lr_consistency", action="store_false",
                        help="skip back-projection onto the input and flat-region detail shrinkage "
                        "(the raw model output; levels may drift)")
    parser.add_argument("--tile", type=int_at_least(1), default=None,
                        help="UNet tile size in LR pixels (default: none; tiles share GroupNorm statistics)")
    parser.add_argument("--tile-overlap", "--tile_overlap", type=int_at_least(0), default=16,
                        help="overlap of UNet tiles in LR pixels (default 16)")
    parser.add_argument("--attention-window", type=_attention_window, default=None, metavar="N|global",
                        help="the UNet's self-attention within windows of N x N LR pixels (cost linear in the "
                        "image's area; a multiple of the UNet's deepest stride, 4 for the embedded model), or 'global' "
                        "over each whole attention "
                        "map (default: the model folder's unet_attention_window; 32 for the embedded model)")
    parser.add_argument("--decoder-attention-window", type=_attention_window, default=None, metavar="N|global",
                        help="the VQ decoder's self-attention within windows of N x N LR pixels (decode cost linear in "
                        "the image's area), or 'global' (default: the model folder's decoder_attention_window; global "
                        "for the embedded model, whose RoadScene LPIPS windows make worse)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, the same for every image (default 0)")
    parser.add_argument("--input-noise-level", "--input_noise_level", type=_noise_level, default=None,
                        metavar="auto|estimate|SIGMA",
                        help="the input's sensor noise in 8-bit grey levels, taken out of the fidelity target "
                        "instead of copied into the output (default {pipeline:input_noise_level}): auto estimates "
                        "it per 8-bit image and reproduces radiometric (16-bit, --range) inputs exactly; estimate "
                        "estimates it for every image; 0 reproduces every input exactly, its noise included")
    parser.add_argument("--range", dest="value_range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="fixed intensity mapping in the input's units (counts, kelvin, degrees Celsius): "
                        "LOW..HIGH maps to the model's input for every image, and outputs keep the input's units; "
                        "values outside are kept, not clipped (default: each 16-bit / float image by its own min and "
                        "max)")


def apply_sampling_arguments(pipe, args: argparse.Namespace) -> dict:
    """Set ``args.tile`` (:meth:`enable_unet_tiling`), ``args.attention_window`` (:meth:`enable_unet_window_attention`)
    and ``args.decoder_attention_window`` (:meth:`enable_decoder_window_attention`) on ``pipe`` and return the
    ``__call__`` keyword arguments of :func:`add_sampling_arguments`' options (without ``generator``).

    Raises:
        ValueError: a tile size the UNet cannot take (the pipeline's message).
        UsageError: a ``--range`` that is not ``LOW < HIGH``, ``--steps`` above the model's trained steps (a
            ValueError too).
    """
    if args.tile is not None:
        pipe.enable_unet_tiling(tile_size=args.tile, tile_overlap=args.tile_overlap)
    for option, model in (("attention_window", "unet"), ("decoder_attention_window", "decoder")):
        window, flag = getattr(args, option, None), "--" + option.replace("_", "-")
        if window is not None and not hasattr(pipe, f"enable_{model}_window_attention"):
            raise UsageError(f"{flag}: this model folder's pipeline code has no window attention for the {model} "
                             "(older code run with --trust-remote-code); leave the option out")
        if window == "global":
            getattr(pipe, f"disable_{model}_window_attention")()
        elif window is not None:
            try:
                getattr(pipe, f"enable_{model}_window_attention")(window)
            except ValueError as error:
                raise UsageError(f"{flag} {window}: {error}") from None
    kwargs = {"lr_consistency": args.lr_consistency}
    value_range = parse_value_range(getattr(args, "value_range", None))
    if value_range is not None:
        kwargs["value_range"] = value_range
    if args.steps is not None:
        # checked once here, not by the pipeline per file: one usage error before any work
        trained = pipe.scheduler.config.num_train_timesteps  # the bound the pipeline's check_inputs applies
        if args.steps > trained:
            raise UsageError(f"--steps {args.steps}: this model was trained with {trained} steps; choose 1..{trained}")
        kwargs["num_inference_steps"] = args.steps
    if args.noise_scale is not None:
        kwargs["noise_scale"] = args.noise_scale
    if getattr(args, "input_noise_level", None) is not None:
        kwargs["input_noise_level"] = None if args.input_noise_level == "estimate" else args.input_noise_level
    if getattr(args, "prior_noise_scale", None) is not None:
        kwargs["prior_noise_scale"] = args.prior_noise_scale
    return kwargs
