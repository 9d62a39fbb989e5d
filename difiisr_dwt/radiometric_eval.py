"""Temperature fidelity of x4 upscaling on radiometric frames, measured in the input's units.

``difiisr-dwt eval --hr FOLDER`` takes this path when the HR files are radiometric (16-bit counts or float
temperature TIFFs, FLIR R-JPEGs; see :func:`difiisr_dwt.radiometric.read_radiometric`): HR = the frame
(mod-cropped to a multiple of 4), LR = its bicubic /4 in float (the pipeline's own degradation, PIL-style
antialiased bicubic, no rounding), and every number is in counts or kelvin (a difference of degrees Celsius
is one of kelvin), not in 8-bit grey levels:

- ``lr_error``: mean ``|bicubic_down(SR) - LR|``, the LR-consistency;
- ``mean_shift``: ``|mean(SR) - mean(bicubic_up(LR))|``, a global drift of the level;
- ``hr_mae`` / ``hr_rmse``: mean absolute and root-mean-square error against the radiometric HR;
- ``detail_rms``: :func:`difiisr_dwt.metrics.high_frequency_rms` of the output (bicubic's is the floor of
  a smooth result; the HR's is the true detail).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from difiisr_dwt.evaluation import EvaluationError, method_summary
from difiisr_dwt.metrics import high_frequency_rms
from difiisr_dwt.radiometric import frame_value_range, read_radiometric

SCALE = 4

#: name -> (title, number format, higher is better); the unit is the input's, given per run.
RADIOMETRIC_METRICS = {
    "lr_error": ("LR error", "{:.4f}", False),
    "mean_shift": ("Level drift", "{:.4f}", False),
    "hr_mae": ("MAE vs HR", "{:.4f}", False),
    "hr_rmse": ("RMSE vs HR", "{:.4f}", False),
    "detail_rms": ("Detail RMS", "{:.4f}", None),
}


def resize_float(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL-style bicubic resize (Keys a = -0.5, antialiased when shrinking) of an `(H, W)` array to
    ``size`` = ``(height, width)``, in float64, unrounded: the pipeline's degradation and bicubic baseline."""
    import torch

    from difiisr_dwt.pipelines.image_processor import bicubic_resize

    tensor = torch.from_numpy(np.asarray(frame, dtype=np.float64))[None, None]
    return bicubic_resize(tensor, size)[0, 0].numpy()


def bicubic_down(frame: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """``frame`` / ``scale`` by :func:`resize_float` (the sides must be multiples of ``scale``)."""
    return resize_float(frame, (frame.shape[0] // scale, frame.shape[1] // scale))


def bicubic_up(frame: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """``frame`` x ``scale`` by :func:`resize_float`: the bicubic baseline."""
    return resize_float(frame, (frame.shape[0] * scale, frame.shape[1] * scale))


def radiometric_metrics(sr: np.ndarray, lr: np.ndarray, hr: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of :data:`RADIOMETRIC_METRICS` for one `(4h, 4w)` output ``sr`` of the `(h, w)` input
    ``lr`` (and its `(4h, 4w)` ground truth ``hr``), all arrays in the same units."""
    sr, lr = np.asarray(sr, np.float64), np.asarray(lr, np.float64)
    if sr.shape != (lr.shape[0] * SCALE, lr.shape[1] * SCALE):
        raise EvaluationError(
            f"output is {sr.shape[1]}x{sr.shape[0]}, expected x{SCALE} of {lr.shape[1]}x{lr.shape[0]}"
        )
    results = {
        "lr_error": float(np.abs(bicubic_down(sr) - lr).mean()),
        "mean_shift": float(abs(sr.mean() - bicubic_up(lr).mean())),
    }
    if hr is not None:
        difference = sr - np.asarray(hr, np.float64)
        results["hr_mae"] = float(np.abs(difference).mean())
        results["hr_rmse"] = float(np.sqrt(np.mean(difference**2)))
    results["detail_rms"] = high_frequency_rms(sr)
    return results


def load_radiometric_hr(path: Path) -> tuple[np.ndarray, str]:
    """The first frame of a radiometric file, float64 and mod-cropped to a multiple of 4, and its unit label.

    Raises:
        EvaluationError: not a radiometric file, or smaller than 4x4.
    """
    image = read_radiometric(path)
    if image is None:
        raise EvaluationError(f"{path}: not a radiometric file (16-bit or float TIFF, FLIR R-JPEG); the HR folder "
                              "mixes radiometric and ordinary images")
    frame = image.frames[0].astype(np.float64)
    height, width = frame.shape[0] - frame.shape[0] % SCALE, frame.shape[1] - frame.shape[1] % SCALE
    if not height or not width:
        raise EvaluationError(f"{path}: {frame.shape[1]}x{frame.shape[0]} is smaller than the x{SCALE} scale")
    return frame[:height, :width], image.units_label


def evaluate_radiometric(
    hr_paths: list[Path],
    methods: list[str],
    upscale: Callable[[np.ndarray, tuple[float, float]], np.ndarray] | None = None,
    value_range: tuple[float, float] | None = None,
    progress: Callable[[Iterable], Iterable] = iter,
) -> tuple[dict[str, dict], str]:
    """Measure ``"bicubic"`` and/or ``"model"`` on every radiometric HR frame, in its units.

    Args:
        hr_paths: radiometric files (their first frame is the HR).
        methods: ``"bicubic"`` and/or ``"model"``.
        upscale: the model: ``(lr, value_range) -> sr``, float arrays in the input's units.
        value_range: the fixed mapping for the model (``--range``), or ``None``: each LR by its own min and max.
        progress: wraps the frame iterator (a progress bar).

    Returns:
        ``({method: {"mean", "max", "images"}}, unit)`` with ``unit`` ``"counts"`` or ``"K"``.

    Raises:
        EvaluationError: a non-radiometric HR, HR files of different units, an unknown method.
    """
    unknown = set(methods) - {"bicubic", "model"}
    if unknown:
        raise EvaluationError(f"radiometric evaluation measures bicubic and the model, not {sorted(unknown)}")
    per_method: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    units = set()
    for index in progress(range(len(hr_paths))):
        hr, unit = load_radiometric_hr(hr_paths[index])
        units.add(unit)
        lr = bicubic_down(hr)
        for method in methods:
            if method == "bicubic":
                sr = bicubic_up(lr)
            else:
                sr = upscale(lr, value_range or frame_value_range(lr))
            per_method[method][hr_paths[index].name] = radiometric_metrics(sr, lr, hr)
    if len(units) > 1:
        raise EvaluationError(f"the HR files mix units ({', '.join(sorted(units))}); evaluate them separately")
    return {m: method_summary(v) for m, v in per_method.items()}, units.pop()


def pipeline_upscaler(pipe, seed: int, **call_options) -> Callable[[np.ndarray, tuple[float, float]], np.ndarray]:
    """``(lr, value_range) -> sr`` with ``pipe`` (every call seeded with ``seed``), values in the input's units."""
    import torch

    def upscale(lr: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(seed)
        out = pipe(lr.astype(np.float32), generator=generator, output_type="np", value_range=value_range,
                   **call_options)
        return out.images[0, :, :, 0].astype(np.float64)

    return upscale


def markdown_table(results: dict[str, dict], unit: str, per_image: bool = True) -> str:
    """Per-image rows (optional) and a mean row per method; every error in ``unit``."""
    methods = list(results)
    metrics = list(next(iter(results.values()))["mean"]) if results else []

    def heading(name: str) -> str:
        title, _, higher = RADIOMETRIC_METRICS[name]
        return f"{title} ({unit})" + ("" if higher is None else " ↓")

    def row(label: str, method: str, values: dict[str, float]) -> str:
        cells = (RADIOMETRIC_METRICS[m][1].format(values[m]) for m in metrics)
        return f"| {label} | {method} | " + " | ".join(cells) + " |"

    lines = ["| image | method | " + " | ".join(heading(m) for m in metrics) + " |", "|" + "---|" * (2 + len(metrics))]
    if per_image and methods:
        for name in results[methods[0]]["images"]:
            lines += [row(name, method, results[method]["images"][name]) for method in methods]
    count = len(results[methods[0]]["images"]) if methods else 0
    lines += [row(f"**mean ({count})**", method, results[method]["mean"]) for method in methods]
    lines += [row(f"**max ({count})**", method, results[method]["max"]) for method in methods]
    return "\n".join(lines)

