# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""Pre- and post-processing of infrared images for the DifIISR-DWT pipeline: PIL / numpy / torch
inputs to `(3, h, w)` tensors in [-1, 1] and back, in each input's own form (grey, 16-bit, colour).

A sibling file of ``pipeline_difiisr_dwt.py`` (also in the Hub folder); it imports torch, numpy, PIL and diffusers'
logger only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.utils import logging

logger = logging.get_logger(__name__)  # diffusers' logger, as its pipelines

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


@dataclass
class ImageMeta:
    """How to give one output image back in its input's form.

    Args:
        channels: 1 (grayscale) or 3.
        bit16: a 16-bit input, restored to ``[low, high]`` as uint16.
        low, high: the input values that 0 and 1 stand for.
        in_units: give the output back in the input's units (``value_range`` given, or a PIL ``F``
            image): numpy / torch outputs hold ``low + (high - low) * unit``, unclipped, and grey PIL
            outputs have the input's type (``L``, ``I;16`` counts, ``I`` 32-bit integers, ``F`` floats);
            colour PIL outputs are 8-bit RGB: the input's values for uint8, else ``[low, high]`` mapped to
            0..255 (PIL has no 16-bit, 32-bit or float RGB).
        is_float: a float input (PIL ``F``, numpy float) given back as float values under ``in_units``.
        wide_int: an integer input other than uint8 / uint16 (int16, int32...) under ``in_units``.
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
    wide_int: bool = False



def bicubic_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL-style bicubic resize of `(B, C, H, W)` float images (Keys a = -0.5, antialiased when
    shrinking), the degradation the evaluation protocol and the model assume (LR = PIL bicubic / 4).

    float64 stays float64, anything else is computed in float32. A one-pixel-wide output is resized
    transposed: torch's antialiased kernel (2.x, CPU) gets the rows wrong when the output width is 1 (up
    to 0.28 of the range off PIL on a 160x4 -> 40x1 resize), the transposed resize matches PIL.
    """
    images = images if images.dtype == torch.float64 else images.float()
    transpose = size[1] == 1 and size[0] > 1
    if transpose:
        images, size = images.transpose(-1, -2), (size[1], size[0])
    out = F.interpolate(images, size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    return out.transpose(-1, -2) if transpose else out


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
                array = self._pil_to_array(item, f"PIL {what}", in_units=value_range is not None)
                item_range = value_range
                if item.mode == "F" and value_range is None:  # float data has no [0, 1] convention
                    low, high = float(array.min()), float(array.max())
                    item_range = (low, high if high > low else low + 1.0)
                pairs = [self._unit_float(array, f"PIL {what}", item_range)]
            elif isinstance(item, np.ndarray):
                pairs = [self._unit_float(item, what, value_range)]
            elif isinstance(item, torch.Tensor) and value_range is not None:
                batch = self._tensor_batch(item, what).detach().cpu()
                batch = batch.float() if batch.dtype in (torch.float16, torch.bfloat16) else batch  # numpy has no bf16
                pairs = [self._unit_float(t.permute(1, 2, 0).numpy(), what, value_range) for t in batch]
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
            hint = " (numpy images are (H, W, C), not (C, H, W))" if array.shape[0] in (1, 3, 4) else ""
            raise ValueError(f"{what}: expected 1 or 3 channels (4 with alpha), got {array.shape[2]}{hint}.")
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
            if unit.min() > 1 or unit.max() < 0:  # e.g. a range in degrees Celsius given for a frame in kelvin
                logger.warning("%s: all its values (%g..%g) lie outside value_range (%g, %g): the model sees a "
                               "constant frame and the output is the bicubic upscale; check the range's units", what,
                               array.min(), array.max(), low, high)
            meta = ImageMeta(array.shape[2], array.dtype == np.uint16, low, high, in_units=True,
                             is_float=bool(np.issubdtype(array.dtype, np.floating)),
                             wide_int=bool(np.issubdtype(array.dtype, np.integer)) and array.dtype.itemsize > 1
                             and array.dtype != np.uint16)
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
    def _pil_to_array(image: PIL.Image.Image, what: str, in_units: bool = False) -> np.ndarray:
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
        if image.mode == "I" and in_units:  # 32-bit integers in their units (a value_range): as numpy int32
            return np.asarray(image, dtype=np.int32)
        if image.mode in _PIL_16BIT:  # I;16 variants, and 32-bit I as PIL opens some 16-bit files
            array = np.asarray(image, dtype=np.int64)
            if array.min() < 0 or array.max() > 65535:
                raise ValueError(f"{what}: mode {image.mode} values from {array.min()} to {array.max()}: only unsigned "
                                 "16-bit data (0..65535) is read as 16-bit; signed or 32-bit integer images: convert "
                                 "to uint16 or to float with a value_range first.")
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
    def _tensor_batch(tensor: torch.Tensor, what: str) -> torch.Tensor:
        """A `(C, H, W)` or `(B, C, H, W)` image tensor as `(B, C, H, W)`, its shape checked."""
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4:
            raise ValueError(f"{what}: expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(tensor.shape)}.")
        if tensor.shape[1] not in (1, 3):
            raise ValueError(f"{what}: expected 1 or 3 channels, got {tensor.shape[1]} (shape {tuple(tensor.shape)}).")
        if tensor.numel() == 0:
            raise ValueError(f"{what}: image is empty (shape {tuple(tensor.shape)}).")
        return tensor

    @classmethod
    def _tensor_images(cls, tensor: torch.Tensor, what: str) -> list[tuple[torch.Tensor, ImageMeta]]:
        tensor = cls._tensor_batch(tensor, what)
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

        Colour inputs get their bicubic-upscaled chroma back; grey inputs give 1 channel; 16-bit grey PIL
        outputs are uint16 ``low + (high - low) * unit``, clipped to 0..65535 only (like 8-bit outputs to
        0..255: an edge may overshoot the input's own ``[low, high]``, as its bicubic upscale does).
        ``output_type``: ``"pil"``, ``"np"`` (`(B, H, W, C)` float32 in [0, 1]) or ``"pt"``
        (`(B, C, H, W)`); a list where shapes differ. Under ``meta.in_units`` (grey images) the values are
        in the input's units, not clipped.
        """
        outs = []
        for image, meta in zip(images, metas):
            # [0, 1], then the luma: the model's output is grey (one copy; the caller's tensor is kept)
            image = image.float().add(1).div_(2).mean(dim=0, keepdim=True)
            counts = output_type == "pil" and meta.bit16 and meta.channels == 1  # clipped in counts by _to_pil
            if not (meta.in_units or counts) or meta.chroma is not None:  # in units, values outside the range stay
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
            if meta.wide_int and meta.channels == 1:
                info = np.iinfo(np.int32)
                if values.min() < info.min - 0.5 or values.max() > info.max + 0.5:
                    raise ValueError(f"Output values {values.min():.6g}..{values.max():.6g} do not fit PIL's 32-bit "
                                     "integer mode 'I'; use output_type='np' or 'pt'.")
                return PIL.Image.fromarray(np.round(values[:, :, 0]).astype(np.int32), mode="I")
            if not (meta.bit16 or meta.is_float or meta.wide_int) or meta.channels == 1:
                top, dtype = (65535, np.uint16) if meta.bit16 else (255, np.uint8)
                array = np.clip(np.round(values), 0, top).astype(dtype)
                return PIL.Image.fromarray(array[:, :, 0] if meta.channels == 1 else array)
            # PIL has no 16-bit, 32-bit or float RGB: the range to 8 bits
            image = image.sub(meta.low).div_(meta.high - meta.low).clamp_(0, 1)
        if meta.bit16 and meta.channels == 1:  # PIL has no 16-bit RGB: such inputs come back as 8-bit RGB
            values = image[0].double().mul_(meta.high - meta.low).add_(meta.low).round_().clamp_(0, 65535)
            return PIL.Image.fromarray(values.numpy().astype(np.uint16))
        array8 = image.mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
        return PIL.Image.fromarray(array8[:, :, 0] if meta.channels == 1 else array8)
