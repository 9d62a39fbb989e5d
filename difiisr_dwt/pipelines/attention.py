# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""Window attention for the spatial self-attention of the UNet and of the VQ decoder: cost linear in the image's
area.

A sibling file of ``pipeline_difiisr_dwt.py`` (also in the Hub folder); it imports torch, diffusers and its
sibling ``tiling.py`` (for :func:`~.tiling.as_integer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from .tiling import as_integer


class WindowAttnProcessor:
    r"""Self-attention within non-overlapping ``window_size`` x ``window_size`` windows of the feature map
    (the window attention of Swin, Liu et al., ICCV 2021), for the spatial ``Attention`` layers of
    diffusers' ``UNet2DModel`` (``AttnDownBlock2D``, ``UNetMidBlock2D``, ``AttnUpBlock2D``) and of its VQ/KL
    ``Decoder`` (the mid-block, ``AttnUpDecoderBlock2D``).

    Global self-attention over an ``h x w`` map costs ``O((h w)^2)`` time and memory; within windows it
    costs ``O(h w window_size^2)``. A model trained on crops whose attention maps are at most
    ``window_size`` on a side has only ever attended over one such window, so the windows also keep the
    number of attended tokens at what it saw in training. The GroupNorm before the attention still sees the
    whole map. A map that is not a multiple of the window is padded at its bottom and right; padded tokens
    are masked out as keys and dropped from the output. Maps no larger than one window, masked or
    cross-attention calls, and layers with a spatial norm go to diffusers' ``AttnProcessor2_0`` (global
    attention, the same result where the map fits in one window).

    Args:
        window_size (`int`): window side, in tokens (pixels of the attention layer's feature map).

    Raises:
        ValueError: ``window_size < 1``.
    """

    def __init__(self, window_size: int):
        self.window_size = _positive_int(window_size, "`window_size` (tokens)")
        self.global_processor = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        size = self.window_size
        if (hidden_states.ndim != 4 or encoder_hidden_states is not None or attention_mask is not None
                or attn.spatial_norm is not None or max(hidden_states.shape[-2:]) <= size):
            return self.global_processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                         *args, **kwargs)
        residual = hidden_states
        batch, channels, height, width = hidden_states.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states)
        pad_h, pad_w = -height % size, -width % size
        rows, cols = (height + pad_h) // size, (width + pad_w) // size
        tokens = _to_windows(F.pad(hidden_states, (0, pad_w, 0, pad_h)), size)  # (B * windows, size^2, C)
        mask = None
        if pad_h or pad_w:  # padded tokens are no keys
            valid = F.pad(torch.ones(1, 1, height, width, dtype=torch.bool, device=tokens.device), (0, pad_w, 0, pad_h))
            mask = _to_windows(valid, size).view(rows * cols, 1, 1, size * size).repeat(batch, 1, 1, 1)

        query, key, value = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
        head_dim = query.shape[-1] // attn.heads
        query, key, value = (x.view(x.shape[0], -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout

        out = out.view(batch, rows, cols, size, size, -1).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(batch, -1, rows * size, cols * size)[..., :height, :width]
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _positive_int(value, what: str) -> int:
    """``value`` as an ``int`` (any integer type: Python, numpy, torch), or a ValueError naming ``what``."""
    number = as_integer(value)
    if number is None or number < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return number


def _to_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """`(B, C, H, W)` (sides multiples of ``size``) -> `(B * H/size * W/size, size^2, C)`, windows row-major."""
    batch, channels, height, width = x.shape
    x = x.view(batch, channels, height // size, size, width // size, size).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, size * size, channels)


def set_unet_attention_window(unet: torch.nn.Module, window_size: int | None) -> int:
    """Give every ``Attention`` layer of a diffusers ``UNet2DModel`` a :class:`WindowAttnProcessor` whose windows
    cover ``window_size`` x ``window_size`` pixels of the UNet's input: ``window_size / 2^i`` tokens in a layer that
    works at ``1 / 2^i`` of the input (down block ``i``, the mid-block at the deepest level, up blocks mirrored);
    ``None``: diffusers' ``AttnProcessor2_0`` (global attention) everywhere.

    Args:
        unet: a ``UNet2DModel`` (``down_blocks``, ``mid_block``, ``up_blocks``).
        window_size (`int`, *optional*): window side in input pixels, a multiple of ``2^(levels - 1)``.

    Returns:
        The number of attention layers set.

    Raises:
        ValueError: ``window_size`` not a positive multiple of ``2^(levels - 1)``.
    """
    deepest = 2 ** (len(unet.down_blocks) - 1)
    if window_size is not None:
        window_size = _positive_int(window_size, "`window_size` (LR pixels)")
        if window_size % deepest:
            raise ValueError(f"`window_size` (LR pixels) must be a multiple of {deepest}, the UNet's deepest stride, "
                             f"got {window_size}.")
    levels = [(block, 2**i) for i, block in enumerate(unet.down_blocks)] + [(unet.mid_block, deepest)]
    levels += [(block, deepest // 2**i) for i, block in enumerate(unet.up_blocks)]
    return _set_window_tokens([(block, None if window_size is None else window_size // stride)
                               for block, stride in levels])


def set_decoder_attention_window(decoder: torch.nn.Module, window_size: int | None) -> int:
    """Give every ``Attention`` layer of a diffusers ``Decoder`` (``vqvae.decoder``) a :class:`WindowAttnProcessor`
    whose windows cover ``window_size`` x ``window_size`` pixels of the latent (for VQ-f4 the LR image): that many
    tokens in the mid-block, ``window_size * 2^i`` in up block ``i`` (which works at ``2^i`` of the latent size);
    ``None``: diffusers' ``AttnProcessor2_0`` (global attention) everywhere.

    Args:
        decoder: a diffusers ``Decoder`` (``mid_block``, ``up_blocks``), e.g. ``VQModel.decoder``.
        window_size (`int`, *optional*): window side in latent pixels.

    Returns:
        The number of attention layers set.

    Raises:
        ValueError: ``window_size`` not a positive integer.
    """
    if window_size is not None:
        window_size = _positive_int(window_size, "`window_size` (latent pixels)")
    levels = [(decoder.mid_block, 1)] + [(block, 2**i) for i, block in enumerate(decoder.up_blocks)]
    return _set_window_tokens([(block, None if window_size is None else window_size * scale)
                               for block, scale in levels])


def _set_window_tokens(levels: list[tuple[torch.nn.Module | None, int | None]]) -> int:
    """Set each block's ``Attention`` layers to windows of the given side in tokens (``None``: global attention);
    returns the number of layers set."""
    count = 0
    for block, tokens in levels:
        if block is None:
            continue
        processor = AttnProcessor2_0() if tokens is None else WindowAttnProcessor(tokens)
        for layer in (module for module in block.modules() if isinstance(module, Attention)):
            layer.set_processor(processor)
            count += 1
    return count
