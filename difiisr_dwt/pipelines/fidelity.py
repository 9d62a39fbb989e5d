# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""The fidelity step of the DifIISR-DWT pipeline: make the decoded output agree with its input.

A sibling file of ``pipeline_difiisr_dwt.py`` (also in the Hub folder); it imports torch and the
image processor only. :class:`LRConsistencyMixin` is the pipeline's fidelity step (its settings and
``apply_lr_consistency``), the functions below are its parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .image_processor import ImageMeta, bicubic_resize


def back_project(
    sr: torch.Tensor, lr: torch.Tensor, iterations: int | torch.Tensor,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg, 1991): ``SR += up(LR - down(SR))``, ``iterations`` times;
    with ``bounds``, each round ends with a projection onto them (POCS with an amplitude constraint, Stark &
    Oskoui, 1989), so that clipping to what the output format holds does not undo the consistency.

    ``down`` is the degradation the model assumes (PIL-style bicubic, :func:`bicubic_resize`); each
    round removes most of what is left of ``down(SR) - LR``, so the output keeps the model's detail
    above the LR's Nyquist frequency and takes its levels from the input.

    Args:
        sr (`torch.Tensor` of shape `(B, C, sH, sW)`): the decoded output, [-1, 1].
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1].
        iterations (`int` or `torch.Tensor` of shape `(B,)`): rounds, for all images or per image; 0
            returns ``sr``.
        bounds (`(lo, hi)`, each `float` or `torch.Tensor` of shape `(B,)`, *optional*): the values the output
            may take, in ``sr``'s units (:meth:`LRConsistencyMixin.output_bounds`); ``None``: unbounded.

    Returns:
        A new `torch.Tensor` like ``sr`` (float32; within ``bounds`` when given and ``iterations`` > 0).
    """
    out = sr.float().clone()  # the caller's tensor is kept
    rounds = torch.as_tensor(iterations, device=out.device).reshape(-1, 1, 1, 1)
    lo, hi = (None, None) if bounds is None else (
        torch.as_tensor(b, dtype=torch.float32, device=out.device).reshape(-1, 1, 1, 1) for b in bounds)
    for index in range(int(rounds.max()) if rounds.numel() else 0):
        correction = bicubic_resize(lr - bicubic_resize(out, tuple(lr.shape[-2:])), tuple(out.shape[-2:]))
        out += correction if rounds.numel() == 1 else correction * (rounds > index)
        if bounds is not None:
            out = torch.maximum(torch.minimum(out, hi), lo)
    return out


def shrink_flat_detail(
    sr: torch.Tensor, lr: torch.Tensor, noise_level: float, upsampled: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep the model's departure from bicubic only where the input has structure.

    A Wiener-style gain per output pixel, ``g = a^2 / (a^2 + noise_level^2)``, with ``a`` the local
    standard deviation of the input's luma (3x3 LR window, bicubic-upscaled): on a flat patch
    (``a`` at the sensor's noise level or below) the output stays the smooth bicubic surface instead
    of a texture the model invents, on edges and texture (``a >> noise_level``) the model's detail
    passes unchanged: ``SR' = up(LR) + g (SR - up(LR))``.

    Args:
        sr (`torch.Tensor` of shape `(B, C, sH, sW)`): the decoded output, [-1, 1].
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1].
        noise_level (`float` or `torch.Tensor` of shape `(B,)`): in [-1, 1] pixel units (8-bit grey levels
            / 127.5), one for all images or one per image; 0 (for every image) returns ``sr``.
        upsampled (`torch.Tensor` like ``sr``, *optional*): ``up(LR)`` when the caller has it already.
    """
    noise = torch.as_tensor(noise_level, dtype=torch.float32, device=sr.device).reshape(-1, 1, 1, 1)
    if (noise <= 0).all():
        return sr
    size = tuple(sr.shape[-2:])
    luma = lr.float().mean(dim=1, keepdim=True)
    mean = F.avg_pool2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    square = F.avg_pool2d(F.pad(luma.square(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    activity = bicubic_resize((square - mean.square()).clamp_min(0), size).clamp_min(0)
    gain = torch.where(noise > 0, activity / (activity + noise.square()).clamp_min(1e-12), torch.ones_like(activity))
    upsampled = bicubic_resize(lr, size) if upsampled is None else upsampled
    return upsampled + gain * (sr.float() - upsampled)


# ---------------------------------------------------------------------------------------------- noise
# Immerkaer's mask: the difference of two Laplacians, blind to planes and to constant column / row offsets.
_IMMERKAER_MASK = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
#: Side (LR pixels) of the blocks whose estimates are ranked, and the rank used.
NOISE_BLOCK, NOISE_QUANTILE = 16, 0.1
#: Blocks the ranking needs: smaller images use smaller blocks, down to :data:`MIN_NOISE_BLOCK`; an image with
#: fewer blocks even then (under about 96x80 LR pixels) is too small to tell noise from texture.
MIN_NOISE_BLOCKS, MIN_NOISE_BLOCK = 40, 12
#: The ratio the rank has to the true sigma on white Gaussian noise, per block side (10th percentile; measured
#: on 40 fields of 640x512 pure noise; 16 px: 0.895 as measured on 160x128 to 640x512 images, where the
#: calibrated estimate is within 1% of sigma).
NOISE_CALIBRATION = {12: 0.858, 13: 0.869, 14: 0.878, 15: 0.885, 16: 0.895}
#: rows of each band whose column offsets are compared (:func:`estimate_column_offsets`)
MIN_BAND_ROWS = 8
#: column offsets beyond this many robust standard deviations of the frame's offsets are scene, not sensor
OFFSET_OUTLIER = 4.0


def estimate_noise_level(lr: torch.Tensor) -> torch.Tensor:
    """Standard deviation of white sensor noise in each image: Immerkaer's fast noise variance estimation
    (J. Immerkaer, "Fast Noise Variance Estimation", CVIU 64(2), 1996) on its weakest-texture blocks.

    Immerkaer's estimate ``sigma = sqrt(pi / 2) / 6 * mean |x * M|`` (``M`` the difference of two
    Laplacians) counts texture as noise; taken per 16x16 block and read at the blocks' 10th percentile
    (the flattest parts of the frame, as in the weak-texture patch selection of Liu, Tanaka & Okutomi,
    IEEE TIP 2013), divided by that percentile's ratio on pure noise (:data:`NOISE_CALIBRATION`), it
    follows the noise and not the scene. The percentile needs blocks to choose from: an image with fewer
    than :data:`MIN_NOISE_BLOCKS` blocks of 16 uses the largest block side down to 12 that gives as many,
    and one too small even for that (under about 96x80 LR pixels) gets 0: no estimate, the input is its own
    target. With a handful of blocks the flattest is texture: on random crops of the training lists' clean
    LR (``/4`` PIL bicubic) the target moved by more than 0.5 grey level (mean) for 37% of 32x32 crops, 12%
    of 64x48 and 6% of 96x64 with 16-pixel blocks, for none from 96x80 up with this rule, which still finds
    the noise of ``eval --noisy-lr`` in every crop from 96x80 up. Blocks more than half clipped (8-bit black
    or white) are left out (clipping removes their noise; they would read as the flattest), unless that
    leaves under a quarter of the blocks. ``M`` sums to zero down every column and along every row, so column
    and row stripes do not enter it (see :func:`estimate_column_offsets`).

    Args:
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1] (channels averaged).

    Returns:
        `torch.Tensor` of shape `(B,)`: sigma in the input's units (8-bit grey levels / 127.5).
    """
    luma = lr.float().mean(dim=1, keepdim=True)
    if min(luma.shape[-2:]) < 3:
        return luma.new_zeros(luma.shape[0])
    height, width = (side - 2 for side in luma.shape[-2:])  # the mask's valid response
    block = NOISE_BLOCK
    while block > MIN_NOISE_BLOCK and (height // block) * (width // block) < MIN_NOISE_BLOCKS:
        block -= 1
    if (height // block) * (width // block) < MIN_NOISE_BLOCKS:  # too small to tell noise from texture
        return luma.new_zeros(luma.shape[0])
    mask = torch.tensor(_IMMERKAER_MASK, dtype=luma.dtype, device=luma.device)[None, None]
    response = F.conv2d(luma, mask).abs()
    per_block = F.avg_pool2d(response, block, stride=block).flatten(1) * (math.sqrt(math.pi / 2) / 6)
    # mostly clipped blocks (black or white 8-bit) hold no measurable noise: they would read as the flattest
    clipped = (luma[..., 1:-1, 1:-1].abs() >= 1 - 0.5 / 127.5).to(luma.dtype)
    clipped = F.avg_pool2d(clipped, block, stride=block).flatten(1)
    sigma = []
    for blocks, bad in zip(per_block, clipped > 0.5):
        kept = blocks[~bad] if int((~bad).sum()) >= max(1, bad.numel() // 4) else blocks
        sigma.append(torch.quantile(kept, NOISE_QUANTILE))
    return torch.stack(sigma) / NOISE_CALIBRATION[block]


def estimate_column_offsets(lr: torch.Tensor, noise_level: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Fixed-pattern column offsets (the stripes of uncooled microbolometers) of each image.

    Per column, the median down the column of ``x - mean(x of the radius columns on each side)``: a
    horizontal high-pass whose median over the rows ignores the scene, which varies along the column,
    and keeps an offset shared by the whole column. Scene structure can pass that test (a pole, the
    edge of a road or a wall, texture in an aerial view), so the estimate is conservative:

    1. the median is taken in the top and in the bottom half (from ``2 MIN_BAND_ROWS`` rows), and the
       column gets the smaller of the two where they agree in sign, none where they do not (minmod,
       the limiter of TVD schemes): a fixed-pattern offset is the same down the whole column;
    2. offsets beyond :data:`OFFSET_OUTLIER` robust standard deviations (``1.4826 x`` the median of
       ``|c|``) of the frame's offsets are set to none: sensor offsets are many and alike;
    3. offsets within chance of the white noise (the median of ``n`` samples has a standard deviation
       of ``1.2533 sigma / sqrt(n)``) are shrunk to zero by the gain ``c^2 / (c^2 + tau^2)``, ``tau``
       twice that.

    Measured on the clean LR (PIL bicubic /4) of the training lists: without 1 and 2, removing the
    offsets moved a clean ``mixed_train.txt`` LR by up to 8.5 grey levels on average (HIT-UAV and SIRST
    frames), with them by at most 0.84 (0.12 on RoadScene train).

    Args:
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1] (channels averaged).
        noise_level (`torch.Tensor` of shape `(B,)`): the white-noise sigma (:func:`estimate_noise_level`).
        radius (`int`): columns on each side of the high-pass.

    Returns:
        `torch.Tensor` of shape `(B, 1, 1, W)`, zero mean over the columns, in the input's units.
    """
    luma = lr.float().mean(dim=1, keepdim=True)
    height, width = luma.shape[-2:]
    if width < 3:
        return luma.new_zeros(luma.shape[0], 1, 1, width)
    radius = min(radius, width - 1)
    # point-symmetric extension (2 x_edge - mirror): a linear ramp leaves no residual at the borders
    left = 2 * luma[..., :1] - luma[..., 1 : radius + 1].flip(-1)
    right = 2 * luma[..., -1:] - luma[..., -radius - 1 : -1].flip(-1)
    window = F.avg_pool2d(torch.cat([left, luma, right], dim=-1), (1, 2 * radius + 1), stride=1)
    neighbours = (window * (2 * radius + 1) - luma) / (2 * radius)
    high_pass = luma - neighbours
    if height >= 2 * MIN_BAND_ROWS:  # one estimate per half: a fixed-pattern offset is the same in both
        half = height // 2
        top = high_pass[..., :half, :].median(dim=-2, keepdim=True).values
        bottom = high_pass[..., half:, :].median(dim=-2, keepdim=True).values
        # minmod, the conservative limiter: the smaller estimate where both agree in sign, else none
        offsets = torch.where(top * bottom > 0, torch.sign(top) * torch.minimum(top.abs(), bottom.abs()),
                              torch.zeros_like(top))
        rows = half
    else:
        offsets, rows = high_pass.median(dim=-2, keepdim=True).values, height
    offsets = offsets - offsets.mean(dim=-1, keepdim=True)
    # sensor offsets are many and alike; a few columns far beyond the rest are scene (a pole, a road edge)
    scale = 1.4826 * offsets.abs().median(dim=-1, keepdim=True).values
    offsets = torch.where(offsets.abs() <= OFFSET_OUTLIER * scale, offsets, torch.zeros_like(offsets))
    tau = 2 * 1.2533 * math.sqrt(1 + 1 / (2 * radius)) / math.sqrt(rows) * noise_level.view(-1, 1, 1, 1)
    return offsets * offsets.square() / (offsets.square() + tau.square()).clamp_min(1e-12)


def wiener_denoise(lr: torch.Tensor, noise_level: torch.Tensor, size: int = 5) -> torch.Tensor:
    """The locally adaptive Wiener filter (J.-S. Lee, "Digital image enhancement and noise filtering by use
    of local statistics", IEEE PAMI 2(2), 1980; ``scipy.signal.wiener``): ``m + max(v - s^2, 0) / v (x - m)``
    with ``m``, ``v`` the mean and variance of a ``size`` x ``size`` window: flat parts go to their local
    mean, edges and texture well above the noise pass.

    Args:
        lr (`torch.Tensor` of shape `(B, C, H, W)`): [-1, 1].
        noise_level (`torch.Tensor` of shape `(B,)`): sigma per image; 0 returns ``lr`` unchanged.
    """
    pad = size // 2
    mode = "reflect" if min(lr.shape[-2:]) > pad else "replicate"
    padded = F.pad(lr.float(), (pad, pad, pad, pad), mode=mode)
    mean = F.avg_pool2d(padded, size, stride=1)
    variance = (F.avg_pool2d(padded.square(), size, stride=1) - mean.square()).clamp_min(0)
    noise = noise_level.float().view(-1, 1, 1, 1).square()
    gain = torch.where(variance > noise, (variance - noise) / variance.clamp_min(1e-12), torch.zeros_like(variance))
    return mean + gain * (lr.float() - mean)


@dataclass
class NoiseModel:
    """What :func:`noise_free_target` found in one batch: sigma of the white noise, the part of it above what
    clean frames show (the noise the fidelity step removes), and the column offsets removed; all in the
    input's units (grey levels / 127.5)."""

    noise_level: torch.Tensor  # (B,)
    excess_noise_level: torch.Tensor  # (B,)
    column_offsets: torch.Tensor  # (B, 1, 1, W)


def noise_free_target(
    lr: torch.Tensor, clean_noise_level: float, noise_level: torch.Tensor | None = None
) -> tuple[torch.Tensor, NoiseModel]:
    """The noise-free LR the fidelity step makes the output agree with.

    With ``sigma`` estimated, ``excess = sqrt(max(sigma^2 - clean_noise_level^2, 0))``: a clean thermal
    frame downsampled by PIL bicubic still reads as sigma of about 1 grey level (its own sensor noise and
    fine texture: 0.9-1.4 from the median to the 90th percentile of RoadScene and mixed training frames,
    2.0-2.5 with the noise of ``eval --noisy-lr`` added), so only the noise above
    ``clean_noise_level`` is removed. The column offsets (:func:`estimate_column_offsets`) are removed with
    the weight ``excess^2 / (excess^2 + clean_noise_level^2)``, then :func:`wiener_denoise` with ``excess``.
    The white-noise estimate alone cannot tell a clean frame with sensor noise of its own from a cleaner
    frame with added noise (their ranges overlap), so the target is built to cost little where it fires on
    a clean frame: with ``clean_noise_level`` 1.5 grey levels, the mean ``|target - lr|`` of a clean LR is
    at most 0.12 grey level on RoadScene train and above 0.5 on 4 of 1235 ``mixed_train.txt`` frames
    (0.64-0.84, frames whose own noise reads as sigma 3.3-3.9); on the held-out sets at most 0.19
    (RoadScene val), 0.22 (``mixed_val.txt``) and 0.36 (``tno/``).

    Args:
        lr (`torch.Tensor` of shape `(B, C, H, W)`): the input, [-1, 1].
        clean_noise_level (`float`): in the input's units; sigma at or below it is not treated as noise.
        noise_level (`torch.Tensor` of shape `(B,)`, *optional*): the noise to remove, per image (a
            known sensor noise; ``excess`` is then this, with no clean floor, 0 leaves ``lr`` unchanged);
            estimated (:func:`estimate_noise_level`) when not given, and for the images where it is NaN.

    Returns:
        ``(target, noise model)``: the target like ``lr`` (float32; ``lr`` itself where the excess is 0).
    """
    given = None if noise_level is None else noise_level.float().to(lr.device)
    sigma = excess = given
    if given is None or torch.isnan(given).any():  # NaN: this image's noise is estimated
        estimate = estimate_noise_level(lr)
        estimated_excess = (estimate.square() - clean_noise_level**2).clamp_min(0).sqrt()
        unknown = torch.ones_like(estimate, dtype=torch.bool) if given is None else torch.isnan(given)
        sigma = estimate if given is None else torch.where(unknown, estimate, given)
        excess = estimated_excess if given is None else torch.where(unknown, estimated_excess, given)
    weight = (excess.square() / (excess.square() + clean_noise_level**2 + 1e-12)).view(-1, 1, 1, 1)
    offsets = estimate_column_offsets(lr, sigma) * weight
    target = wiener_denoise(lr.float() - offsets, excess)
    noisy = (excess > 0).view(-1, 1, 1, 1)
    target = torch.where(noisy, target, lr.float())
    return target, NoiseModel(sigma, excess, offsets)


class LRConsistencyMixin:
    """The fidelity step of :class:`~.pipeline_difiisr_dwt.DifIISRDWTPipeline` (``lr_consistency=True``): its
    settings, as class attributes a subclass or an instance may override, and the step itself."""

    #: rounds of iterative back-projection under ``lr_consistency=True``.
    back_projection_iterations = 10
    #: input noise level (8-bit grey levels) below which ``lr_consistency=True`` keeps no invented
    #: detail (:func:`shrink_flat_detail`), added in quadrature to the noise found in the input.
    detail_noise_level = 1.0
    #: estimated noise sigma (8-bit grey levels) that clean frames show (fine texture, the scene's own noise):
    #: only the noise above it is removed from the fidelity target (:func:`noise_free_target`).
    clean_noise_level = 1.5
    #: on a noisy input the model's departure from bicubic carries the noise sharpened: the flat-detail
    #: threshold is ``hypot(detail_noise_level, detail_noise_gain x removed noise)``.
    detail_noise_gain = 3.0
    #: back-projection rounds on a noisy input: each round restores more of the target's high frequencies,
    #: where what is left of the noise lives. Measured on training frames (default model, 6 RoadScene
    #: train frames with the noise of ``eval --noisy-lr``, 8 mixed-train frames whose clean LR the estimate
    #: finds noisy): 1 / 3 / 10 rounds give +0.68 / +0.65 / +0.62 dB over bicubic on the noisy frames, and
    #: leave up to 0.63 / 0.37 / 0.29 grey level of mean LR error on the clean ones: 3 keeps clean inputs
    #: well within 0.5 for 0.03 dB.
    noisy_back_projection_iterations = 3
    #: removed noise (8-bit grey levels) at which the remaining rounds count half: the output is
    #: ``x_n + w (x_N - x_n)``, ``w = 1 / (1 + (removed / this)^4)``, so that a frame whose estimate is barely
    #: above :attr:`clean_noise_level` keeps nearly exact consistency and nothing jumps between video frames.
    noisy_rounds_noise_level = 0.5

    @staticmethod
    def input_noise_levels(input_noise_level: float | str | None, metas: list[ImageMeta]) -> torch.Tensor:
        """The ``input_noise_level`` of :meth:`__call__` per image: `(B,)` sigma in grey levels, NaN where it is
        estimated. ``"auto"`` estimates it on 8-bit frames and takes radiometric frames (16-bit, or in the
        units of a ``value_range``) as exact (0); ``None`` estimates it everywhere."""
        def level(meta: ImageMeta) -> float:
            if input_noise_level == "auto":
                return 0.0 if meta.bit16 or meta.in_units else float("nan")
            return float("nan") if input_noise_level is None else float(input_noise_level)

        return torch.tensor([level(meta) for meta in metas], dtype=torch.float32)

    @staticmethod
    def output_bounds(metas: list[ImageMeta]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(lo, hi)`, each `(B,)`: what each output's format holds, in the model's [-1, 1] units of its input:
        0..255 for 8-bit images, 0..65535 counts for 16-bit ones (scaled by their own or the given range),
        unbounded for float and other integer inputs in their units. The fidelity step stays within them
        (:func:`back_project`), so the output's clipping does not undo its consistency."""
        def bounds(meta: ImageMeta) -> tuple[float, float]:
            if meta.is_float or meta.wide_int:
                return -math.inf, math.inf
            if not (meta.bit16 or meta.in_units):
                return -1.0, 1.0
            top, span = (65535.0 if meta.bit16 else 255.0), (meta.high - meta.low) or 1.0
            return 2 * (0.0 - meta.low) / span - 1, 2 * (top - meta.low) / span - 1

        lo, hi = zip(*(bounds(meta) for meta in metas))
        return torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)

    def apply_lr_consistency(
        self, sr: torch.Tensor, lr: torch.Tensor, input_noise_level: float | str | torch.Tensor | None = None,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The fidelity step: agree with the input, not with its noise.

        1. The noise-free target (:func:`noise_free_target`): the input less the estimated noise above
           :attr:`clean_noise_level` (column offsets, then a local Wiener filter); a clean input is its
           own target. Where the target's bicubic upscale lies outside [-1, 1] (radiometric data beyond a
           given ``value_range``: the model saw it clamped), the output starts from that upscale.
        2. :func:`shrink_flat_detail` onto the target with the noise level
           ``hypot(detail_noise_level, detail_noise_gain x removed noise)``: where the target is flat, the
           output is its smooth bicubic surface, not the model's sharpened grain.
        3. :func:`back_project` onto the target: :attr:`back_projection_iterations` rounds on a clean
           input (exact consistency), :attr:`noisy_back_projection_iterations` where noise was removed, and
           in between a blend of the two that is continuous in the removed noise
           (:attr:`noisy_rounds_noise_level`).

        Args:
            sr (`torch.Tensor` of shape `(B, 1, sH, sW)`): the decoded luma, [-1, 1].
            lr (`torch.Tensor` of shape `(B, 1, H, W)`): the input luma, [-1, 1].
            input_noise_level (`float` or `torch.Tensor` of shape `(B,)`, *optional*): the input's noise sigma
                in grey levels, one for all images or one per image; ``None``, NaN or ``"auto"`` (the default
                of :meth:`__call__`, as training passes it): estimated. Which images of a call are
                radiometric (exact under ``"auto"``) is known only to :meth:`__call__`
                (:meth:`input_noise_levels`); here every image is taken as an 8-bit one.
            bounds (`(lo, hi)`, *optional*): what the outputs' formats hold (:meth:`output_bounds`); default
                [-1, 1], an 8-bit image's 0..255.

        Returns:
            `torch.Tensor` like ``sr`` (float32, within ``bounds``).
        """
        given = None
        if input_noise_level is not None and not (isinstance(input_noise_level, str) and input_noise_level == "auto"):
            given = torch.as_tensor(input_noise_level, dtype=torch.float32).expand(lr.shape[0]) / 127.5
        target, noise = noise_free_target(lr, self.clean_noise_level / 127.5, given)
        # outside [-1, 1] (a value_range narrower than the data) the model saw a clamped input and gave a clamped
        # output: there it knows nothing, and the bicubic surface is the estimate to back-project from
        upsampled = bicubic_resize(target, tuple(sr.shape[-2:]))
        sr = torch.where(upsampled.abs() > 1, upsampled, sr.float())
        removed = noise.excess_noise_level.cpu()
        detail_noise = torch.hypot(self.detail_noise_gain * removed, torch.tensor(self.detail_noise_level / 127.5))
        sr = shrink_flat_detail(sr, target, detail_noise, upsampled)
        bounds = (-1.0, 1.0) if bounds is None else bounds
        few = back_project(sr, target, self.noisy_back_projection_iterations, bounds)
        weight = 1 / (1 + (removed * 127.5 / self.noisy_rounds_noise_level) ** 4)
        if bool((weight < 1e-6).all()):  # every image noisy: the remaining rounds would not count
            return few
        rounds = self.back_projection_iterations - self.noisy_back_projection_iterations
        full = back_project(few, target, rounds, bounds)
        return few.lerp_(full, weight.view(-1, 1, 1, 1).to(few.device))
