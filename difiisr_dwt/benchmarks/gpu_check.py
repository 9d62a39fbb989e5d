"""Checks of a pipeline's accelerator path (``difiisr-dwt bench --section gpu``), one record each: a CUDA
generator repeats itself, a CPU generator gives the same image on CPU and on the device, float16/bfloat16
stay finite and close to float32, model CPU offload matches, plus seconds and peak device memory per call.

    difiisr-dwt bench --section gpu --model hub/difiisr-dwt-tiny --device cuda --json gpu.json

Timings are the fastest of a few calls after a warm-up; they are figures to report, not assertions.
``--device cpu --quick`` runs the same code paths on a CPU (a 64x64 crop, 2 steps, one timed call each,
no offload).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import PIL.Image
import torch

from difiisr_dwt import DEFAULT_MODEL
from difiisr_dwt.benchmarks import BenchConfig
from difiisr_dwt.benchmarks.cost import EXAMPLES
from difiisr_dwt.benchmarks.timing import time_call
from difiisr_dwt.loading import load_pipeline
from difiisr_dwt.metrics import psnr

logger = logging.getLogger(__name__)

EXAMPLE = EXAMPLES / "FLIR_08954_lr.png"


def example_frame() -> PIL.Image.Image:
    """The checkout's 160x128 example frame; an installed package ships none, so there a synthetic 160x128 grey
    frame (smooth blobs and an edge, seeded) stands in: these checks compare the pipeline with itself (devices,
    dtypes, offload) and time it, which needs a frame of that size, not a real scene."""
    if EXAMPLE.is_file():
        with PIL.Image.open(EXAMPLE) as image:
            return image.copy()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:160].astype(np.float64)
    frame = 60 + 40 * (x > 80)
    for cx, cy, r, level in rng.uniform((0, 0, 8, 40), (160, 128, 30, 140), (12, 4)):
        frame = frame + level * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return PIL.Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))


class Checker:
    """Runs ``pipe`` on one image with seed 0 and logs each check as a JSON line as it completes."""

    def __init__(self, pipe, device: str, steps: int = 15, repeats: int = 3):
        self.pipe, self.device, self.steps, self.repeats = pipe, device, steps, repeats
        self.on_cuda = device.startswith("cuda")
        self.records: list[dict] = []

    def show(self, name: str, **values) -> None:
        record = {"check": name, **values}
        self.records.append(record)
        logger.info("gpu: %s", json.dumps(record))

    def run(self, image, generator_device: str | None = None, steps: int | None = None, **kwargs) -> np.ndarray:
        generator = torch.Generator(generator_device or self.device).manual_seed(0)
        return self.pipe(image, num_inference_steps=steps or self.steps, generator=generator, output_type="np",
                         **kwargs).images[0]

    def synced_run(self, image, **kwargs) -> None:
        """One call, waited for: device kernels run asynchronously."""
        self.run(image, **kwargs)
        if self.on_cuda:
            torch.cuda.synchronize()

    def timed(self, image, repeats: int | None = None, **kwargs) -> dict:
        """Fastest of ``repeats`` calls after a warm-up, and the peak device memory of those calls."""
        repeats = min(repeats or self.repeats, self.repeats)
        self.synced_run(image, **kwargs)
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = time_call(lambda: self.synced_run(image, **kwargs), repeats=repeats).minimum
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.on_cuda else None
        return {"seconds": seconds, "peak_mib": peak}


def check(path: str, device: str, quick: bool = False, trust_remote_code: bool = False) -> list[dict]:
    """Run every check on the pipeline at ``path`` (loaded by :func:`~difiisr_dwt.loading.load_pipeline`, so
    its own code files run only with ``trust_remote_code``); returns the logged records."""
    pipe = load_pipeline(path, device="cpu", trust_remote_code=trust_remote_code)
    pipe.set_progress_bar_config(disable=True)
    image = example_frame()
    lr = image.crop((0, 0, 64, 64)) if quick else image
    # A 640x512 LR (2560x2048 output): the size where tiling and half precision matter.
    big = lr if quick else lr.resize((lr.width * 4, lr.height * 4), PIL.Image.BICUBIC)
    c = Checker(pipe, device, steps=2 if quick else 15, repeats=1 if quick else 3)
    size = "x".join(map(str, lr.size))
    on_cpu = c.run(lr, generator_device="cpu")
    pipe.to(device)
    first, second = c.run(lr), c.run(lr)
    c.show("device_generator_repeats", identical=bool(np.array_equal(first, second)), shape=list(first.shape))
    reference = c.run(lr, generator_device="cpu")
    c.show("cpu_generator_cpu_vs_device", psnr_db=psnr(reference, on_cpu),
           max_abs=float(np.abs(reference - on_cpu).max()))
    for steps in (1, 4, c.steps):
        c.show(f"speed_float32_{size}_{steps}_steps", **c.timed(lr, steps=steps))
    c.show("speed_float32_big", lr_size=list(big.size), **c.timed(big, repeats=2))
    pipe.enable_unet_tiling(tile_size=128)
    c.show("speed_float32_big_tile128", lr_size=list(big.size), **c.timed(big, repeats=2))
    pipe.disable_unet_tiling()
    for dtype in (torch.float16, torch.bfloat16):
        pipe.to(dtype=dtype)
        out = c.run(lr, generator_device="cpu")
        c.show(f"{dtype}_{size}", finite=bool(np.isfinite(out).all()), psnr_vs_float32_db=psnr(out, reference),
               **c.timed(lr))
        c.show(f"speed_{dtype}_big", lr_size=list(big.size), **c.timed(big, repeats=2))
    pipe.to(dtype=torch.float32)
    if device.startswith("cuda"):
        pipe.to("cpu")
        pipe.enable_model_cpu_offload(device=device)
        offloaded = c.run(lr, generator_device="cpu")
        c.show("model_cpu_offload", psnr_vs_device_db=psnr(offloaded, reference),
               max_abs=float(np.abs(offloaded - reference).max()))
    return c.records


def bench_gpu(config: BenchConfig) -> dict:
    """:func:`check` of ``config.gpu_model`` (the embedded default model when ``None``) on ``config.gpu_device``.

    Returns:
        ``{"model", "device", "quick", "checks": [{"check": name, ...}, ...]}``.
    """
    model = config.gpu_model or DEFAULT_MODEL
    records = check(model, config.gpu_device, config.gpu_quick)
    return {"model": model, "device": config.gpu_device, "quick": config.gpu_quick, "checks": records}
