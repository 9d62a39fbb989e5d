"""Paired evaluation of x4 super-resolution: file pairing, the DifIISR/M3FD LR protocol, per-image metrics, and
the reports ``difiisr-dwt eval`` writes (markdown table, JSON, CSV, comparison grid)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import IMAGE_SUFFIXES, read_image, save_image_atomic

SCALE = 4
METRICS = ("psnr_y", "ssim_y", "lpips_alex", "lpips_vgg")
METRIC_TITLES = {"psnr_y": "PSNR_Y", "ssim_y": "SSIM_Y", "lpips_alex": "LPIPS-alex", "lpips_vgg": "LPIPS-vgg"}
_METRIC_FORMATS = {"psnr_y": "{:.2f}", "ssim_y": "{:.4f}", "lpips_alex": "{:.4f}", "lpips_vgg": "{:.4f}"}

# What LR / SR file names may add to the HR stem: "x4", "_x4", "_LRx4", "_bicx4", "_SR_x4", "_LR", "_sr"...
_PAIR_SUFFIX = re.compile(r"^(?:[_\-.]?(?:lr|sr|bic|lrbic)?[_\-]?x4|[_\-.](?:lr|sr))$", re.IGNORECASE)
_8BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")


class EvaluationError(UsageError):
    """Inputs that cannot be evaluated as given: missing pairs, size mismatches, unusable images."""


@dataclass
class Pair:
    """One HR image and the file paired with it in another folder (``None`` when made on the fly)."""

    name: str
    hr: Path
    other: Path | None = None


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------


def list_hr(hr_dir: Path, file_list: Path | None = None, limit: int | None = None) -> list[Path]:
    """HR image files of ``hr_dir`` in sorted order, restricted to the names in ``file_list`` (one per line)."""
    if not hr_dir.is_dir():
        raise EvaluationError(f"--hr {hr_dir}: not a folder")
    if file_list is not None:
        if not file_list.is_file():
            raise EvaluationError(f"--file-list {file_list}: no such file")
        names = [line.strip() for line in file_list.read_text().splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
        missing = [n for n in names if not (hr_dir / n).is_file()]
        if missing:
            raise EvaluationError(
                f"{len(missing)} file(s) of {file_list} are not in {hr_dir}: {_preview(missing)}"
            )
        paths = [hr_dir / n for n in names]
    else:
        paths = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise EvaluationError(f"no HR images found in {hr_dir}")
    return paths


def pair_files(hr_paths: list[Path], other_dir: Path, what: str) -> list[Path]:
    """For each HR file, the file of ``other_dir`` with the same stem, or the stem plus a suffix such as ``x4``.

    Args:
        hr_paths: HR files.
        other_dir: folder of LR or SR images.
        what: the option naming ``other_dir`` (``"--lr"``/``"--sr"``), for messages.

    Raises:
        EvaluationError: the folder is missing, some HR image has no partner (all are listed), or more than one.
    """
    if not other_dir.is_dir():
        raise EvaluationError(f"{what} {other_dir}: not a folder")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(other_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            by_stem.setdefault(path.stem, []).append(path)
    hr_stems = {p.stem for p in hr_paths}
    partners, missing = [], []
    for hr in hr_paths:
        candidates = by_stem.get(hr.stem) or [
            path
            for stem, paths in by_stem.items()
            if stem.startswith(hr.stem) and stem not in hr_stems and _PAIR_SUFFIX.match(stem[len(hr.stem):])
            for path in paths
        ]
        if not candidates:
            missing.append(hr.name)
        elif len(candidates) > 1:
            raise EvaluationError(
                f"{hr.name}: several candidates in {what} {other_dir}: {', '.join(p.name for p in candidates)}"
            )
        else:
            partners.append(candidates[0])
    if missing:
        raise EvaluationError(
            f"{len(missing)} of {len(hr_paths)} HR image(s) have no partner in {what} {other_dir} "
            f"(expected the same name, optionally with a suffix such as x4 / _x4 / _LRx4): {_preview(missing)}"
        )
    return partners


def _preview(names: list[str], count: int = 5) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" ... (+{len(names) - count} more)" if len(names) > count else "")


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


def load_8bit(path: Path) -> PIL.Image.Image:
    """An 8-bit image (``L`` or ``RGB``) for metrics; 16-bit files are refused (their range is not defined)."""
    image = read_image(path)
    if image.mode not in _8BIT_MODES:
        raise EvaluationError(
            f"{path}: mode {image.mode} is not an 8-bit image; metrics here are defined on 8-bit L/RGB images"
        )
    return image if image.mode in ("L", "RGB") else image.convert("RGB" if len(image.getbands()) >= 3 else "L")


def modcrop(image: PIL.Image.Image, scale: int = SCALE) -> PIL.Image.Image:
    """Crop the right / bottom edge so both sides are multiples of ``scale`` (BasicSR ``mod_crop``)."""
    width, height = image.width - image.width % scale, image.height - image.height % scale
    if width == 0 or height == 0:
        raise EvaluationError(f"image of size {image.width}x{image.height} is smaller than the x{scale} scale")
    return image if (width, height) == image.size else image.crop((0, 0, width, height))


def bicubic_down(hr: PIL.Image.Image, scale: int = SCALE) -> PIL.Image.Image:
    """The DifIISR / M3FD LR protocol: PIL bicubic downsampling of the (mod-cropped) HR image."""
    return hr.resize((hr.width // scale, hr.height // scale), PIL.Image.BICUBIC)


def bicubic_up(lr: PIL.Image.Image, scale: int = SCALE) -> PIL.Image.Image:
    """The bicubic baseline: PIL bicubic x4 upsampling."""
    return lr.resize((lr.width * scale, lr.height * scale), PIL.Image.BICUBIC)


def to_rgb_array(image: PIL.Image.Image) -> np.ndarray:
    """`(H, W, 3)` uint8; grayscale images become three equal channels (the IR convention of the metrics)."""
    return np.asarray(image.convert("RGB"))


def match_hr(hr: PIL.Image.Image, size: tuple[int, int], what: str, hr_path: Path) -> PIL.Image.Image:
    """``hr`` at ``size`` (width, height): unchanged or mod-cropped to a multiple of 4; anything else is an error."""
    if hr.size == size:
        return hr
    cropped = modcrop(hr)
    if cropped.size == size:
        return cropped
    raise EvaluationError(
        f"{hr_path.name}: {what} is {size[0]}x{size[1]} but HR is {hr.width}x{hr.height} "
        f"(expected {hr.width}x{hr.height} or, cropped to a multiple of {SCALE}, {cropped.width}x{cropped.height})"
    )


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"psnr_y,ssim_y"`` -> ``("psnr_y", "ssim_y")`` in canonical order; unknown names are an error."""
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise EvaluationError(f"--metrics: unknown {unknown or text!r}; choose from {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


def image_metrics(
    sr: np.ndarray,
    hr: np.ndarray,
    metrics: Iterable[str] = METRICS,
    crop_border: int = 0,
    lpips_weights: str | os.PathLike | None = None,
    device=None,
) -> dict[str, float]:
    """The requested metrics of one `(H, W, 3)` uint8 SR image against its HR image."""
    from difiisr_dwt import metrics as m

    results = {}
    for name in metrics:
        if name == "psnr_y":
            results[name] = m.psnr_y(sr, hr, crop_border)
        elif name == "ssim_y":
            results[name] = m.ssim_y(sr, hr, crop_border)
        else:
            if crop_border:
                sr_c = sr[crop_border:-crop_border, crop_border:-crop_border]
                hr_c = hr[crop_border:-crop_border, crop_border:-crop_border]
            else:
                sr_c, hr_c = sr, hr
            results[name] = m.lpips_distance(sr_c, hr_c, name.split("_")[1], lpips_weights, device)
    return results


def summarize(per_image: dict[str, dict[str, float]]) -> dict[str, object]:
    """``{"mean": {metric: mean}, "images": per_image}`` for one method."""
    names = next(iter(per_image.values())).keys() if per_image else []
    mean = {k: float(np.mean([v[k] for v in per_image.values()])) for k in names}
    return {"mean": mean, "images": per_image}


# ----------------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------------


def _format(metric: str, value: float) -> str:
    return _METRIC_FORMATS[metric].format(value)


def markdown_table(results: dict[str, dict], per_image: bool = True) -> str:
    """Per-image rows (optional) and one mean row per method, as a GitHub markdown table."""
    methods = list(results)
    metrics = list(next(iter(results.values()))["mean"]) if results else []
    header = "| image | method | " + " | ".join(METRIC_TITLES[m] for m in metrics) + " |"
    lines = [header, "|" + "---|" * (2 + len(metrics))]
    if per_image:
        for name in results[methods[0]]["images"]:
            for method in methods:
                values = results[method]["images"][name]
                lines.append(f"| {name} | {method} | " + " | ".join(_format(m, values[m]) for m in metrics) + " |")
    count = len(results[methods[0]]["images"]) if methods else 0
    for method in methods:
        values = results[method]["mean"]
        lines.append(
            f"| **mean ({count})** | {method} | " + " | ".join(_format(m, values[m]) for m in metrics) + " |"
        )
    return "\n".join(lines)


def to_json(results: dict[str, dict]) -> str:
    """``{method: {"mean": {...}, "images": {name: {...}}}}``; non-finite PSNR (identical images) as ``null``."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value if np.isfinite(value) else None

    return json.dumps(clean(results), indent=2) + "\n"


def to_csv(results: dict[str, dict]) -> str:
    """One row per (method, image) and a ``mean`` row per method."""
    metrics = list(next(iter(results.values()))["mean"]) if results else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "image", *metrics])
    for method, result in results.items():
        for name, values in result["images"].items():
            writer.writerow([method, name, *(repr(values[m]) for m in metrics)])
        writer.writerow([method, "mean", *(repr(result["mean"][m]) for m in metrics)])
    return buffer.getvalue()


def detail_crop(hr: np.ndarray, size: int) -> tuple[int, int, int]:
    """``(top, left, size)`` of the ``size`` square of ``hr`` with the most detail (largest grey-level std)."""
    height, width = hr.shape[:2]
    size = min(size, height, width)
    grey = hr.astype(np.float64).mean(axis=2)
    step = max(size // 2, 1)
    best, best_std = (0, 0), -1.0
    for top in range(0, height - size + 1, step):
        for left in range(0, width - size + 1, step):
            std = grey[top : top + size, left : left + size].std()
            if std > best_std:
                best, best_std = (top, left), std
    return best[0], best[1], size


def comparison_grid(
    rows: list[tuple[str, dict[str, np.ndarray]]], crop: int = 128, zoom: int = 2, label_height: int = 18
) -> PIL.Image.Image:
    """Crops side by side: one row per image, one column per method plus ``HR`` (its crop has the most detail).

    Args:
        rows: ``(image name, {column title: (H, W, 3) uint8})``; every row has the same titles in the same order.
        crop: crop side in HR pixels.
        zoom: nearest-neighbour magnification of each crop, so that the textures stay visible.
        label_height: pixels of the title band above each cell.
    """
    titles = list(rows[0][1])
    cells = []
    for name, images in rows:
        top, left, size = detail_crop(images["HR"], crop)
        row = []
        for title in titles:
            patch = PIL.Image.fromarray(images[title][top : top + size, left : left + size])
            row.append((f"{title} | {name}" if title == titles[0] else title, patch.resize(
                (size * zoom, size * zoom), PIL.Image.NEAREST)))
        cells.append(row)
    cell = max(patch.width for row in cells for _, patch in row)  # images smaller than ``crop`` give smaller crops
    grid = PIL.Image.new("RGB", (cell * len(titles), (cell + label_height) * len(rows)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    for r, row in enumerate(cells):
        for c, (label, patch) in enumerate(row):
            x, y = c * cell, r * (cell + label_height)
            draw.text((x + 3, y + 3), label, fill="black")
            grid.paste(patch, (x, y + label_height))
    return grid


def save_grid(rows: list[tuple[str, dict[str, np.ndarray]]], path: str | os.PathLike) -> None:
    save_image_atomic(comparison_grid(rows), path)


# ----------------------------------------------------------------------------------------------------------------
# The evaluation loop
# ----------------------------------------------------------------------------------------------------------------


def evaluate(
    hr_paths: list[Path],
    lr_paths: list[Path] | None,
    sr_paths: list[Path] | None,
    methods: list[str],
    upscale: Callable[[PIL.Image.Image], PIL.Image.Image] | None = None,
    metrics: tuple[str, ...] = METRICS,
    crop_border: int = 0,
    lpips_weights: str | os.PathLike | None = None,
    device=None,
    grid_images: int = 0,
    progress: Callable[[Iterable], Iterable] = iter,
) -> tuple[dict[str, dict], list[tuple[str, dict[str, np.ndarray]]]]:
    """Measure each method on every HR image.

    Args:
        hr_paths: HR files.
        lr_paths: paired LR files, or ``None`` to make LR from HR (mod-crop to a multiple of 4, PIL bicubic /4).
        sr_paths: paired SR files (method ``"sr"``), or ``None``.
        methods: ``"bicubic"`` (PIL bicubic x4 of LR), ``"model"`` (``upscale(LR)``) and/or ``"sr"``.
        upscale: the model, LR PIL image -> x4 PIL image.
        metrics: names from :data:`METRICS`.
        crop_border: pixels removed from each side before measuring.
        lpips_weights: LPIPS backbone folder (see :func:`difiisr_dwt.metrics.load_lpips`).
        device: LPIPS device.
        grid_images: keep the images of the first this many pairs for :func:`comparison_grid`.
        progress: wraps the pair iterator (a progress bar).

    Returns:
        ``({method: {"mean": ..., "images": ...}}, grid rows)``.
    """
    per_method: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    grid_rows = []
    for index in progress(range(len(hr_paths))):
        hr_path = hr_paths[index]
        hr_image = load_8bit(hr_path)
        lr_image = None
        if {"bicubic", "model"} & set(methods):
            if lr_paths is None:
                hr_image = modcrop(hr_image)
                lr_image = bicubic_down(hr_image)
            else:
                lr_image = load_8bit(lr_paths[index])
                expected = (lr_image.width * SCALE, lr_image.height * SCALE)
                hr_image = match_hr(hr_image, expected, f"LR {lr_paths[index].name} x{SCALE}", hr_path)
        outputs = {}
        for method in methods:
            if method == "bicubic":
                outputs[method] = bicubic_up(lr_image)
            elif method == "model":
                outputs[method] = upscale(lr_image)
                if outputs[method].size != hr_image.size:
                    raise EvaluationError(
                        f"{hr_path.name}: the model returned {outputs[method].width}x{outputs[method].height}, "
                        f"HR is {hr_image.width}x{hr_image.height}"
                    )
            else:
                outputs[method] = load_8bit(sr_paths[index])
                hr_image = match_hr(hr_image, outputs[method].size, f"SR {sr_paths[index].name}", hr_path)
        hr_array = to_rgb_array(hr_image)
        arrays = {method: to_rgb_array(image) for method, image in outputs.items()}
        for method, array in arrays.items():
            per_method[method][hr_path.name] = image_metrics(array, hr_array, metrics, crop_border, lpips_weights,
                                                             device)
        if index < grid_images:
            grid_rows.append((hr_path.stem, {**arrays, "HR": hr_array}))
    return {method: summarize(values) for method, values in per_method.items()}, grid_rows
