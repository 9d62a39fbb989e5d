# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""DifIISR-DWT: x4 infrared super-resolution by residual shifting in wavelet space.

The diffusion state lives in the wavelet space of ``dwt_encoder`` (``E``): it starts at
``E(bicubic_x4(lr))`` plus noise, the UNet predicts the clean VQ latent ``z0``, the adapter
``A = dwt_encoder.project_latent`` carries ``z0`` into the state space for the ResShift posterior,
and the VQ-f4 decoder turns the last ``z0`` into pixels. Iterative back-projection then makes the
output agree with its input: ``bicubic_down(SR) = LR`` (a grey level of a thermal image is a
temperature; the output must not move it).

The pipeline class lives here; its image processor, tiling, fidelity step, window attention and saving are
the sibling files ``image_processor.py``, ``tiling.py``, ``fidelity.py``, ``attention.py`` and ``saving.py``,
imported relatively. These files are self-contained (torch, numpy, PIL, diffusers): they are also the Hub
folder's pipeline code files, and the components arrive as objects.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, UNet2DModel, VQModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput, deprecate, logging
from diffusers.utils.torch_utils import randn_tensor

# Every sibling file is imported here, directly: loading a local folder, diffusers copies the pipeline
# file's own relative imports beside it, not theirs (tests/test_hub_loading.py checks).
from .attention import set_decoder_attention_window, set_unet_attention_window
from .fidelity import LRConsistencyMixin
from .image_processor import ImageMeta, IRImageProcessor, PipelineImageInput
from .saving import HubFolderMixin
from .tiling import TilingConfig, as_integer, tiled_with_shared_norms

logger = logging.get_logger(__name__)  # diffusers' logger, as its pipelines
# attribute of a UNet / VQ decoder recording the window it runs its attention with (None: global attention)
_WINDOW_ATTRIBUTE = "_difiisr_attention_window"


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

def channels_last_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """`x` (`(B, C, H, W)`) in channels-last memory layout when it is on the CPU, else unchanged.

    The decoder's input only (its weights stay as loaded): oneDNN's CPU convolutions follow the input into NHWC
    without reordering each layer's input, and the VQ decoder, convolutions at the full output resolution, takes
    about 0.8x the CPU time (160x128 LR, 1-2 threads, same process); the whole default call 0.84-0.87x. Outputs
    agree with the default layout to float rounding (<= 0.005 grey level). Not used for the UNet (no gain measured:
    its attention reshapes), in training (forward + backward was slower) nor on GPUs (not measured).
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" and x.dim() == 4 else x


class DifIISRDWTPipeline(LRConsistencyMixin, HubFolderMixin, DiffusionPipeline):
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
        unet_attention_window (`int`, *optional*): the UNet's self-attention runs within windows of this many
            LR pixels on a side (:meth:`enable_unet_window_attention`) from loading on; ``None``: global attention
            over each whole attention map (cost grows with the square of the image's area).
        decoder_attention_window (`int`, *optional*): the same for the VQ decoder's self-attention (its mid-block),
            in latent (= LR) pixels (:meth:`enable_decoder_window_attention`); ``None``: global attention.

    Memory features (state, as diffusers' ``enable_vae_tiling``): :meth:`enable_decode_tiling`
    (on by default for latents larger than 160 x 160 LR pixels; whole-image decoding below) and
    :meth:`enable_unet_tiling` (off by default). Both share GroupNorm statistics across tiles; a decoder with
    global attention (the embedded one) attends within each tile, so its raw output (``lr_consistency=False``)
    moves by a few grey levels from tile to tile, which the fidelity step (the default) takes out (README).
    :meth:`enable_unet_window_attention` and :meth:`enable_decoder_window_attention` (the config's
    ``unet_attention_window`` and ``decoder_attention_window``) make the attention cost linear in the image's area.
    A second pipeline on the same components: :meth:`from_pipe` (``DifIISRDWTPipeline(**pipe.components)`` takes
    the constructor's defaults for ``quantize_decode``).
    """

    model_cpu_offload_seq = "dwt_encoder->unet->vqvae"
    #: on the CPU, decode from channels-last latents (:func:`channels_last_on_cpu`: about 0.8x the decoder's CPU
    #: time, the pixels to float rounding); ``False`` decodes in the default layout.
    decode_channels_last = True
    _callback_tensor_inputs = ["latents", "pred_vq_latents", "lr_condition"]
    _deprecated_tensor_inputs = {"pred_latents": "pred_vq_latents", "lr_latents": "lr_condition"}

    def __init__(self, dwt_encoder, unet: UNet2DModel, vqvae: VQModel, scheduler, quantize_decode: bool = True,
                 unet_attention_window: int | None = None, decoder_attention_window: int | None = None):
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
        self.register_to_config(quantize_decode=quantize_decode, unet_attention_window=unet_attention_window,
                                decoder_attention_window=decoder_attention_window)
        self.image_processor = IRImageProcessor(scale_factor=dwt_encoder.downsample_factor)
        self.decode_tiling: TilingConfig | None = TilingConfig(160, 16)
        self.unet_tiling: TilingConfig | None = None
        self.unet_attention_window: int | None = None
        self.decoder_attention_window: int | None = None
        windows = (("unet_attention_window", unet_attention_window, unet, self.enable_unet_window_attention),
                   ("decoder_attention_window", decoder_attention_window, vqvae.decoder,
                    self.enable_decoder_window_attention))
        for name, window, module, enable in windows:
            # components of another pipeline keep the windows they run with, and this pipeline says so
            window = getattr(module, _WINDOW_ATTRIBUTE, None) if window is None else window
            if window is not None:
                try:
                    enable(window)
                except ValueError as error:
                    raise ValueError(f"{name} (model_index.json / the pipeline's config): {error}") from None

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

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (from a ``callback_on_step_end``) to stop sampling after the current
        step, as in diffusers' pipelines; at least one step runs, and its prediction is decoded."""
        return getattr(self, "_interrupt", False)  # False outside a call (training calls the steps directly)

    # ------------------------------------------------------------------ memory features
    def enable_decode_tiling(self, tile_size: int = 160, tile_overlap: int = 16) -> None:
        """Decode latents larger than ``tile_size`` (latent = LR pixels) in overlapping tiles that share
        their GroupNorm statistics (two passes over the tiles); smaller ones decode whole.

        Raises:
            ValueError: ``tile_size`` not a positive integer or ``tile_overlap`` not one in ``[0, tile_size)``.
        """
        self.decode_tiling = TilingConfig(tile_size, tile_overlap)

    def disable_decode_tiling(self) -> None:
        """Decode every image whole (peak memory grows with the image)."""
        self.decode_tiling = None

    def enable_unet_tiling(self, tile_size: int = 64, tile_overlap: int = 16) -> None:
        """Run the UNet over overlapping tiles of ``tile_size`` LR pixels at every step, blended, with
        GroupNorm statistics shared across the tiles (two passes: about twice the UNet's time).

        Raises:
            ValueError: ``tile_size`` not a positive integer multiple of :attr:`unet_size_multiple`, or
                ``tile_overlap`` not an integer in ``[0, tile_size)``.
        """
        tiling, multiple = TilingConfig(tile_size, tile_overlap), self.unet_size_multiple
        if tiling.tile_size % multiple:
            raise ValueError(f"`tile_size` must be a positive multiple of {multiple}, got {tile_size}.")
        self.unet_tiling = tiling

    def disable_unet_tiling(self) -> None:
        """Run the UNet on the whole image (the default)."""
        self.unet_tiling = None

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """No sliced attention in ``UNet2DModel`` / ``VQModel``: a warning names the memory features there are."""
        if slice_size is not None:  # None: disable_attention_slicing, silent
            logger.warning("enable_attention_slicing(%r) changes nothing in this pipeline; to bound memory use "
                           "enable_unet_window_attention(), enable_decoder_window_attention(), enable_unet_tiling() or "
                           "enable_decode_tiling().", slice_size)

    def enable_unet_window_attention(self, window_size: int = 32) -> None:
        """Run the UNet's self-attention layers within windows of ``window_size`` x ``window_size`` LR pixels
        (:class:`~.attention.WindowAttnProcessor`: ``window_size / 2^i`` tokens in a layer at ``1 / 2^i`` of the
        LR size): time and memory grow linearly with the image's area instead of with its square. A window of the
        training crops' LR side (32 for 128 x 128 HR crops) attends over what the UNet saw in training: each of its
        attention maps then was one window. GroupNorm statistics stay global. The output differs from global
        attention's by a few grey levels at most (the embedded model: no measurable change of PSNR or LPIPS on
        the evaluation sets, README).

        Raises:
            ValueError: ``window_size`` not a positive integer multiple of :attr:`unet_size_multiple`.
        """
        self._set_attention_window("unet_attention_window", set_unet_attention_window, self.unet, window_size)

    def disable_unet_window_attention(self) -> None:
        """Global self-attention in the UNet (diffusers' ``AttnProcessor2_0``)."""
        self._set_attention_window("unet_attention_window", set_unet_attention_window, self.unet, None)

    def enable_decoder_window_attention(self, window_size: int = 32) -> None:
        """Run the VQ decoder's self-attention (its mid-block, at the latent = LR size) within windows of
        ``window_size`` x ``window_size`` latent pixels (:func:`~.attention.set_decoder_attention_window`): decode
        time and memory grow linearly with the image's area instead of with its square (the embedded decoder,
        2 threads: a 320x256 LR decodes in 0.38x the CPU time of global attention, 160x128 in 0.8x). Unlike the
        UNet's, the outputs move: the embedded decoder (trained on 64 x 64 HR crops, 16 x 16 latent maps) loses
        RoadScene LPIPS with windows of 32 or 64 (README), so it decodes with global attention by default.
        GroupNorm statistics stay global. A decoder without attention layers is left as it is (a warning).

        Raises:
            ValueError: ``window_size`` not a positive integer.
        """
        self._set_attention_window("decoder_attention_window", set_decoder_attention_window, self.vqvae.decoder,
                                   window_size)

    def disable_decoder_window_attention(self) -> None:
        """Global self-attention in the VQ decoder (diffusers' ``AttnProcessor2_0``)."""
        self._set_attention_window("decoder_attention_window", set_decoder_attention_window, self.vqvae.decoder,
                                   None)

    def _set_attention_window(self, setting: str, set_window, module: torch.nn.Module, window_size: int | None) -> None:
        """``set_window(module, window_size)`` (a setter of :mod:`.attention`, which checks the size), then the
        pipeline attribute ``setting`` (diffusers records it in the config); a warning when ``module`` has no
        attention layer to window."""
        if not set_window(module, window_size) and window_size is not None:
            logger.warning("%s %s: the %s has no attention layer; nothing changes.", setting, window_size,
                           type(module).__name__)
        setattr(self, setting, None if window_size is None else int(window_size))
        setattr(module, _WINDOW_ATTRIBUTE, getattr(self, setting))

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs) -> DiffusionPipeline:
        """diffusers' ``from_pipe`` (components and settings shared: a window set on one pipeline's UNet runs in the
        other too, whose ``unet_attention_window`` keeps its own last setting); the DWT encoder, whose class the
        signature cannot name (the model folder's code), is passed along, where diffusers would leave it out."""
        kwargs.setdefault("dwt_encoder", pipeline.components.get("dwt_encoder"))
        return super().from_pipe(pipeline, **kwargs)

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
        generator: torch.Generator | list[torch.Generator] | None = None,
        flags: dict[str, object] | None = None,
    ) -> None:
        """Raise a ``ValueError`` naming the first bad argument of :meth:`__call__` (images are checked
        by :meth:`IRImageProcessor.preprocess`); ``flags``: name -> value of its on / off arguments."""
        if image is None:
            raise ValueError("`image` must be given.")
        steps = self.scheduler.config.num_train_timesteps
        count = as_integer(num_inference_steps)  # any integer type: Python, numpy, torch
        if count is None or not 1 <= count <= steps:
            raise ValueError(f"`num_inference_steps` must be an integer in [1, {steps}], got {num_inference_steps!r}.")
        for name, value in (("noise_scale", noise_scale), ("prior_noise_scale", prior_noise_scale)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
        for name, value in (flags or {}).items():
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"`{name}` must be True or False, got {value!r}.")
        generators = generator if isinstance(generator, list) else [generator]
        if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
            raise ValueError(f"`generator` must be a torch.Generator, a list of them (one per image) or None, got "
                             f"{generator!r}.")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        if value_range is not None:
            try:  # numbers, not strings that look like them
                if any(isinstance(v, (str, bytes, bool)) for v in value_range):
                    raise TypeError
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
            z = z.to(self.vqvae.dtype)
            z = channels_last_on_cpu(z) if self.decode_channels_last else z
            return self.vqvae.decode(z, force_not_quantize=not quantize).sample.float().contiguous()

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
                if self.interrupt and pred_vq_latents is not None:  # the last prediction is decoded
                    break
                pred_vq_latents = self.predict_vq_latents(latents, lr_condition, t)
                pred_state = self.dwt_encoder.project_latent(pred_vq_latents.to(self.dwt_encoder.dtype)).float()
                latents = self.scheduler.step(
                    pred_state, t, latents, generator=generator, noise_scale=self.noise_scale, lr_sample=lr_condition
                ).prev_sample
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "pred_vq_latents": pred_vq_latents, "lr_condition": lr_condition}
                    callback_outputs = callback_on_step_end(
                        self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                    if not isinstance(callback_outputs, dict):
                        raise ValueError("`callback_on_step_end` must return a dict (the callback_kwargs it was given, "
                                         f"changed or not), got {type(callback_outputs).__name__}.")
                    for name in callback_outputs.keys() & tensors.keys():
                        value, expected = callback_outputs[name], tensors[name].shape
                        if not isinstance(value, torch.Tensor) or value.shape != expected:
                            raise ValueError(f"`callback_on_step_end` returned {name!r} as {type(value).__name__} of "
                                             f"shape {getattr(value, 'shape', None)}; expected a tensor of shape "
                                             f"{tuple(expected)}.")
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
        input_noise_level: float | str | None = "auto",
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
                :mod:`difiisr_dwt.sequence`), at the cost of a little less invented detail.
            lr_consistency (`bool`): make the output agree with its input without copying its sensor
                noise (:meth:`apply_lr_consistency`): no invented texture where the input is flat, then
                :attr:`back_projection_iterations` rounds of back-projection, so that its PIL-bicubic x1/4
                reproduces the input (a clean one exactly; a noisy one less its estimated noise).
            generator: ``torch.Generator`` (or one per image) for reproducible sampling.
            output_type (`str`): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`): return a :class:`DifIISRDWTPipelineOutput` rather than a tuple.
            quantize (`bool`, *optional*): snap latents to the VQ codebook before decoding; defaults
                to the pipeline config's ``quantize_decode``.
            input_noise_level (`float`, `"auto"` or `None`): the input's sensor noise sigma in 8-bit grey
                levels (of the image as the pipeline reads it: 16-bit inputs stretched to their range), taken out
                of the fidelity target instead of copied into the output. ``"auto"`` (default): estimated per
                8-bit image (:func:`~.fidelity.estimate_noise_level`, Immerkaer 1996 on the weakest-texture
                blocks, plus the column offsets of :func:`~.fidelity.estimate_column_offsets`) and only what
                exceeds :attr:`clean_noise_level` removed: a clean image keeps exact consistency (measured with
                the embedded model: mean ``|bicubic_down(SR) - LR|`` at most 0.41 grey level on every clean
                ``tno/`` LR, 0.17 on RoadScene val), a noisy one is made to agree with its denoised self;
                radiometric inputs (16-bit, or ``value_range`` given) are reproduced exactly, because each of
                their pixels is a measurement (a temperature) that the default must not change. ``None``:
                estimated for every image, radiometric ones included. A number: that sigma for every
                image; ``0`` is exact back-projection onto the input (every input reproduced to float
                rounding, its noise included).
            callback_on_step_end: ``fn(pipe, i, t, callback_kwargs) -> dict`` after every step.
            callback_on_step_end_tensor_inputs: keys of ``callback_kwargs`` (``"latents"``: the
                wavelet state ``s_t``; ``"pred_vq_latents"``: ``z0_hat``; ``"lr_condition"``: ``s_lr``).
            value_range (`tuple[float, float]`, *optional*): ``(low, high)`` in the input's units (counts,
                kelvin, degrees Celsius) mapped to the model's input range for every image of the call
                (and, passed again, of every call of a sequence): a temperature maps to the same model
                input in every frame, and sensor noise keeps its true scale. Values outside it are not
                clipped: the model sees them saturated, and the fidelity step (in float) gives them back.
                Outputs then come in the input's units: numpy / torch values unclipped, grey PIL in the input's
                type (``I;16`` counts, ``I`` other integers, ``F`` floats), colour PIL as 8-bit RGB (the range
                mapped to 0..255 unless the input is uint8). ``None`` (default): each 16-bit or float image is
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
            flags = {"lr_consistency": lr_consistency, "return_dict": return_dict}
            flags.update({} if quantize is None else {"quantize": quantize})
            self.check_inputs(image, num_inference_steps, noise_scale, output_type, tensor_inputs, value_range,
                              prior_noise_scale, generator, flags)
            if not (input_noise_level is None or input_noise_level == "auto" or (
                    isinstance(input_noise_level, numbers.Real) and not isinstance(input_noise_level, bool)
                    and 0 <= input_noise_level < float("inf"))):
                raise ValueError(
                    f"`input_noise_level` must be 'auto', None or a finite value >= 0, got {input_noise_level!r}.")
            self._noise_scale, self._prior_noise_scale = float(noise_scale), float(prior_noise_scale)
            self._interrupt, num_inference_steps = False, int(num_inference_steps)
            quantize = self.config.quantize_decode if quantize is None else quantize

            # 2. Preprocess: (3, h, w) tensors in [-1, 1] and how to give each back
            items = self.image_processor.preprocess(image, value_range)
            if isinstance(generator, list) and len(generator) != len(items):
                raise ValueError(f"Got {len(generator)} generator(s) for {len(items)} image(s); pass one per image.")
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
                if not torch.isfinite(sr).all():  # written out, NaN is a black frame that passes for a result
                    raise RuntimeError(f"the decoded image holds NaN or infinite values ({self.vqvae.dtype}: float16 "
                                       "can overflow, or a callback returned them); nothing was returned")
                sr = sr[..., : lr.shape[-2] * self.upscale_factor, : lr.shape[-1] * self.upscale_factor].clamp_(-1, 1)
                if lr_consistency:
                    lr_luma = lr.float().mean(dim=1, keepdim=True)
                    metas = [items[i][1] for i in indices]
                    sr = self.apply_lr_consistency(sr.mean(dim=1, keepdim=True), lr_luma, self.input_noise_levels(
                        input_noise_level, metas), self.output_bounds(metas))
                for i, out in zip(indices, sr):  # unclamped: postprocess clamps to what each output type holds
                    results[i] = out.cpu()
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


def _group_by_size(items: list[tuple[torch.Tensor, ImageMeta]]) -> Iterator[list[int]]:
    """Indices of same-size images, batched together; order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (tensor, _) in enumerate(items):
        groups.setdefault(tuple(tensor.shape[-2:]), []).append(index)
    yield from groups.values()
