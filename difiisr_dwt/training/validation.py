"""Validation helpers shared by the stages: the validation set, its metrics and image grids, measured and
written by :mod:`difiisr_dwt.evaluation` (the code behind ``difiisr-dwt eval``)."""

from __future__ import annotations

import argparse
import functools
import os

import numpy as np
import PIL.Image
import torch

from difiisr_dwt.data import load_validation_images
from difiisr_dwt.evaluation import MetricSettings, bicubic_down, bicubic_up, image_grid, save_grid

#: What validation measures: ``eval``'s metrics without LPIPS-vgg (slow on a CPU, and not a training loss).
VALIDATION_METRICS = ("psnr_y", "ssim_y", "lpips_alex")


@functools.lru_cache(maxsize=4)
def _validation_set(data_dir: str, file_list: str | None, limit: int, crop: int) -> tuple:
    return tuple(load_validation_images(data_dir, file_list, limit, crop))


def load_validation_set(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    """``(name, HR float32 (H, W, 3) in [0, 1])`` for the first ``--num_validation_images`` images, centre
    crops of ``--validation_crop`` pixels (multiples of 16)."""
    return list(_validation_set(args.validation_data_dir, args.validation_file_list, args.num_validation_images,
                                args.validation_crop))


def validation_metric_settings(args: argparse.Namespace) -> MetricSettings:
    """:data:`VALIDATION_METRICS` on the whole image, LPIPS on the CPU with ``--lpips_backbone_dir``."""
    return MetricSettings(metrics=VALIDATION_METRICS, lpips_backbone_dir=args.lpips_backbone_dir)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """`(1, 3, H, W)` or `(3, H, W)` in [-1, 1] -> `(H, W, 3)` uint8, rounded like a saved image."""
    image = images[0] if images.ndim == 4 else images
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    return np.rint(array).astype(np.uint8)


def pil_bicubic_lr(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """The evaluation protocol's LR (:func:`difiisr_dwt.evaluation.bicubic_down`) of a uint8 array."""
    return np.asarray(bicubic_down(PIL.Image.fromarray(hr), scale))


def pil_bicubic_up(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """The bicubic baseline (:func:`difiisr_dwt.evaluation.bicubic_up`) of a uint8 array."""
    return np.asarray(bicubic_up(PIL.Image.fromarray(lr), scale))


def save_validation_grid(rows: list[list[np.ndarray]], output_dir: str | os.PathLike, step: int,
                         titles: list[str]) -> None:
    """``OUTPUT_DIR/validation/step-<step>.png``: the :func:`~difiisr_dwt.evaluation.image_grid` of ``rows``
    (uint8 `(H, W, 3)` images, one row per validation image), its column ``titles`` in ``<png>.txt``.
    Nothing is written for an empty validation set."""
    if rows:
        save_grid(image_grid(rows), os.path.join(output_dir, "validation", f"step-{step:07d}.png"), titles)
