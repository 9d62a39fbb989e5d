"""Encoder benchmark: the DWT encoder ``E`` (Haar reshape and ptwt paths) against the LDM VQ-f4
encoder, next to a memory-bound floor (one copy of the input) that no transform reading every pixel
can beat by much."""

from __future__ import annotations

import logging

import torch

from difiisr_dwt.benchmarks import BenchConfig
from difiisr_dwt.benchmarks.timing import count_parameters, time_call
from difiisr_dwt.presets import build_dwt_encoder, build_vqvae

logger = logging.getLogger(__name__)


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def bench_encoder(config: BenchConfig) -> dict:
    """Time ``E.encode`` (reshape and ptwt), a copy and an elementwise op of the input, and ``Enc``.

    Reads from ``config``: ``encoder_sizes`` (output = encoder input sizes as ``(height, width)``),
    ``encoder_preset`` (``"full"`` is the CompVis VQ-f4), ``fast_repeats`` / ``fast_seconds`` (repeats, median
    taken, and time budget per millisecond-scale op), ``vq_repeats`` / ``vq_seconds`` (the same for the VQ
    encoder; at least one call always runs) and ``seed`` (random weights and input).

    Returns:
        ``{"preset", "params", "sizes": [...]}`` with seconds per call (median) and the speedups.
    """
    preset = config.encoder_preset
    torch.manual_seed(config.seed)
    dwt = build_dwt_encoder(preset).eval()
    dwt_ptwt = build_dwt_encoder(preset, use_ptwt=True).eval()
    vqvae = build_vqvae(preset).eval()
    params = {
        # encode() only uses the detail downsamplers; the adapter A runs on latents, not on images.
        "dwt_encode": count_parameters(dwt.detail_downsamplers),
        "dwt_component_with_adapter": count_parameters(dwt),
        "vq_encoder": count_parameters(vqvae.encoder, vqvae.quant_conv),
    }
    vqvae.encode(torch.zeros(1, 3, 32, 32))  # start the thread pool outside the timed calls

    fast = dict(repeats=config.fast_repeats, warmup=3, max_seconds=config.fast_seconds)
    vq = dict(repeats=config.vq_repeats, max_seconds=config.vq_seconds)
    sizes = config.encoder_sizes
    rows = [_bench_size(torch.rand(1, 3, h, w) * 2 - 1, dwt, dwt_ptwt, vqvae, fast, vq) for h, w in sizes]
    return {"preset": preset, "params": params, "sizes": rows}


def _bench_size(x: torch.Tensor, dwt, dwt_ptwt, vqvae, fast: dict, vq: dict) -> dict:
    """One input size of :func:`bench_encoder`; ``fast`` / ``vq`` are `time_call` keyword arguments."""
    logger.info("encoder: %dx%d", x.shape[-1], x.shape[-2])
    dwt_out = dwt.encode(x)
    max_diff = (dwt_out - dwt_ptwt.encode(x)).abs().max().item()
    timings = {
        "dwt_haar": time_call(lambda: dwt.encode(x), **fast),
        "dwt_ptwt": time_call(lambda: dwt_ptwt.encode(x), **fast),
        "copy_floor": time_call(lambda: x.clone(), **fast),
        "elementwise_floor": time_call(lambda: x * 0.5, **fast),
        "vq_encoder": time_call(lambda: vqvae.encode(x).latents, **vq),
    }
    seconds = {name: timing.median for name, timing in timings.items()}
    # The least traffic any encoder needs: read the image once, write the 21-channel state once.
    min_bytes = _bytes(x, dwt_out)
    return {
        "height": x.shape[-2],
        "width": x.shape[-1],
        "seconds": seconds,
        "min_seconds": {name: timing.minimum for name, timing in timings.items()},
        "repeats": {name: timing.repeats for name, timing in timings.items()},
        "speedup_vq_over_dwt_haar": seconds["vq_encoder"] / seconds["dwt_haar"],
        "speedup_vq_over_dwt_ptwt": seconds["vq_encoder"] / seconds["dwt_ptwt"],
        "speedup_ptwt_over_haar": seconds["dwt_ptwt"] / seconds["dwt_haar"],
        "dwt_haar_over_copy": seconds["dwt_haar"] / seconds["copy_floor"],
        "dwt_haar_gb_per_s": min_bytes / seconds["dwt_haar"] / 1e9,
        "copy_gb_per_s": 2 * _bytes(x) / seconds["copy_floor"] / 1e9,
        "max_abs_diff_haar_vs_ptwt": max_diff,
    }
