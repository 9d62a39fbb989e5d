"""Validation helpers shared by the stages: the validation set, metrics, image grids."""

from __future__ import annotations

import argparse
import functools
import os

import numpy as np
import PIL.Image
import torch

from difiisr_dwt.data import load_validation_images
from difiisr_dwt.evaluation import bicubic_down, bicubic_up
from difiisr_dwt.io import save_image_atomic
from difiisr_dwt.metrics import lpips_distance, psnr_y, ssim_y


@functools.lru_cache(maxsize=4)
def _validation_set(data_dir: str, file_list: str | None, limit: int, crop: int) -> tuple:
    return tuple(load_validation_images(data_dir, file_list, limit, crop))


def load_validation_set(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    """``(name, HR float32 (H, W, 3) in [0, 1])`` for the first ``--num_validation_images`` images, centre
    crops of ``--validation_crop`` pixels (multiples of 16)."""
    return list(_validation_set(args.validation_data_dir, args.validation_file_list, args.num_validation_images,
                                args.validation_crop))


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


def image_metrics(sr: np.ndarray, hr: np.ndarray, lpips_weights: str | os.PathLike | None) -> dict[str, float]:
    """PSNR_Y, SSIM_Y and LPIPS-alex of one uint8 `(H, W, 3)` pair."""
    return {"psnr_y": psnr_y(sr, hr), "ssim_y": ssim_y(sr, hr),
            "lpips_alex": lpips_distance(sr, hr, net="alex", weights=lpips_weights)}


def save_grid(rows: list[list[np.ndarray]], path: str | os.PathLike, titles: list[str] | None = None) -> None:
    """Tile uint8 `(H, W, 3)` images (one row per validation image; every image resized to the first
    column's size with nearest neighbour so LR pixels stay visible) and save atomically, with the column
    ``titles`` beside it in ``<path>.txt``."""
    if not rows:
        return
    height, width = rows[0][0].shape[:2]
    grid = PIL.Image.new("RGB", (width * max(len(r) for r in rows), height * len(rows)))
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            tile = PIL.Image.fromarray(image)
            if tile.size != (width, height):
                tile = tile.resize((width, height), PIL.Image.NEAREST)
            grid.paste(tile, (j * width, i * height))
    save_image_atomic(grid, path)
    if titles:
        with open(f"{path}.txt", "w", encoding="utf-8") as f:
            f.write(" | ".join(titles) + "\n")
