"""Flicker of upscaled video on a synthetic pan, where the true motion is known.

A ``width x height`` window of one infrared image moves ``step`` LR pixels to the right per frame.
Upscaled x4, frame ``k`` should equal frame ``k - 1`` moved by ``4 * step`` pixels: the metric is the
PSNR between the two inside a ``border`` (the content entering at the edge is new), averaged over the
pairs (and the worst pair). Bicubic is exact here (``inf``). A method whose added detail does not move
with the content scores low even if each frame alone is good; a method that adds nothing scores
``inf``, so the table also gives each method's departure from bicubic (PSNR against bicubic x4: lower
means more added detail).

Rows: bicubic; the default image call frame by frame (a fresh prior noise draw fixed to the frame);
the video path (``prior_noise_scale=0``: no noise draw; see :mod:`difiisr_dwt.sequence`); and, as a
diagnosis of what breaks shift-equivariance, the default prior noise attached to the content (one noise
canvas moved with the known motion: possible only when the motion is known) and the video path with a
shift of a whole UNet stride (4 LR pixels per frame: the UNet's stride-2 phases then do not change).

Run: ``python -m difiisr_dwt.benchmarks.flicker [--image PATH] [--json OUT]`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

DEFAULT_IMAGE = "../shared/data/ir/tno/01.png"


def make_pan(image: np.ndarray, frames: int = 12, size: tuple[int, int] = (128, 96), step: int = 1,
             origin: tuple[int, int] = (200, 300)) -> list[np.ndarray]:
    """``frames`` windows of ``size = (width, height)`` of a grey ``image``, the ``k``-th at
    ``origin = (top, left) + (0, k * step)``.

    Raises:
        ValueError: the pan leaves the image.
    """
    top, left = origin
    width, height = size
    if top + height > image.shape[0] or left + (frames - 1) * step + width > image.shape[1]:
        raise ValueError(f"a pan of {frames} frames of {width}x{height} from {origin} leaves the "
                         f"{image.shape[1]}x{image.shape[0]} image")
    return [np.ascontiguousarray(image[top : top + height, left + k * step : left + k * step + width])
            for k in range(frames)]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def shift_psnr(outputs: list[np.ndarray], shift: int, border: int = 16, peak: float = 1.0) -> list[float]:
    """PSNR of each output frame against its predecessor moved left by ``shift`` pixels, inside ``border``.

    Args:
        outputs: `(H, W)` frames (values in ``[0, peak]``) of a pan moving right by ``shift`` output pixels.
    """
    values = []
    for previous, current in zip(outputs, outputs[1:]):
        width = current.shape[1]
        values.append(psnr(current[border:-border, border : width - border - shift],
                           previous[border:-border, border + shift : width - border], peak))
    return values


def bicubic_x4(frame: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(frame.astype(np.float32) / 255)[None, None]
    return F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy()


@contextmanager
def content_attached_noise(pipe, frames: int, step: int, seed: int = 0):
    """Diagnosis only: the prior noise of frame ``k`` is a window of one noise canvas moved with the known
    motion (``k * step`` LR pixels), so that the noise follows the content."""
    state = {"k": 0, "canvas": None}

    def prepare_latents(lr_condition, generator):
        batch, channels, height, width = lr_condition.shape
        if state["canvas"] is None:
            canvas = torch.Generator().manual_seed(seed)
            state["canvas"] = torch.randn(1, channels, height, width + frames * step, generator=canvas)
        offset = state["k"] * step
        state["k"] += batch
        noise = state["canvas"][..., offset : offset + width].expand(batch, -1, -1, -1)
        return pipe.scheduler.prior_sample(lr_condition, noise.to(lr_condition))

    pipe.prepare_latents = prepare_latents
    try:
        yield
    finally:
        del pipe.prepare_latents  # the class's method again


def upscale_pan(pipe, frames: list[np.ndarray], seed: int = 0, **call) -> tuple[list[np.ndarray], float]:
    """Each frame alone (as the CLI does with ``--batch-size 1``), seeded alike; ``(outputs in [0, 1],
    seconds per frame)``."""
    outputs, start = [], time.perf_counter()
    for frame in frames:
        result = pipe(PIL.Image.fromarray(frame), generator=torch.Generator().manual_seed(seed), output_type="np",
                      **call)
        outputs.append(result.images[0][..., 0])
    return outputs, (time.perf_counter() - start) / len(frames)


def measure(pipe, image: np.ndarray, frames: int = 12, border: int = 16) -> list[dict]:
    """The rows of the module's table for ``image`` (grey uint8)."""
    pan = make_pan(image, frames)
    bicubic = [bicubic_x4(f) for f in pan]
    rows = []

    def row(name: str, outputs: list[np.ndarray], seconds: float | None, shift: int = 4, reference=bicubic) -> None:
        as_written = [np.round(o * 255) / 255 for o in outputs]  # the 8-bit frames the CLI writes
        flicker, flicker8 = shift_psnr(outputs, shift, border), shift_psnr(as_written, shift, border)
        rows.append({"method": name, "flicker_psnr_mean": float(np.mean(flicker)), "flicker_psnr_min": min(flicker),
                     "flicker_psnr_8bit_mean": float(np.mean(flicker8)),
                     "vs_bicubic_psnr": float(np.mean([psnr(o, b) for o, b in zip(outputs, reference)])),
                     "seconds_per_frame": seconds})
        print(_format_row(rows[-1]), flush=True)

    row("bicubic x4", bicubic, None)
    outputs, seconds = upscale_pan(pipe, pan)
    row("default call per frame (prior_noise_scale=1)", outputs, seconds)
    outputs, seconds = upscale_pan(pipe, pan, prior_noise_scale=0.0)
    row("video path (prior_noise_scale=0)", outputs, seconds)
    with content_attached_noise(pipe, frames, step=1):
        outputs, seconds = upscale_pan(pipe, pan)
    row("diagnosis: prior noise moved with the known motion", outputs, seconds)
    coarse = make_pan(image, frames // 2, step=4)
    outputs, seconds = upscale_pan(pipe, coarse, prior_noise_scale=0.0)
    row("diagnosis: video path, 4 LR px per frame (one UNet stride)", outputs, seconds, shift=16,
        reference=[bicubic_x4(f) for f in coarse])
    return rows


def _format_row(row: dict) -> str:
    seconds = "" if row["seconds_per_frame"] is None else f"{row['seconds_per_frame']:.2f}"
    return (f"| {row['method']} | {row['flicker_psnr_mean']:.2f} | {row['flicker_psnr_min']:.2f} | "
            f"{row['flicker_psnr_8bit_mean']:.2f} | {row['vs_bicubic_psnr']:.2f} | {seconds} |")


HEADER = ("| method | flicker PSNR, mean (dB) ↑ | worst pair (dB) | 8-bit output, mean (dB) | departure from bicubic "
          "(PSNR vs bicubic, dB; lower = more added detail) | s / frame |\n|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> list[dict]:
    from difiisr_dwt.loading import load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"grey source of the pan (default {DEFAULT_IMAGE})")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    image = np.asarray(PIL.Image.open(args.image).convert("L"))
    print(f"pan: {args.frames} frames of 128x96 from {args.image} at (200, 300), 1 LR px per frame; x4; "
          "border 16 px\n" + HEADER)
    rows = measure(pipe, image, args.frames)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
