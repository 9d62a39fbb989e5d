# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""DifIISR-DWT: x4 infrared super-resolution by residual shifting in wavelet space.

The diffusion state lives in the wavelet space of ``dwt_encoder`` (``E``): it starts at
``E(bicubic_x4(lr))`` plus noise, the UNet predicts the clean VQ latent ``z0``, the adapter
``A = dwt_encoder.project_latent`` carries ``z0`` into the state space for the ResShift posterior,
and the VQ-f4 decoder turns the last ``z0`` into pixels. Iterative back-projection then makes the
output agree with its input: ``bicubic_down(SR) = LR`` (a grey level of a thermal image is a
temperature; the output must not move it).

The file reads: image processor, tiling, pipeline. It is self-contained (torch, numpy, PIL,
diffusers): it is also the Hub code file of the pipeline; its components arrive as objects.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, UNet2DModel, VQModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput, deprecate
from diffusers.utils.torch_utils import randn_tensor

PipelineImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list

# PIL modes that load as they are, and those converted first (P is decided by its palette).
_PIL_CONVERT = {
    "L": "L", "RGB": "RGB", "1": "L", "LA": "L", "PA": "RGBA", "RGBA": "RGB", "RGBX": "RGB",
    "CMYK": "RGB", "YCbCr": "RGB",
}
_PIL_16BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# ITU-R BT.601 luma / chroma (JPEG's full-range YCbCr, as PIL's "YCbCr" mode), on [-1, 1] pixels.
_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)
# RGB inputs whose channels differ by at most this (in [0, 1]) are grey images stored as RGB.
_GREY_TOLERANCE = 1.5 / 255


# ====================================================================== image processor
@dataclass
class ImageMeta:
    """How to give one output image back in its input's form.

    Args:
        channels: 1 (grayscale) or 3.
        bit16: a 16-bit input, restored to ``[low, high]`` as uint16.
        low, high: the input values that 0 and 1 stand for.
        in_units: give the output back in the input's units (``value_range`` given, or a PIL ``F``
            image): numpy / torch outputs hold ``low + (high - low) * unit``, unclipped, and PIL
            outputs have the input's type (``I;16`` counts, ``F`` floats, ``L``).
        is_float: a float input (PIL ``F``, numpy float) given back as float values under ``in_units``.
        chroma: `(2, h, w)` LR chroma (Cb, Cr in [-1, 1]) of a colour input, whose luma alone is
            super-resolved; ``None`` for grey inputs.
    """

    channels: int
    bit16: bool
    low: float = 0.0
    high: float = 1.0
    chroma: torch.Tensor | None = None
    in_units: bool = False
    is_float: bool = False


@dataclass
class DifIISRDWTPipelineOutput(BaseOutput):
    """Output of :class:`DifIISRDWTPipeline`.

    Args:
        images: PIL images (mode of each input: ``L``, ``RGB``, ``I;16`` or ``F``), or numpy `(B, H, W, C)` /
            torch `(B, C, H, W)` floats in [0, 1], or in the input's units where a ``value_range`` was
            given (a list when the images differ in size or channels).
        value_ranges: per image, the ``(low, high)`` input range that [0, 1] maps to (16-bit and
            float inputs, and every input under ``value_range``).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list
    value_ranges: list[tuple[float, float]]


def bicubic_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL-style bicubic resize of `(B, C, H, W)` float images (Keys a = -0.5, antialiased when
    shrinking), the degradation the evaluation protocol and the model assume (LR = PIL bicubic / 4)."""
    return F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False)


class IRImageProcessor:
    """Pre- and post-processing of infrared images for :class:`DifIISRDWTPipeline`.

    Like diffusers' ``VaeImageProcessor``, but for what thermal cameras write: grayscale stays
    grayscale, 16-bit stays 16-bit (scaled by its own range and restored, or by one fixed ``value_range``
    for every image: the radiometric mode), float images (PIL ``F``) keep their units, and a pseudo-colour frame
    (ironbow, inferno...) keeps its colour: its BT.601 luma is super-resolved and its chroma is
    bicubic-upscaled. Multi-frame PIL images are refused with their frame count (pass the frames as
    a list); a palette image whose palette is grey is read as ``L``.
    """

    def __init__(self, scale_factor: int = 4):
        self.scale_factor = scale_factor

    # -------------------------------------------------------------- in
    def preprocess(
        self, image: PipelineImageInput, value_range: tuple[float, float] | None = None
    ) -> list[tuple[torch.Tensor, ImageMeta]]:
        """Inputs -> list of ``(lr, meta)``: `(3, h, w)` float tensors in [-1, 1] (3 equal channels:
        the luma of colour images) with their :class:`ImageMeta`.

        Args:
            image: PIL images, numpy `(H, W)` / `(H, W, C)` (uint8, uint16, float in [0, 1]), torch
                `(C, H, W)` / `(B, C, H, W)` (float in [0, 1] or uint8), or a list of them.
            value_range: ``(low, high)`` in the inputs' units, mapped to [-1, 1] for every image
                (``x -> 2 (x - low) / (high - low) - 1``); values outside it are kept, not clipped
                (any finite float is then accepted). ``None``: uint8 / 255, uint16 and PIL ``F`` by
                their own min and max, float in [0, 1] as it is.

        Raises:
            ValueError: empty input, unsupported type / mode / dtype / channel count, values outside
                [0, 1] for floats without ``value_range``, NaN or Inf, or a multi-frame PIL image.
        """
        items = list(image) if isinstance(image, (list, tuple)) else [image]
        if not items:
            raise ValueError("`image` is an empty list; pass at least one image.")
        out = []
        for index, item in enumerate(items):
            what = f"image {index}"
            if isinstance(item, PIL.Image.Image):
                array = self._pil_to_array(item, f"PIL {what}")
                item_range = value_range
                if item.mode == "F" and value_range is None:  # float data has no [0, 1] convention
                    low, high = float(array.min()), float(array.max())
                    item_range = (low, high if high > low else low + 1.0)
                pairs = [self._unit_float(array, f"PIL {what}", item_range)]
            elif isinstance(item, np.ndarray):
                pairs = [self._unit_float(item, what, value_range)]
            elif isinstance(item, torch.Tensor) and value_range is not None:
                batch = item[None] if item.ndim == 3 else item
                pairs = [self._unit_float(t.permute(1, 2, 0).detach().cpu().numpy(), what, value_range) for t in batch]
            elif isinstance(item, torch.Tensor):
                pairs = self._tensor_images(item, what)
            else:
                raise ValueError(f"{what}: unsupported type {type(item).__name__}; use PIL, numpy or torch images.")
            out.extend(self._to_model_input(tensor, meta) for tensor, meta in pairs)
        return out

    @staticmethod
    def _to_model_input(tensor: torch.Tensor, meta: ImageMeta) -> tuple[torch.Tensor, ImageMeta]:
        """`(C, h, w)` in [0, 1] -> `(3, h, w)` in [-1, 1]; colour images keep their chroma aside."""
        tensor = tensor.float() * 2 - 1
        if tensor.shape[0] == 3 and (tensor.amax(0) - tensor.amin(0)).max() > 2 * _GREY_TOLERANCE:
            ycbcr = torch.einsum("ij,jhw->ihw", _RGB_TO_YCBCR, tensor)
            meta.chroma, tensor = ycbcr[1:].clone(), ycbcr[:1]
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        return tensor, meta

    @staticmethod
    def _unit_float(
        array: np.ndarray, what: str, value_range: tuple[float, float] | None = None
    ) -> tuple[torch.Tensor, ImageMeta]:
        """`(H, W)` or `(H, W, C)` array -> float32 `(C, H, W)` in [0, 1] (beyond it outside a
        ``value_range``) and how to restore it."""
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(f"{what}: expected an (H, W) or (H, W, C) array, got shape {array.shape}.")
        if array.shape[2] == 4:  # drop alpha
            array = array[:, :, :3]
        if array.shape[2] not in (1, 3):
            raise ValueError(f"{what}: expected 1 or 3 channels (4 with alpha), got {array.shape[2]}.")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"{what}: image is empty (size {array.shape[1]}x{array.shape[0]}).")
        meta = ImageMeta(array.shape[2], False)
        if value_range is not None:
            if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
                raise ValueError(f"{what}: unsupported dtype {array.dtype} (use uint8, uint16 or float).")
            if not np.isfinite(array).all():
                raise ValueError(f"{what}: image contains NaN or Inf values.")
            low, high = float(value_range[0]), float(value_range[1])
            unit = ((array.astype(np.float64) - low) / (high - low)).astype(np.float32)
            meta = ImageMeta(array.shape[2], array.dtype == np.uint16, low, high, in_units=True,
                             is_float=bool(np.issubdtype(array.dtype, np.floating)))
        elif array.dtype == np.uint8:
            unit = array.astype(np.float32) / 255.0
        elif array.dtype == np.uint16:
            low, high = float(array.min()), float(array.max())
            high = high if high > low else low + 1.0
            unit = ((array.astype(np.float64) - low) / (high - low)).astype(np.float32)
            meta = ImageMeta(array.shape[2], True, low, high)
        elif np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                raise ValueError(f"{what}: image contains NaN or Inf values.")
            if array.min() < -1e-3 or array.max() > 1 + 1e-3:
                raise ValueError(
                    f"{what}: float images must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}]; for data "
                    "in other units (kelvin, degrees Celsius) pass value_range=(low, high) in those units."
                )
            unit = np.clip(array, 0, 1).astype(np.float32)
        else:
            raise ValueError(f"{what}: unsupported dtype {array.dtype} (use uint8, uint16 or float in [0, 1]).")
        return torch.from_numpy(np.ascontiguousarray(unit)).permute(2, 0, 1), meta

    @staticmethod
    def _pil_to_array(image: PIL.Image.Image, what: str) -> np.ndarray:
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise ValueError(
                f"{what}: has {frames} frames; the pipeline takes one frame per image. Pass them as a list: "
                "[frame.copy() for frame in PIL.ImageSequence.Iterator(image)]."
            )
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{what}: image is empty (size {image.width}x{image.height}).")
        if image.mode == "F":  # 32-bit float data: temperatures, radiance
            return np.asarray(image, dtype=np.float32)
        if image.mode in _PIL_16BIT:  # I;16 variants, and 32-bit I as PIL opens some 16-bit files
            array = np.asarray(image, dtype=np.int64)
            if array.min() < 0 or array.max() > 65535:
                raise ValueError(f"{what}: mode {image.mode} values must lie in [0, 65535] to be read as 16-bit.")
            return array.astype(np.uint16)
        if image.mode == "P":  # a grey palette (common for thermal PNGs) stays grey
            palette = np.asarray(image.getpalette() or [0, 0, 0], np.uint8).reshape(-1, 3)
            grey = bool((palette == palette[:, :1]).all())
            return np.asarray(image.convert("L" if grey else "RGB"))
        if image.mode not in _PIL_CONVERT:
            raise ValueError(
                f"{what}: unsupported PIL mode {image.mode!r}; use L, RGB, I;16 or F "
                f"(also converted: {', '.join(sorted([*_PIL_CONVERT, 'P']))})."
            )
        array = np.asarray(image.convert(_PIL_CONVERT[image.mode]))
        return array

    @staticmethod
    def _tensor_images(tensor: torch.Tensor, what: str) -> list[tuple[torch.Tensor, ImageMeta]]:
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4:
            raise ValueError(f"{what}: expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(tensor.shape)}.")
        if tensor.shape[1] not in (1, 3):
            raise ValueError(f"{what}: expected 1 or 3 channels, got {tensor.shape[1]} (shape {tuple(tensor.shape)}).")
        if tensor.numel() == 0:
            raise ValueError(f"{what}: image is empty (shape {tuple(tensor.shape)}).")
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255
        elif tensor.is_floating_point():
            tensor = tensor.detach().float().cpu()
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{what}: image contains NaN or Inf values.")
            if tensor.min() < -1e-3 or tensor.max() > 1 + 1e-3:
                raise ValueError(
                    f"{what}: float tensors must lie in [0, 1], got [{tensor.min():.4g}, {tensor.max():.4g}]."
                )
            tensor = tensor.clamp(0, 1)
        else:
            raise ValueError(f"{what}: unsupported tensor dtype {tensor.dtype} (use uint8 or float in [0, 1]).")
        return [(item, ImageMeta(tensor.shape[1], False)) for item in tensor.cpu()]

    # -------------------------------------------------------------- out
    def postprocess(self, images: list[torch.Tensor], metas: list[ImageMeta], output_type: str = "pil"):
        """`(3, H, W)` SR tensors in [-1, 1] -> the requested output, each in its input's form.

        Colour inputs get their bicubic-upscaled chroma back; grey inputs give 1 channel; 16-bit PIL
        outputs are uint16 in the input's ``[low, high]``. ``output_type``: ``"pil"``, ``"np"``
        (`(B, H, W, C)` float32 in [0, 1]) or ``"pt"`` (`(B, C, H, W)`); a list where shapes differ.
        Under ``meta.in_units`` (grey images) the values are in the input's units, not clipped.
        """
        outs = []
        for image, meta in zip(images, metas):
            # [0, 1], then the luma: the model's output is grey (one copy; the caller's tensor is kept)
            image = image.float().add(1).div_(2).mean(dim=0, keepdim=True)
            if not meta.in_units or meta.chroma is not None:  # in units, grey values outside the range stay
                image = image.clamp_(0, 1)
            if meta.chroma is not None:
                chroma = bicubic_resize(meta.chroma[None], tuple(image.shape[-2:]))[0]
                rgb = torch.einsum("ij,jhw->ihw", _YCBCR_TO_RGB, torch.cat([image * 2 - 1, chroma]))
                image = (rgb + 1).div_(2).clamp_(0, 1)
            elif meta.channels == 3:
                image = image.expand(3, -1, -1)
            if meta.in_units:
                image = image.mul(meta.high - meta.low).add_(meta.low)
            outs.append(image)
        same_shape = all(o.shape == outs[0].shape for o in outs)
        if output_type == "pt":
            return torch.stack(outs) if same_shape else outs
        if output_type == "np":
            arrays = [o.permute(1, 2, 0).numpy() for o in outs]
            return np.stack(arrays) if same_shape else arrays
        return [self._to_pil(image, meta) for image, meta in zip(outs, metas)]

    @staticmethod
    def _to_pil(image: torch.Tensor, meta: ImageMeta) -> PIL.Image.Image:
        if meta.in_units:  # values in the input's units: its own type back
            values = image.double().permute(1, 2, 0).numpy()
            if meta.is_float and meta.channels == 1:
                return PIL.Image.fromarray(values[:, :, 0].astype(np.float32), mode="F")
            if not meta.bit16 or meta.channels == 1:
                top, dtype = (65535, np.uint16) if meta.bit16 else (255, np.uint8)
                array = np.clip(np.round(values), 0, top).astype(dtype)
                return PIL.Image.fromarray(array[:, :, 0] if meta.channels == 1 else array)
            image = image.sub(meta.low).div_(meta.high - meta.low).clamp_(0, 1)  # PIL has no 16-bit or float RGB
        if meta.bit16 and meta.channels == 1:  # PIL has no 16-bit RGB: such inputs come back as 8-bit RGB
            values = image[0].double().mul_(meta.high - meta.low).add_(meta.low).round_()
            return PIL.Image.fromarray(values.numpy().astype(np.uint16))
        array8 = image.mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
        return PIL.Image.fromarray(array8[:, :, 0] if meta.channels == 1 else array8)


def back_project(sr: torch.Tensor, lr: torch.Tensor, iterations: int) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg, 1991): ``SR += up(LR - down(SR))``, ``iterations`` times.

    ``down`` is the degradation the model assumes (PIL-style bicubic, :func:`bicubic_resize`); each
    round removes most of what is left of ``down(SR) - LR``, so the output keeps the model's detail
    above the LR's Nyquist frequency and takes its levels from the input.

    Args:
        sr (`torch.Tensor` of shape `(B, C, sH, sW)`): the decoded output, [-1, 1].
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1].
        iterations (`int`): rounds; 0 returns ``sr``.

    Returns:
        A new `torch.Tensor` like ``sr`` (float32, not clamped).
    """
    out = sr.float().clone()  # the caller's tensor is kept
    for _ in range(iterations):
        out += bicubic_resize(lr - bicubic_resize(out, tuple(lr.shape[-2:])), tuple(out.shape[-2:]))
    return out


def shrink_flat_detail(sr: torch.Tensor, lr: torch.Tensor, noise_level: float) -> torch.Tensor:
    """Keep the model's departure from bicubic only where the input has structure.

    A Wiener-style gain per output pixel, ``g = a^2 / (a^2 + noise_level^2)``, with ``a`` the local
    standard deviation of the input's luma (3x3 LR window, bicubic-upscaled): on a flat patch
    (``a`` at the sensor's noise level or below) the output stays the smooth bicubic surface instead
    of a texture the model invents, on edges and texture (``a >> noise_level``) the model's detail
    passes unchanged: ``SR' = up(LR) + g (SR - up(LR))``.

    Args:
        sr (`torch.Tensor` of shape `(B, C, sH, sW)`): the decoded output, [-1, 1].
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1].
        noise_level (`float`): in [-1, 1] pixel units (8-bit grey levels / 127.5); 0 returns ``sr``.
    """
    if noise_level <= 0:
        return sr
    size = tuple(sr.shape[-2:])
    luma = lr.float().mean(dim=1, keepdim=True)
    mean = F.avg_pool2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    square = F.avg_pool2d(F.pad(luma.square(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    activity = bicubic_resize((square - mean.square()).clamp_min(0), size).clamp_min(0)
    gain = activity / (activity + noise_level**2)
    upsampled = bicubic_resize(lr, size)
    return upsampled.add_(gain * (sr.float() - upsampled))


# ====================================================================== tiling
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


# ====================================================================== pipeline
@dataclass
class TilingConfig:
    """A tiling memory feature: tile side and overlap, in the component's input pixels."""

    tile_size: int
    tile_overlap: int


class DifIISRDWTPipeline(DiffusionPipeline):
    r"""x4 super-resolution of infrared images: ResShift sampling in wavelet space, VQ-f4 decoding,
    back-projection onto the input.

    Args:
        dwt_encoder ([`DWTEncoder`]): wavelet encoder ``E`` with the latent adapter ``A``.
        unet ([`UNet2DModel`]): ``in_channels = 2 * dwt_encoder.out_channels``, ``out_channels`` = VQ
            latent channels; predicts the clean VQ latent.
        vqvae ([`VQModel`]): VQ-f4 autoencoder; only its decoder runs here.
        scheduler ([`ResShiftScheduler`]): the residual-shifting schedule.
        quantize_decode (`bool`): snap the predicted latent to the codebook before decoding (default
            of ``__call__``'s ``quantize``).

    Memory features (state, as diffusers' ``enable_vae_tiling``): :meth:`enable_decode_tiling`
    (on by default for latents larger than 160 x 160 LR pixels; whole-image decoding below) and
    :meth:`enable_unet_tiling` (off by default). Both share GroupNorm statistics across tiles, so
    tiling moves no grey level.
    """

    model_cpu_offload_seq = "dwt_encoder->unet->vqvae"
    _callback_tensor_inputs = ["latents", "pred_vq_latents", "lr_condition"]
    _deprecated_tensor_inputs = {"pred_latents": "pred_vq_latents", "lr_latents": "lr_condition"}
    #: rounds of iterative back-projection under ``lr_consistency=True``.
    back_projection_iterations = 10
    #: input noise level (8-bit grey levels) below which ``lr_consistency=True`` keeps no invented
    #: detail (:func:`shrink_flat_detail`).
    detail_noise_level = 1.0

    def __init__(self, dwt_encoder, unet: UNet2DModel, vqvae: VQModel, scheduler, quantize_decode: bool = True):
        super().__init__()
        state_channels = dwt_encoder.out_channels
        if unet.config.in_channels != 2 * state_channels:
            raise ValueError(
                f"unet.in_channels must be 2 x dwt_encoder.out_channels = {2 * state_channels}, "
                f"got {unet.config.in_channels}."
            )
        if unet.config.out_channels != vqvae.config.latent_channels:
            raise ValueError(
                f"unet.out_channels ({unet.config.out_channels}) must equal the VQ latent channels "
                f"({vqvae.config.latent_channels})."
            )
        vq_factor = 2 ** (len(vqvae.config.block_out_channels) - 1)
        if vq_factor != dwt_encoder.downsample_factor:
            raise ValueError(
                f"The VQ model downsamples by {vq_factor} but the DWT encoder by {dwt_encoder.downsample_factor}."
            )
        self.register_modules(dwt_encoder=dwt_encoder, unet=unet, vqvae=vqvae, scheduler=scheduler)
        self.register_to_config(quantize_decode=quantize_decode)
        self.image_processor = IRImageProcessor(scale_factor=dwt_encoder.downsample_factor)
        self.decode_tiling: TilingConfig | None = TilingConfig(160, 16)
        self.unet_tiling: TilingConfig | None = None

    @property
    def upscale_factor(self) -> int:
        return self.dwt_encoder.downsample_factor

    @property
    def unet_size_multiple(self) -> int:
        """Latent sizes the UNet accepts are multiples of this (its number of downsamplings)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    # per-call settings, read by the steps of one call (as diffusers' ``self._guidance_scale``)
    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def noise_scale(self) -> float:
        return self._noise_scale

    @property
    def prior_noise_scale(self) -> float:
        return self._prior_noise_scale

    # ------------------------------------------------------------------ memory features
    def enable_decode_tiling(self, tile_size: int = 160, tile_overlap: int = 16) -> None:
        """Decode latents larger than ``tile_size`` (latent = LR pixels) in overlapping tiles that share
        their GroupNorm statistics (two passes over the tiles); smaller ones decode whole.

        Raises:
            ValueError: ``tile_size <= 0`` or ``tile_overlap`` outside ``[0, tile_size)``.
        """
        if tile_size <= 0 or not 0 <= tile_overlap < tile_size:
            raise ValueError(
                f"Need decode tile_size > 0 and 0 <= tile_overlap < tile_size, got {tile_size} and {tile_overlap}."
            )
        self.decode_tiling = TilingConfig(tile_size, tile_overlap)

    def disable_decode_tiling(self) -> None:
        """Decode every image whole (peak memory grows with the image)."""
        self.decode_tiling = None

    def enable_unet_tiling(self, tile_size: int = 64, tile_overlap: int = 16) -> None:
        """Run the UNet over overlapping tiles of ``tile_size`` LR pixels at every step, blended, with
        GroupNorm statistics shared across the tiles (two passes: about twice the UNet's time).

        Raises:
            ValueError: ``tile_size`` not a positive multiple of :attr:`unet_size_multiple`, or
                ``tile_overlap`` outside ``[0, tile_size)``.
        """
        multiple = self.unet_size_multiple
        if tile_size <= 0 or tile_size % multiple:
            raise ValueError(f"`tile_size` must be a positive multiple of {multiple}, got {tile_size}.")
        if not 0 <= tile_overlap < tile_size:
            raise ValueError(f"`tile_overlap` must be in [0, tile_size), got {tile_overlap}.")
        self.unet_tiling = TilingConfig(tile_size, tile_overlap)

    def disable_unet_tiling(self) -> None:
        """Run the UNet on the whole image (the default)."""
        self.unet_tiling = None

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self,
        image: PipelineImageInput,
        num_inference_steps: int,
        noise_scale: float,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
        value_range: tuple[float, float] | None = None,
        prior_noise_scale: float = 1.0,
    ) -> None:
        """Raise a ``ValueError`` naming the first bad argument of :meth:`__call__` (images are checked
        by :meth:`IRImageProcessor.preprocess`)."""
        if image is None:
            raise ValueError("`image` must be given.")
        steps = self.scheduler.config.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= steps:
            raise ValueError(f"`num_inference_steps` must be an integer in [1, {steps}], got {num_inference_steps!r}.")
        if not 0.0 <= noise_scale <= 1.0:
            raise ValueError(f"`noise_scale` must lie in [0, 1], got {noise_scale!r}.")
        if not 0.0 <= prior_noise_scale <= 1.0:
            raise ValueError(f"`prior_noise_scale` must lie in [0, 1], got {prior_noise_scale!r}.")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        if value_range is not None:
            try:
                low, high = (float(v) for v in value_range)
            except (TypeError, ValueError):
                raise ValueError(f"`value_range` must be a pair (low, high) of numbers, got {value_range!r}.") from None
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ValueError(f"`value_range` must be finite with low < high, got {value_range!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be in {self._callback_tensor_inputs}, got {unknown}."
            )

    def prepare_condition(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reflect-pad the LR batch to the UNet's size multiple and encode ``s_lr = E(bicubic_x4(lr))``.

        Training calls this too, so that the condition is computed one way only.

        Args:
            lr (`torch.Tensor` of shape `(B, 3, h, w)`): pixels in [-1, 1].

        Returns:
            ``(lr_padded, s_lr)``: `(B, 3, h', w')` and `(B, 7C, h', w')`, ``h' >= h`` a multiple of
            :attr:`unet_size_multiple`.
        """
        multiple = self.unet_size_multiple
        height, width = lr.shape[-2:]
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            lr = F.pad(lr, (0, pad_w, 0, pad_h), mode=mode)
        upsampled = F.interpolate(lr, scale_factor=self.upscale_factor, mode="bicubic", align_corners=False)
        encoder_dtype = next(self.dwt_encoder.parameters()).dtype
        lr_condition = self.dwt_encoder.encode(upsampled.clamp_(-1, 1).to(encoder_dtype))
        return lr, lr_condition.float()

    def prepare_latents(
        self, lr_condition: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """The prior sample ``s_T = s_lr + kappa sqrt(eta_T) r noise`` (float32 state), ``r`` this call's
        ``prior_noise_scale``; ``r = 0`` draws nothing and starts at ``s_lr`` itself."""
        if self.prior_noise_scale == 0:
            return self.scheduler.prior_sample(lr_condition, torch.zeros_like(lr_condition, dtype=torch.float32))
        noise = randn_tensor(lr_condition.shape, generator=generator, device=lr_condition.device, dtype=torch.float32)
        return self.scheduler.prior_sample(lr_condition, noise * self.prior_noise_scale)

    # ------------------------------------------------------------------ model calls
    def predict_vq_latents(self, latents: torch.Tensor, lr_condition: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z0_hat = UNet(cat(scale(s_t), s_lr), t)``: `(B, c, h, w)` VQ latents, float32 (tiled under
        :meth:`enable_unet_tiling`)."""
        model_input = torch.cat([self.scheduler.scale_model_input(latents, t), lr_condition], dim=1)
        model_input = model_input.to(self.unet.dtype)

        def run(x: torch.Tensor) -> torch.Tensor:
            timestep = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
            return self.unet(x, timestep).sample.float()

        if self.unet_tiling is None:
            return run(model_input)
        tiling = self.unet_tiling
        return tiled_with_shared_norms(run, self.unet, model_input, tiling.tile_size, tiling.tile_overlap, scale=1)

    def decode_vq_latents(self, vq_latents: torch.Tensor, quantize: bool) -> torch.Tensor:
        """VQ-decode `(B, c, h, w)` latents to `(B, 3, 4h, 4w)` pixels in [-1, 1] (float32, not clamped),
        tiled under :meth:`enable_decode_tiling` when larger than one tile."""

        def run(z: torch.Tensor) -> torch.Tensor:
            return self.vqvae.decode(z.to(self.vqvae.dtype), force_not_quantize=not quantize).sample.float()

        if self.decode_tiling is None:
            return run(vq_latents)
        tiling = self.decode_tiling
        return tiled_with_shared_norms(
            run, self.vqvae.decoder, vq_latents, tiling.tile_size, tiling.tile_overlap, self.upscale_factor
        )

    # ------------------------------------------------------------------ sampling
    def denoise(
        self, lr_condition: torch.Tensor, timesteps: torch.Tensor, generator, callback_on_step_end,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> torch.Tensor:
        """The sampling loop from the prior ``s_T`` to the last prediction ``z0_hat``.

        Each step predicts the clean VQ latent, carries it into the state space with the adapter
        (``s0_hat = A(z0_hat)``) and takes the scheduler's step with this call's ``noise_scale``.

        Returns:
            `(B, c, h', w')` float32: the VQ latent predicted at the last step.
        """
        latents = self.prepare_latents(lr_condition, generator)
        pred_vq_latents = None
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                pred_vq_latents = self.predict_vq_latents(latents, lr_condition, t)
                pred_state = self.dwt_encoder.project_latent(pred_vq_latents.to(self.dwt_encoder.dtype)).float()
                latents = self.scheduler.step(
                    pred_state, t, latents, generator=generator, noise_scale=self.noise_scale, lr_sample=lr_condition
                ).prev_sample
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "pred_vq_latents": pred_vq_latents, "lr_condition": lr_condition}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    pred_vq_latents = callback_outputs.pop("pred_vq_latents", pred_vq_latents)
                progress_bar.update()
        return pred_vq_latents

    def _legacy_call_options(self, options: dict) -> tuple[TilingConfig | None, TilingConfig | None] | None:
        """The tiling of one call given with ``__call__``'s old per-call arguments (deprecated)."""
        if not options:
            return None
        unknown = sorted(set(options) - {"tile_size", "tile_overlap", "decode_tile_size", "decode_tile_overlap"})
        if unknown:
            raise TypeError(f"__call__() got unexpected keyword arguments {unknown}.")
        deprecate("tile_size/decode_tile_size", "1.0.0", "Pass tiling as pipeline state: `pipe.enable_unet_tiling("
                  "tile_size, tile_overlap)` and `pipe.enable_decode_tiling(tile_size, tile_overlap)`.")
        saved = (self.unet_tiling, self.decode_tiling)
        if options.get("tile_size") is not None:
            self.enable_unet_tiling(options["tile_size"], options.get("tile_overlap", 16))
        if "decode_tile_size" in options:
            self.enable_decode_tiling(options["decode_tile_size"], options.get("decode_tile_overlap", 16))
        return saved

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput,
        num_inference_steps: int = 3,
        noise_scale: float = 0.0,
        prior_noise_scale: float = 1.0,
        lr_consistency: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        quantize: bool | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        value_range: tuple[float, float] | None = None,
        **legacy_tiling,
    ) -> DifIISRDWTPipelineOutput | tuple:
        r"""Upscale infrared images x4.

        Args:
            image: PIL (``L``, ``RGB``, ``I;16``; other common modes converted), numpy `(H, W)` /
                `(H, W, C)` (uint8, uint16, float in [0, 1]), torch `(C, H, W)` / `(B, C, H, W)` in
                [0, 1], or a list of them. Grayscale stays grayscale; 16-bit stays 16-bit; colour keeps
                its chroma (bicubic) around the super-resolved luma.
            num_inference_steps (`int`): sampling steps, a subsequence of the ``T`` trained steps.
            noise_scale (`float`): the fidelity-realism knob, in [0, 1]: the share of the ResShift
                posterior's noise drawn at each step (0: deterministic DDIM-style update, the most
                faithful; 1: the full posterior, more invented detail). No effect at 1 step.
            prior_noise_scale (`float`): in [0, 1], the share of the prior's noise in the starting
                state ``s_T = s_lr + kappa sqrt(eta_T) noise`` (1: the trained prior). 0 draws no noise
                at all: with ``noise_scale=0`` the output is then a deterministic function of the
                image's content, so a shifted input gives the shifted output (video: no flicker, see
                :mod:`difiisr_dwt.video`), at the cost of a little less invented detail.
            lr_consistency (`bool`): make the output agree with its input: no invented texture where the
                input is flat (:func:`shrink_flat_detail`), then :attr:`back_projection_iterations`
                rounds of :func:`back_project`, so that its PIL-bicubic x1/4 reproduces the input.
            generator: ``torch.Generator`` (or one per image) for reproducible sampling.
            output_type (`str`): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`): return a :class:`DifIISRDWTPipelineOutput` rather than a tuple.
            quantize (`bool`, *optional*): snap latents to the VQ codebook before decoding; defaults
                to the pipeline config's ``quantize_decode``.
            callback_on_step_end: ``fn(pipe, i, t, callback_kwargs) -> dict`` after every step.
            callback_on_step_end_tensor_inputs: keys of ``callback_kwargs`` (``"latents"``: the
                wavelet state ``s_t``; ``"pred_vq_latents"``: ``z0_hat``; ``"lr_condition"``: ``s_lr``).
            value_range (`tuple[float, float]`, *optional*): ``(low, high)`` in the input's units (counts,
                kelvin, degrees Celsius) mapped to the model's input range for every image of the call
                (and, passed again, of every call of a sequence): a temperature maps to the same model
                input in every frame, and sensor noise keeps its true scale. Values outside it are not
                clipped: the model sees them saturated, and the fidelity step (in float) gives them back.
                Outputs then come in the input's units: numpy / torch values unclipped, PIL in the input's
                type (``I;16`` counts, ``F`` floats). ``None`` (default): each 16-bit or float image is
                mapped by its own minimum and maximum (see :func:`difiisr_dwt.radiometric.sequence_value_range`
                for a sequence's default).
            **legacy_tiling: ``tile_size``, ``tile_overlap``, ``decode_tile_size``,
                ``decode_tile_overlap`` for this call only (deprecated: use :meth:`enable_unet_tiling`
                and :meth:`enable_decode_tiling`).

        Returns:
            :class:`DifIISRDWTPipelineOutput` or ``(images, value_ranges)``.

        Raises:
            ValueError: a bad image or argument, named in the message.
        """
        saved_tiling = self._legacy_call_options(legacy_tiling)
        try:
            # 1. Check inputs; per-call settings live on `self` for the steps below
            if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
                callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
            tensor_inputs = self._tensor_input_names(callback_on_step_end_tensor_inputs)
            self.check_inputs(image, num_inference_steps, noise_scale, output_type, tensor_inputs, value_range,
                              prior_noise_scale)
            self._noise_scale, self._prior_noise_scale = noise_scale, prior_noise_scale
            quantize = self.config.quantize_decode if quantize is None else quantize

            # 2. Preprocess: (3, h, w) tensors in [-1, 1] and how to give each back
            items = self.image_processor.preprocess(image, value_range)
            if isinstance(generator, list) and len(generator) != len(items):
                raise ValueError(f"Got {len(generator)} generators for {len(items)} images; pass one per image.")
            device = self._execution_device

            # 3. Timesteps: a subsequence of the trained schedule
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps
            self._num_timesteps = len(timesteps)

            results: list[torch.Tensor | None] = [None] * len(items)
            for indices in _group_by_size(items):  # one batch per image size
                lr = torch.stack([items[i][0] for i in indices]).to(device)
                group_generator = [generator[i] for i in indices] if isinstance(generator, list) else generator
                # 4. Condition s_lr = E(bicubic_x4(lr)), padded to the UNet's size multiple
                _, lr_condition = self.prepare_condition(lr)
                # 5. Denoising loop
                vq_latents = self.denoise(
                    lr_condition, timesteps, group_generator, callback_on_step_end, tensor_inputs
                )
                # 6. Decode and crop the padding; the model's output is grey, so the fidelity step works on
                # its luma (a third of the memory) and makes it agree with the input's luma
                sr = self.decode_vq_latents(vq_latents, quantize)
                sr = sr[..., : lr.shape[-2] * self.upscale_factor, : lr.shape[-1] * self.upscale_factor].clamp_(-1, 1)
                if lr_consistency:
                    sr = sr.mean(dim=1, keepdim=True)
                    lr_luma = lr.float().mean(dim=1, keepdim=True)
                    sr = shrink_flat_detail(sr, lr_luma, self.detail_noise_level / 127.5)
                    sr = back_project(sr, lr_luma, self.back_projection_iterations)
                for i, out in zip(indices, sr):  # in units, values beyond the range are kept (in float)
                    results[i] = (out if items[i][1].in_units else out.clamp(-1, 1)).cpu()
            self.maybe_free_model_hooks()
        finally:
            if saved_tiling is not None:
                self.unet_tiling, self.decode_tiling = saved_tiling

        # 7. Postprocess to the inputs' forms
        metas = [meta for _, meta in items]
        images = self.image_processor.postprocess(results, metas, output_type)
        value_ranges = [(meta.low, meta.high) for meta in metas]
        if not return_dict:
            return (images, value_ranges)
        return DifIISRDWTPipelineOutput(images=images, value_ranges=value_ranges)

    def _tensor_input_names(self, names: list[str] | None) -> list[str]:
        """Callback tensor names, the deprecated ones mapped to their new names (default ``["latents"]``)."""
        names = list(names or ["latents"])
        renamed = [self._deprecated_tensor_inputs.get(k, k) for k in names]
        if renamed != names:
            deprecate("pred_latents/lr_latents", "1.0.0", "Use 'pred_vq_latents' and 'lr_condition'.")
        return renamed

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save as a self-contained Hub folder: weights, configs, and the code files of the custom classes.

        ``model_index.json`` gets diffusers' remote-code list form, so the folder loads anywhere with
        ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.
        """
        super().save_pretrained(save_directory, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        custom = {"dwt_encoder": self.dwt_encoder, "scheduler": self.scheduler}
        for name, component in custom.items():
            source = inspect.getfile(type(component))
            stem = os.path.splitext(os.path.basename(source))[0]
            shutil.copyfile(source, os.path.join(save_directory, name, os.path.basename(source)))
            index[name] = [stem, type(component).__name__]
        pipeline_source = inspect.getfile(type(self))
        shutil.copyfile(pipeline_source, os.path.join(save_directory, os.path.basename(pipeline_source)))
        index["_class_name"] = [os.path.splitext(os.path.basename(pipeline_source))[0], type(self).__name__]
        tmp_path = index_path + ".tmp"
        with open(tmp_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp_path, index_path)


def _group_by_size(items: list[tuple[torch.Tensor, ImageMeta]]) -> Iterator[list[int]]:
    """Indices of same-size images, batched together; order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (tensor, _) in enumerate(items):
        groups.setdefault(tuple(tensor.shape[-2:]), []).append(index)
    yield from groups.values()
