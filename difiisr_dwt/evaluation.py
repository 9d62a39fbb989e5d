"""Paired evaluation of x4 super-resolution: file pairing, the DifIISR/M3FD LR protocol, per-image metrics, and
the reports ``difiisr-dwt eval`` writes (markdown table, JSON, CSV, comparison grid)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
import PIL.ImageDraw

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import IMAGE_SUFFIXES, read_file_list, read_image, save_image_atomic, write_text_atomic

if TYPE_CHECKING:  # torch only for annotations: importing it would add seconds to `difiisr-dwt eval --help`
    import torch

SCALE = 4


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is reported: its column title, number format, unit and which direction is better."""

    title: str
    fmt: str
    higher_is_better: bool
    unit: str | None = None

    @property
    def heading(self) -> str:
        """The title with unit and direction, e.g. ``PSNR_Y (dB) ↑``."""
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.title}{unit} {'↑' if self.higher_is_better else '↓'}"


#: Every metric this package reports, in table order; the keys are those of ``eval --json`` and ``--metrics``.
METRICS: dict[str, MetricInfo] = {
    "psnr_y": MetricInfo("PSNR_Y", "{:.2f}", higher_is_better=True, unit="dB"),
    "ssim_y": MetricInfo("SSIM_Y", "{:.4f}", higher_is_better=True),
    "lpips_alex": MetricInfo("LPIPS-alex", "{:.4f}", higher_is_better=False),
    "lpips_vgg": MetricInfo("LPIPS-vgg", "{:.4f}", higher_is_better=False),
    # Fidelity to the input (need the LR): what a thermal user must be able to trust.
    "lr_error": MetricInfo("LR error", "{:.3f}", higher_is_better=False, unit="grey levels"),
    "mean_shift": MetricInfo("Level drift", "{:.3f}", higher_is_better=False, unit="grey levels"),
}
#: Metrics measured against the LR input rather than the HR (see :func:`fidelity_metrics`).
FIDELITY_METRICS = ("lr_error", "mean_shift")

# What LR / SR file names may add to the HR stem: "x4", "_x4", "_LRx4", "_bicx4", "_SR_x4", "_LR", "_sr"...
# "a_x4", "a_LRx4", "a_sr", and "a_out" (Real-ESRGAN's inference_realesrgan.py writes NAME_out by default)
_PAIR_SUFFIX = re.compile(r"^(?:[_\-.]?(?:lr|sr|bic|lrbic)?[_\-]?x4|[_\-.](?:lr|sr|out))$", re.IGNORECASE)
_8BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")


class EvaluationError(UsageError):
    """Inputs that cannot be evaluated as given: missing pairs, size mismatches, unusable images."""


@dataclass(frozen=True)
class MetricSettings:
    """How :func:`image_metrics` measures a pair of images.

    Args:
        metrics: keys of :data:`METRICS`.
        crop_border: pixels removed from each side before measuring.
        lpips_backbone_dir: folder of LPIPS backbone weights (see :func:`difiisr_dwt.metrics.load_lpips`).
        device: where LPIPS runs; ``None`` is the CPU.
    """

    metrics: tuple[str, ...] = tuple(METRICS)
    crop_border: int = 0
    lpips_backbone_dir: str | os.PathLike | None = None
    device: str | torch.device | None = None


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
        names = read_file_list(file_list)
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
    by_stem: dict[str, Path] = {}
    for path in paths:  # results, saved LR, --lr / --sr partners and noise seeds all go by the name
        other = by_stem.setdefault(path.stem, path)
        if other != path:
            raise EvaluationError(f"{other.relative_to(hr_dir)} and {path.relative_to(hr_dir)} share the name "
                                  f"{path.stem!r}: results, --save-lr files and --lr / --sr partners are matched by "
                                  "name; evaluate them in separate runs")
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


@dataclass(frozen=True)
class SensorNoise:
    """Sensor noise added to an 8-bit LR image: the noisy protocol of ``difiisr-dwt eval --noisy-lr``.

    The recipe, per LR image (after PIL bicubic /4 of the mod-cropped HR):

    1. ``rng = numpy.random.default_rng([seed, zlib.crc32(file name as UTF-8)])``: one stream per image,
       so an image's noise does not depend on the order, ``--limit`` or ``--file-list``;
    2. ``n = rng.normal(0, sigma, (h, w))`` (temporal noise), then ``c = rng.normal(0, column_sigma, w)``
       (a fixed-pattern offset per column, constant down the column: the stripes of uncooled
       microbolometers);
    3. ``LR' = round(clip(LR + n + c[None, :], 0, 255))`` as uint8; every channel of an RGB image gets the
       same field (a grey image stored as RGB stays grey).

    Args:
        sigma: standard deviation of the per-pixel Gaussian noise, in 8-bit grey levels.
        column_sigma: standard deviation of the per-column offsets, in grey levels.
        seed: the first word of every image's seed.
    """

    sigma: float = 2.0
    column_sigma: float = 1.5
    seed: int = 0

    def __post_init__(self):
        if not (np.isfinite(self.sigma) and self.sigma >= 0 and np.isfinite(self.column_sigma)
                and self.column_sigma >= 0):
            raise EvaluationError(
                f"noise sigmas must be finite and >= 0, got {self.sigma} and {self.column_sigma}"
            )

    def field(self, name: str, height: int, width: int) -> np.ndarray:
        """The `(height, width)` float64 noise (grey levels) of the image called ``name``."""
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8"))])
        noise = rng.normal(0.0, self.sigma, (height, width))
        return noise + rng.normal(0.0, self.column_sigma, width)[None, :]

    def __call__(self, lr: PIL.Image.Image, name: str) -> PIL.Image.Image:
        """``lr`` (mode ``L`` or ``RGB``, 8-bit) with the noise of the image ``name``, same mode."""
        array = np.asarray(lr, dtype=np.float64)
        noise = self.field(name, lr.height, lr.width)
        noisy = array + (noise[:, :, None] if array.ndim == 3 else noise)
        return PIL.Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8), lr.mode)


def back_projection_baseline(lr: PIL.Image.Image, iterations: int = 10, scale: int = SCALE) -> PIL.Image.Image:
    """Classical iterative back-projection (Irani & Peleg, 1991) from the bicubic upscale, no model:
    ``SR_0 = up(LR)``, then ``iterations`` rounds of ``SR += up(LR - down(SR))`` with the pipeline's
    PIL-style bicubic ``up`` / ``down``; each channel on its own; rounded to 8 bit."""
    import torch

    from difiisr_dwt.pipelines.fidelity import back_project
    from difiisr_dwt.pipelines.image_processor import bicubic_resize

    array = np.asarray(lr, dtype=np.float32)
    tensor = torch.from_numpy(array[:, :, None] if array.ndim == 2 else array).permute(2, 0, 1)[None] / 127.5 - 1
    sr = bicubic_resize(tensor, (lr.height * scale, lr.width * scale))
    sr = back_project(sr, tensor, iterations).clamp_(-1, 1)
    out = sr[0].permute(1, 2, 0).add(1).mul(127.5).round().to(torch.uint8).numpy()
    return PIL.Image.fromarray(out[:, :, 0] if array.ndim == 2 else out, lr.mode)


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
    sr: np.ndarray, hr: np.ndarray, settings: MetricSettings = MetricSettings(), lr: np.ndarray | None = None
) -> dict[str, float]:
    """The metrics of ``settings`` for one SR image against its HR image (and its LR input).

    Args:
        sr: `(H, W, 3)` uint8 restored image.
        hr: `(H, W, 3)` uint8 ground truth.
        settings: which metrics, border crop, LPIPS weights and device.
        lr: `(H/4, W/4, 3)` uint8 input; the fidelity metrics (:data:`FIDELITY_METRICS`) are measured
            only when it is given.

    Returns:
        ``{metric key: value}`` in the order of ``settings.metrics``: PSNR in dB (``inf`` for identical
        images), SSIM in [-1, 1], LPIPS distances (lower is more similar), fidelity metrics in grey levels.
    """
    from difiisr_dwt import metrics as m  # torch: loaded on first use, so the CLI starts fast

    border = settings.crop_border
    results = {}
    for name in settings.metrics:
        if name == "psnr_y":
            results[name] = m.psnr_y(sr, hr, border)
        elif name == "ssim_y":
            results[name] = m.ssim_y(sr, hr, border)
        elif name in FIDELITY_METRICS:
            if lr is not None:
                results[name] = fidelity_metrics(sr, lr)[name]
        else:
            if border:
                sr_c, hr_c = sr[border:-border, border:-border], hr[border:-border, border:-border]
            else:
                sr_c, hr_c = sr, hr
            results[name] = m.lpips_distance(sr_c, hr_c, name.split("_")[1], settings.lpips_backbone_dir,
                                             settings.device)
    return results


def fidelity_metrics(sr: np.ndarray, lr: np.ndarray) -> dict[str, float]:
    """How far an x4 output strays from its input, in the image's own grey levels (full-range BT.601
    luma, which is the grey level itself for grey images; not the BasicSR Y of PSNR, whose scale is 0.86).

    ``lr_error``: mean ``|bicubic_down(SR) - LR|`` (PIL bicubic /4, the protocol's degradation);
    ``mean_shift``: ``|mean(SR) - mean(bicubic_up(LR))|``, a global level drift.

    Args:
        sr: `(H, W, 3)` uint8; lr: `(H/4, W/4, 3)` uint8 (an SR up to 3 pixels larger, as for an HR whose sides
            are not multiples of 4, is measured on its top-left `(4h, 4w)`, the part the LR was made from).
    """
    def luma(image: np.ndarray) -> np.ndarray:
        return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    down = np.asarray(bicubic_down(PIL.Image.fromarray(sr[: lr.shape[0] * SCALE, : lr.shape[1] * SCALE])))
    up = np.asarray(bicubic_up(PIL.Image.fromarray(lr)))
    return {
        "lr_error": float(np.abs(luma(down) - luma(lr)).mean()),
        "mean_shift": float(abs(luma(sr).mean() - luma(up).mean())),
    }


def method_summary(per_image: dict[str, dict[str, float]]) -> dict[str, object]:
    """``{"mean": {metric: mean}, "max": {metric: max}, "images": per_image}`` of one method's
    per-image metrics. ``max`` is the largest value of each metric: the worst image for the fidelity metrics
    and LPIPS (a claim such as "no image drifts" is about it), the best for PSNR and SSIM."""
    names = next(iter(per_image.values())).keys() if per_image else []
    mean = {k: float(np.mean([v[k] for v in per_image.values()])) for k in names}
    worst = {k: float(np.max([v[k] for v in per_image.values()])) for k in names}
    return {"mean": mean, "max": worst, "images": per_image}


# ----------------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------------


def _format(metric: str, value: float) -> str:
    return METRICS[metric].fmt.format(value)


def markdown_table(results: dict[str, dict], per_image: bool = True) -> str:
    """Per-image rows (optional) and one mean row per method, as a GitHub markdown table."""
    methods = list(results)
    metrics = list(next(iter(results.values()))["mean"]) if results else []
    header = "| image | method | " + " | ".join(METRICS[m].title for m in metrics) + " |"
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


def to_json(results: dict[str, dict], protocols: dict[str, dict] | None = None) -> str:
    """``{method: {"mean": {...}, "max": {...}, "images": {name: {...}}, "protocol": {...}}}``; non-finite PSNR
    (identical images) as ``null``. ``protocols`` (``eval --json``: the images, the LR, for the model its
    weights and settings) goes into each method's object as it is."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value if np.isfinite(value) else None

    protocols = protocols or {}
    return json.dumps({method: {**clean(result), **({"protocol": protocols[method]} if method in protocols else {})}
                       for method, result in results.items()}, indent=2) + "\n"


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


def image_grid(rows: Sequence[Sequence[np.ndarray]]) -> PIL.Image.Image:
    """Whole images side by side, one row per item: every `(H, W, 3)` uint8 image is resized with nearest
    neighbour to the first image's size, so that LR pixels stay visible.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    height, width = rows[0][0].shape[:2]
    grid = PIL.Image.new("RGB", (width * max(len(r) for r in rows), height * len(rows)))
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            tile = PIL.Image.fromarray(image)
            if tile.size != (width, height):
                tile = tile.resize((width, height), PIL.Image.NEAREST)
            grid.paste(tile, (j * width, i * height))
    return grid


def save_grid(grid: PIL.Image.Image, path: str | os.PathLike, titles: Sequence[str] | None = None) -> None:
    """Save a grid (:func:`comparison_grid`, :func:`image_grid`) atomically; ``titles`` (its columns), when
    given, go to ``<path>.txt`` as one ``" | "``-separated line."""
    save_image_atomic(grid, path)
    if titles:
        write_text_atomic(" | ".join(titles) + "\n", f"{path}.txt")


# ----------------------------------------------------------------------------------------------------------------
# The evaluation loop
# ----------------------------------------------------------------------------------------------------------------


#: Methods computed from the LR in this process (``sr`` is read from files).
LR_METHODS = ("bicubic", "back_projection", "model")
#: Rounds of the classical back-projection baseline (:func:`back_projection_baseline`).
BACK_PROJECTION_ROUNDS = 10


def make_lr(
    hr_image: PIL.Image.Image, name: str, noise: SensorNoise | None = None
) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """``(mod-cropped HR, LR)`` by the protocol: PIL bicubic /4, then ``noise`` (:class:`SensorNoise`) if given."""
    hr_image = modcrop(hr_image)
    lr_image = bicubic_down(hr_image)
    return hr_image, (lr_image if noise is None else noise(lr_image, name))


def evaluate(
    hr_paths: list[Path],
    methods: list[str],
    *,
    lr_paths: list[Path] | None = None,
    sr_paths: list[Path] | None = None,
    upscale: Callable[[PIL.Image.Image], PIL.Image.Image] | None = None,
    settings: MetricSettings = MetricSettings(),
    grid_images: int = 0,
    progress: Callable[[Iterable], Iterable] = iter,
    lr_noise: SensorNoise | None = None,
    save_lr_dir: Path | None = None,
) -> tuple[dict[str, dict], list[tuple[str, dict[str, np.ndarray]]]]:
    """Measure each method on every HR image; every method gets the same LR, metrics are against the clean HR.

    Args:
        hr_paths: HR files.
        methods: ``"bicubic"`` (PIL bicubic x4 of LR), ``"back_projection"`` (:func:`back_projection_baseline`),
            ``"model"`` (``upscale(LR)``) and/or ``"sr"``.
        lr_paths: paired LR files, or ``None`` to make LR from HR (:func:`make_lr`).
        sr_paths: paired SR files (method ``"sr"``), or ``None``.
        upscale: the model, LR PIL image -> x4 PIL image.
        settings: what :func:`image_metrics` measures and how.
        grid_images: keep the images of the first this many pairs for :func:`comparison_grid`.
        progress: wraps the pair iterator (a progress bar).
        lr_noise: sensor noise added to the LR made from HR (:class:`SensorNoise`); only without ``lr_paths``.
        save_lr_dir: write every LR made from HR there as ``<HR stem>.png`` (8-bit, atomic), for other tools.

    Returns:
        ``({method: {"mean": ..., "images": ...}}, grid rows)``.

    Raises:
        EvaluationError: an image that cannot be paired by size, a model output of the wrong size, or
            ``lr_noise`` / ``save_lr_dir`` with ``lr_paths``.
    """
    if lr_paths is not None and (lr_noise is not None or save_lr_dir is not None):
        raise EvaluationError("noisy LR and saving LR apply to LR made from HR; they cannot go with --lr")
    per_method: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    grid_rows = []
    needs_lr = bool(set(LR_METHODS) & set(methods)) or save_lr_dir is not None
    for index in progress(range(len(hr_paths))):
        hr_path = hr_paths[index]
        hr_image = full_hr = load_8bit(hr_path)
        if 2 * settings.crop_border >= min(modcrop(hr_image).size):  # found before any method runs
            raise EvaluationError(f"{hr_path.name}: --crop-border {settings.crop_border} removes the whole "
                                  f"{hr_image.width}x{hr_image.height} image")
        lr_image = None
        if needs_lr:
            if lr_paths is None:
                hr_image, lr_image = make_lr(hr_image, hr_path.name, lr_noise)
                if save_lr_dir is not None:
                    save_image_atomic(lr_image, save_lr_dir / f"{hr_path.stem}.png")
            else:
                lr_image = load_8bit(lr_paths[index])
                expected = (lr_image.width * SCALE, lr_image.height * SCALE)
                hr_image = match_hr(hr_image, expected, f"LR {lr_paths[index].name} x{SCALE}", hr_path)
        outputs = {}
        for method in methods:
            if method == "bicubic":
                outputs[method] = bicubic_up(lr_image)
            elif method == "back_projection":
                outputs[method] = back_projection_baseline(lr_image, BACK_PROJECTION_ROUNDS)
            elif method == "model":
                outputs[method] = upscale(lr_image)
                if outputs[method].size != hr_image.size:
                    raise EvaluationError(
                        f"{hr_path.name}: the model returned {outputs[method].width}x{outputs[method].height}, "
                        f"HR is {hr_image.width}x{hr_image.height}"
                    )
            else:
                sr_image = load_8bit(sr_paths[index])
                match_hr(full_hr, sr_image.size, f"SR {sr_paths[index].name}", hr_path)  # full size or mod-cropped
                # every method is measured on the mod-cropped HR, whatever the SR's size (BasicSR's mod_crop)
                hr_image = modcrop(full_hr)
                outputs[method] = sr_image.crop((0, 0, *hr_image.size))
        hr_array = to_rgb_array(hr_image)
        arrays = {method: to_rgb_array(image) for method, image in outputs.items()}
        if lr_image is None and lr_paths is None:
            # results measured alone: the protocol's LR (noisy if asked) of the mod-cropped HR, for the fidelity
            # metrics (measured on the part of the SR that LR was made from)
            _, lr_image = make_lr(hr_image, hr_path.name, lr_noise)
        lr_array = None if lr_image is None else to_rgb_array(lr_image)
        for method, array in arrays.items():
            per_method[method][hr_path.name] = image_metrics(array, hr_array, settings, lr=lr_array)
        if index < grid_images:
            grid_rows.append((hr_path.stem, {**arrays, "HR": hr_array}))
    return {method: method_summary(values) for method, values in per_method.items()}, grid_rows
