"""Command-line options shared by the ``difiisr-dwt`` subcommands and ``train_accelerate.py``."""

from __future__ import annotations

import argparse
import sys

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
