# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""Tiled execution for the DifIISR-DWT pipeline's memory features: overlapping tiles blended with
linear ramps, whose GroupNorm layers share one set of statistics (so tiling moves no grey level).

A sibling file of ``pipeline_difiisr_dwt.py`` (also in the Hub folder); it imports torch only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TilingConfig:
    """A tiling memory feature: tile side and overlap, in the component's input pixels.

    Raises:
        ValueError: ``tile_size`` not a positive integer, or ``tile_overlap`` not an integer in ``[0, tile_size)``
            (any integer type is taken: Python, numpy, torch; not floats, strings or bools).
    """

    tile_size: int
    tile_overlap: int

    def __post_init__(self) -> None:
        size, overlap = (as_integer(v) for v in (self.tile_size, self.tile_overlap))
        if size is None or overlap is None or size <= 0 or not 0 <= overlap < size:
            raise ValueError(f"`tile_size` must be a positive integer and `tile_overlap` an integer in [0, tile_size), "
                             f"got {self.tile_size!r} and {self.tile_overlap!r}.")
        self.tile_size, self.tile_overlap = size, overlap


def as_integer(value) -> int | None:
    """``value`` as an ``int`` when it is an integer of any type (Python, numpy, a one-element torch integer
    tensor), else ``None`` (floats, strings, and bools, which Python counts as integers)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return starts + [size - tile]


def _ramp(length: int, overlap: int, taper_start: bool, taper_end: bool) -> torch.Tensor:
    """1-D blending weight for one tile side that meets another tile.

    The outer quarter of the overlap gets weight 0 (a tile's border pixels see its zero padding, its
    neighbour's do not), the middle half ramps linearly to 1.
    """
    weight = torch.ones(length)
    if overlap > 0:
        margin = overlap // 4
        ramp = ((torch.arange(overlap, dtype=torch.float32) - margin + 0.5) / max(overlap - 2 * margin, 1)).clamp(0, 1)
        if taper_start:
            weight[:overlap] = ramp
        if taper_end:
            weight[-overlap:] = ramp.flip(0)
    return weight


def blend_tiles(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int, scale: int
) -> torch.Tensor:
    """Apply ``fn`` over overlapping tiles of ``x`` and blend the outputs with linear ramps.

    Args:
        fn: maps `(B, C, th, tw)` to `(B, C', th * scale, tw * scale)`.
        x (`torch.Tensor` of shape `(B, C, H, W)`).
        tile, overlap: tile side and overlap in ``x`` pixels.
        scale: output pixels per input pixel.

    Returns:
        `torch.Tensor` of shape `(B, C', H * scale, W * scale)`; memory is one output plus one tile.
    """
    height, width = x.shape[-2:]
    rows, cols = _tile_starts(height, tile, overlap), _tile_starts(width, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return fn(x)
    out = weights = None
    for top in rows:
        for left in cols:
            th, tw = min(tile, height), min(tile, width)
            y = fn(x[..., top : top + th, left : left + tw])
            if out is None:
                out = y.new_zeros(*y.shape[:2], height * scale, width * scale)
                weights = y.new_zeros(1, 1, height * scale, width * scale)
            wy = _ramp(th * scale, overlap * scale, top > 0, top + th < height)
            wx = _ramp(tw * scale, overlap * scale, left > 0, left + tw < width)
            w = (wy[:, None] * wx[None, :]).to(y)
            region = (..., slice(top * scale, (top + th) * scale), slice(left * scale, (left + tw) * scale))
            out[region] += y * w
            weights[region] += w
    return out.div_(weights)  # in place: at 2048^2 every full-size copy is ~50 MB


class GroupNormStatistics:
    """One set of GroupNorm statistics for all the tiles of an image (the "tiled VAE with global
    GroupNorm" technique).

    A GroupNorm normalises by the mean and variance of its whole input; run per tile, every tile gets
    its own, and the output shows bands of different level and contrast. Inside :meth:`collect`
    every ``torch.nn.GroupNorm`` of ``module`` accumulates per-sample, per-group sums of ``x`` and
    ``x^2`` over the tiles run (normalising each tile as usual); inside :meth:`apply` it normalises
    with the pooled mean and variance instead, so every tile sees the same statistics, close to the
    whole image's. A module called several times in one forward pools those calls together.
    """

    def __init__(self, module: torch.nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, torch.nn.GroupNorm)]
        self.sums: dict[int, list[torch.Tensor]] = {}

    @contextmanager
    def _patched(self, forward: Callable[[torch.nn.GroupNorm, torch.Tensor], torch.Tensor]) -> Iterator[None]:
        for norm in self.norms:
            norm.forward = lambda x, norm=norm: forward(norm, x)
        try:
            yield
        finally:
            for norm in self.norms:
                del norm.forward

    def collect(self):
        """Context: accumulate statistics over the tiles run inside it (outputs as without it)."""
        self.sums = {}

        def forward(norm: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
            grouped = x.detach().reshape(x.shape[0], norm.num_groups, -1).double()
            sums = [grouped.sum(-1), grouped.square().sum(-1), grouped.shape[-1]]
            previous = self.sums.get(id(norm))
            self.sums[id(norm)] = sums if previous is None else [a + b for a, b in zip(previous, sums)]
            return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)

        return self._patched(forward)

    def apply(self):
        """Context: every GroupNorm normalises with the statistics pooled by :meth:`collect`."""
        eps = {id(norm): norm.eps for norm in self.norms}
        pooled = {}  # mean and 1/std per (sample, group), computed once for all the tiles
        for key, (total, squares, count) in self.sums.items():
            mean = total / count
            pooled[key] = mean, ((squares / count - mean.square()).clamp_min(0) + eps[key]).rsqrt()

        def forward(norm: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
            if id(norm) not in pooled:  # not reached while collecting: its own statistics
                return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
            mean, inv_std = pooled[id(norm)]
            grouped = x.reshape(x.shape[0], norm.num_groups, -1)
            y = ((grouped - mean[..., None].to(x.dtype)) * inv_std[..., None].to(x.dtype)).reshape(x.shape)
            if norm.affine:
                shape = (1, -1) + (1,) * (x.ndim - 2)
                y = y * norm.weight.reshape(shape) + norm.bias.reshape(shape)
            return y

        return self._patched(forward)


def tiled_with_shared_norms(
    fn: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module, x: torch.Tensor, tile: int, overlap: int,
    scale: int,
) -> torch.Tensor:
    """:func:`blend_tiles` whose tiles share their GroupNorm statistics (:class:`GroupNormStatistics`).

    A first pass over the tiles pools the statistics (its outputs are dropped), the second blends
    the tiles normalised with them: twice the compute of plain tiling, the memory of one tile.
    ``x`` that fits in one tile runs whole, once.
    """
    if len(_tile_starts(x.shape[-2], tile, overlap)) == 1 and len(_tile_starts(x.shape[-1], tile, overlap)) == 1:
        return fn(x)
    stats = GroupNormStatistics(module)
    with stats.collect():
        for top in _tile_starts(x.shape[-2], tile, overlap):
            for left in _tile_starts(x.shape[-1], tile, overlap):
                fn(x[..., top : top + tile, left : left + tile])
    with stats.apply():
        return blend_tiles(fn, x, tile, overlap, scale)
