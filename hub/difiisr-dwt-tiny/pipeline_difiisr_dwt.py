# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""DifIISR-DWT: x4 infrared super-resolution by residual shifting in wavelet space.

The diffusion state lives in the wavelet space of ``dwt_encoder`` (``E``): it starts at
``E(bicubic_x4(lr))`` plus noise, the UNet predicts the clean VQ latent ``z0``, the adapter
``A = dwt_encoder.project_latent`` carries ``z0`` into the state space for the ResShift posterior,
and the VQ-f4 decoder turns the last ``z0`` into pixels.

This file is self-contained (torch, numpy, PIL, diffusers): it is also the Hub code file of the
pipeline; its components arrive as objects.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, UNet2DModel, VQModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

PipelineImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list

# Modes that load as they are, and the ones a user expects to work after a lossless-enough conversion.
_PIL_CONVERT = {
    "L": "L", "RGB": "RGB", "1": "L", "LA": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "RGBX": "RGB",
    "CMYK": "RGB", "YCbCr": "RGB",
}
_PIL_16BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass
class ImageMeta:
    """How to give one output image back in its input's form."""

    channels: int  # 1 (grayscale) or 3
    bit16: bool  # 16-bit input: output restored to [low, high] as uint16
    low: float = 0.0
    high: float = 1.0


@dataclass
class DifIISRDWTPipelineOutput(BaseOutput):
    """Output of :class:`DifIISRDWTPipeline`.

    Args:
        images: PIL images (mode of each input: ``L``, ``RGB`` or ``I;16``), or numpy `(B, H, W, C)` /
            torch `(B, C, H, W)` floats in [0, 1] (a list when the images differ in size or channels).
        value_ranges: per image, the ``(low, high)`` input range that [0, 1] maps to (16-bit inputs).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list
    value_ranges: list[tuple[float, float]]


def _to_unit_float(array: np.ndarray, what: str) -> tuple[np.ndarray, ImageMeta]:
    """`(H, W)` or `(H, W, C)` array -> float32 `(H, W, C)` in [0, 1] and how to restore it."""
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
    channels = array.shape[2]
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0, ImageMeta(channels, False)
    if array.dtype == np.uint16:
        low, high = float(array.min()), float(array.max())
        high = high if high > low else low + 1.0
        unit = ((array.astype(np.float64) - low) / (high - low)).astype(np.float32)
        return unit, ImageMeta(channels, True, low, high)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{what}: image contains NaN or Inf values.")
        if array.min() < -1e-3 or array.max() > 1 + 1e-3:
            raise ValueError(
                f"{what}: float images must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}]."
            )
        return np.clip(array, 0, 1).astype(np.float32), ImageMeta(channels, False)
    raise ValueError(f"{what}: unsupported dtype {array.dtype} (use uint8, uint16 or float in [0, 1]).")


def _pil_to_array(image: PIL.Image.Image, what: str) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{what}: image is empty (size {image.width}x{image.height}).")
    if image.mode in _PIL_16BIT:  # I;16 variants, and 32-bit I as PIL opens some 16-bit files
        array = np.asarray(image, dtype=np.int64)
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(f"{what}: mode {image.mode} values must lie in [0, 65535] to be read as 16-bit.")
        return array.astype(np.uint16)
    if image.mode not in _PIL_CONVERT:
        raise ValueError(
            f"{what}: unsupported PIL mode {image.mode!r}; use L, RGB or I;16 "
            f"(also converted: {', '.join(sorted(_PIL_CONVERT))})."
        )
    return np.asarray(image.convert(_PIL_CONVERT[image.mode]))


def preprocess_image(image: PipelineImageInput) -> list[tuple[torch.Tensor, ImageMeta]]:
    """Inputs -> list of `(3, h, w)` float tensors in [-1, 1] with their :class:`ImageMeta`.

    Accepts PIL images, numpy `(H, W)` / `(H, W, C)` (uint8, uint16, float in [0, 1]), torch
    `(C, H, W)` / `(B, C, H, W)` (float in [0, 1] or uint8), or a list of them.
    """
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if not items:
        raise ValueError("`image` is an empty list; pass at least one image.")
    out = []
    for index, item in enumerate(items):
        what = f"image {index}"
        if isinstance(item, PIL.Image.Image):
            array, meta = _to_unit_float(_pil_to_array(item, f"PIL {what}"), f"PIL {what}")
            tensors = [torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)]
            metas = [meta]
        elif isinstance(item, np.ndarray):
            array, meta = _to_unit_float(item, what)
            tensors = [torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)]
            metas = [meta]
        elif isinstance(item, torch.Tensor):
            tensors, metas = _tensor_images(item, what)
        else:
            raise ValueError(f"{what}: unsupported type {type(item).__name__}; use PIL, numpy or torch images.")
        for tensor, meta in zip(tensors, metas):
            tensor = tensor.float()
            if tensor.shape[0] == 1:
                tensor = tensor.expand(3, -1, -1)
            out.append((tensor * 2 - 1, meta))
    return out


def _tensor_images(tensor: torch.Tensor, what: str) -> tuple[list[torch.Tensor], list[ImageMeta]]:
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
    return list(tensor.cpu()), [ImageMeta(tensor.shape[1], False)] * tensor.shape[0]


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


class DifIISRDWTPipeline(DiffusionPipeline):
    r"""x4 super-resolution of infrared images: ResShift sampling in wavelet space, VQ-f4 decoding.

    Args:
        dwt_encoder ([`DWTEncoder`]): wavelet encoder ``E`` with the latent adapter ``A``.
        unet ([`UNet2DModel`]): ``in_channels = 2 * dwt_encoder.out_channels``, ``out_channels`` = VQ
            latent channels; predicts the clean VQ latent.
        vqvae ([`VQModel`]): VQ-f4 autoencoder; only its decoder runs here.
        scheduler ([`ResShiftScheduler`]): the residual-shifting schedule.
        quantize_decode (`bool`): snap the predicted latent to the codebook before decoding (default
            of ``__call__``'s ``quantize``).
    """

    model_cpu_offload_seq = "dwt_encoder->unet->vqvae"
    _callback_tensor_inputs = ["latents", "pred_latents", "lr_latents"]

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

    @property
    def upscale_factor(self) -> int:
        return self.dwt_encoder.downsample_factor

    @property
    def unet_size_multiple(self) -> int:
        """Latent sizes the UNet accepts are multiples of this (its number of downsamplings)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self,
        image: PipelineImageInput,
        num_inference_steps: int,
        tile_size: int | None,
        tile_overlap: int,
        decode_tile_size: int,
        decode_tile_overlap: int,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str] | None,
    ) -> None:
        if image is None:
            raise ValueError("`image` must be given.")
        steps = self.scheduler.config.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= steps:
            raise ValueError(f"`num_inference_steps` must be an integer in [1, {steps}], got {num_inference_steps!r}.")
        multiple = self.unet_size_multiple
        if tile_size is not None:
            if tile_size <= 0 or tile_size % multiple:
                raise ValueError(f"`tile_size` must be a positive multiple of {multiple}, got {tile_size}.")
            if not 0 <= tile_overlap < tile_size:
                raise ValueError(f"`tile_overlap` must be in [0, tile_size), got {tile_overlap}.")
        if decode_tile_size <= 0 or not 0 <= decode_tile_overlap < decode_tile_size:
            raise ValueError(
                f"Need decode_tile_size > 0 and 0 <= decode_tile_overlap < decode_tile_size, "
                f"got {decode_tile_size} and {decode_tile_overlap}."
            )
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        if callback_on_step_end_tensor_inputs is not None:
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
        lr_latents = self.dwt_encoder.encode(upsampled.clamp_(-1, 1).to(encoder_dtype))
        return lr, lr_latents.float()

    def prepare_latents(
        self, lr_latents: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """The prior sample ``s_T = s_lr + kappa sqrt(eta_T) noise`` (float32 state)."""
        noise = randn_tensor(lr_latents.shape, generator=generator, device=lr_latents.device, dtype=torch.float32)
        return self.scheduler.prior_sample(lr_latents, noise)

    def predict_latents(
        self, latents: torch.Tensor, lr_latents: torch.Tensor, t: torch.Tensor, tile_size: int | None, tile_overlap: int
    ) -> torch.Tensor:
        """``z0_hat = UNet(cat(scale(s_t), s_lr), t)``, over blended tiles when ``tile_size`` is set."""
        model_input = torch.cat([self.scheduler.scale_model_input(latents, t), lr_latents], dim=1)
        model_input = model_input.to(self.unet.dtype)

        def run(x: torch.Tensor) -> torch.Tensor:
            timestep = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
            return self.unet(x, timestep).sample.float()

        if tile_size is None:
            return run(model_input)
        return blend_tiles(run, model_input, tile_size, tile_overlap, scale=1)

    def decode_latents(
        self, latents: torch.Tensor, quantize: bool, decode_tile_size: int, decode_tile_overlap: int
    ) -> torch.Tensor:
        """VQ-decode `(B, c, h, w)` latents to `(B, 3, 4h, 4w)` pixels in [-1, 1], tiled when large."""
        def run(z: torch.Tensor) -> torch.Tensor:
            return self.vqvae.decode(z.to(self.vqvae.dtype), force_not_quantize=not quantize).sample.float()

        return blend_tiles(run, latents, decode_tile_size, decode_tile_overlap, self.upscale_factor).clamp_(-1, 1)

    # ------------------------------------------------------------------ sampling
    def _upscale_batch(
        self,
        lr: torch.Tensor,
        timesteps: torch.Tensor,
        generator,
        tile_size: int | None,
        tile_overlap: int,
        quantize: bool,
        decode_tile_size: int,
        decode_tile_overlap: int,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> torch.Tensor:
        height, width = lr.shape[-2:]
        _, lr_latents = self.prepare_condition(lr)
        latents = self.prepare_latents(lr_latents, generator)
        pred_latents = None
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                pred_latents = self.predict_latents(latents, lr_latents, t, tile_size, tile_overlap)
                pred_state = self.dwt_encoder.project_latent(pred_latents.to(self.dwt_encoder.dtype)).float()
                latents = self.scheduler.step(pred_state, t, latents, generator=generator).prev_sample
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "pred_latents": pred_latents, "lr_latents": lr_latents}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    pred_latents = callback_outputs.pop("pred_latents", pred_latents)
                progress_bar.update()
        image = self.decode_latents(pred_latents, quantize, decode_tile_size, decode_tile_overlap)
        factor = self.upscale_factor
        return image[..., : height * factor, : width * factor]

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput,
        num_inference_steps: int = 15,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        tile_size: int | None = None,
        tile_overlap: int = 16,
        decode_tile_size: int = 128,
        decode_tile_overlap: int = 16,
        quantize: bool | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> DifIISRDWTPipelineOutput | tuple:
        r"""Upscale infrared images x4.

        Args:
            image: PIL (``L``, ``RGB``, ``I;16``; other common modes converted), numpy `(H, W)` /
                `(H, W, C)` (uint8, uint16, float in [0, 1]), torch `(C, H, W)` / `(B, C, H, W)` in
                [0, 1], or a list of them. Grayscale stays grayscale; 16-bit stays 16-bit.
            num_inference_steps (`int`): sampling steps, a subsequence of the ``T`` trained steps.
            generator: ``torch.Generator`` (or one per image) for reproducible sampling.
            output_type (`str`): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`): return a :class:`DifIISRDWTPipelineOutput` rather than a tuple.
            tile_size (`int`, *optional*): LR pixels per diffusion tile (a multiple of the UNet's
                size multiple); ``None`` runs the UNet on the whole image.
            tile_overlap (`int`): LR pixels shared by neighbouring diffusion tiles (linearly blended).
            decode_tile_size, decode_tile_overlap (`int`): VQ-decoder tiling, in latent (= LR) pixels.
            quantize (`bool`, *optional*): snap latents to the VQ codebook before decoding; defaults
                to the pipeline config's ``quantize_decode``.
            callback_on_step_end: ``fn(pipe, i, t, callback_kwargs) -> dict`` after every step.
            callback_on_step_end_tensor_inputs: keys of ``callback_kwargs`` (``"latents"``,
                ``"pred_latents"``, ``"lr_latents"``).

        Returns:
            :class:`DifIISRDWTPipelineOutput` or ``(images, value_ranges)``.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(
            image, num_inference_steps, tile_size, tile_overlap, decode_tile_size, decode_tile_overlap,
            output_type, callback_on_step_end_tensor_inputs,
        )
        items = preprocess_image(image)
        if isinstance(generator, list) and len(generator) != len(items):
            raise ValueError(f"Got {len(generator)} generators for {len(items)} images; pass one per image.")
        quantize = self.config.quantize_decode if quantize is None else quantize
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        results: list[torch.Tensor | None] = [None] * len(items)
        for indices in _group_by_size(items):
            lr = torch.stack([items[i][0] for i in indices]).to(device)
            group_generator = [generator[i] for i in indices] if isinstance(generator, list) else generator
            sr = self._upscale_batch(
                lr, timesteps, group_generator, tile_size, tile_overlap, quantize, decode_tile_size,
                decode_tile_overlap, callback_on_step_end, callback_on_step_end_tensor_inputs,
            )
            for i, out in zip(indices, sr):
                results[i] = out.cpu()
        self.maybe_free_model_hooks()

        metas = [meta for _, meta in items]
        images = postprocess_images(results, metas, output_type)
        value_ranges = [(meta.low, meta.high) for meta in metas]
        if not return_dict:
            return (images, value_ranges)
        return DifIISRDWTPipelineOutput(images=images, value_ranges=value_ranges)

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


def postprocess_images(images: list[torch.Tensor], metas: list[ImageMeta], output_type: str):
    """`(3, H, W)` tensors in [-1, 1] -> the requested output, each in its input's channels and depth."""
    outs = []
    for image, meta in zip(images, metas):
        image = image.float().add(1).div_(2).clamp_(0, 1)  # one copy; the caller's tensor is kept
        if meta.channels == 1:
            image = image.mean(dim=0, keepdim=True)
        outs.append(image)
    if output_type == "pt":
        return torch.stack(outs) if _same_shape(outs) else outs
    if output_type == "np":
        arrays = [o.permute(1, 2, 0).numpy() for o in outs]
        return np.stack(arrays) if _same_shape(outs) else arrays
    pil_images = []
    for image, meta in zip(outs, metas):
        if meta.bit16 and meta.channels == 1:  # PIL has no 16-bit RGB: such inputs come back as 8-bit RGB
            values = image[0].double().mul_(meta.high - meta.low).add_(meta.low).round_()
            pil_images.append(PIL.Image.fromarray(values.numpy().astype(np.uint16)))
        else:
            array8 = image.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
            pil_images.append(PIL.Image.fromarray(array8[:, :, 0] if meta.channels == 1 else array8))
    return pil_images


def _same_shape(tensors: list[torch.Tensor]) -> bool:
    return all(t.shape == tensors[0].shape for t in tensors)
