"""Training losses: image-space terms (LPIPS, Sobel edges, FFT), their schedules, and the
diffusion stage's loss (latent MSE plus timestep-weighted image-space terms, :func:`diffusion_loss`).

Every function returns a per-sample loss of shape `(B,)` so that the timestep weights can scale
each sample before the batch mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: `(B, ...)` -> `(B,)`."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def sobel(images: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel gradients of each channel: `(B, C, H, W)` -> `(B, 2C, H, W)`
    (replicate padding, so flat borders have no edges)."""
    channels = images.shape[1]
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.T]).to(images)  # (2, 3, 3)
    kernel = kernel.repeat(channels, 1, 1)[:, None]  # (2C, 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)


def sobel_edge_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance of Sobel gradients, `(B,)`."""
    return per_sample_mean((sobel(pred.float()) - sobel(target.float())).abs())


def fft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance of the orthonormal 2-D spectra (real and imaginary parts), `(B,)`."""
    diff = torch.fft.rfft2(pred.float(), norm="ortho") - torch.fft.rfft2(target.float(), norm="ortho")
    return per_sample_mean(torch.view_as_real(diff).abs())


def timestep_weights(timesteps: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """Weights of the image-space terms per sample: 1.0 in the first third of the schedule, 0.5 in the
    second, 0.1 in the last (for T = 15: t < 5, 5 <= t < 10, t >= 10). Near the prior the decoded
    estimate is blurry by necessity, so its perceptual terms count little."""
    band = (3 * timesteps.long()) // num_train_timesteps  # 0, 1, 2: integer maths, no float edge cases
    return torch.tensor([1.0, 0.5, 0.1], device=timesteps.device)[band.clamp(0, 2)]


def ramp(step: int, start: float, end: float, ramp_steps: int) -> float:
    """Linear ramp from ``start`` (step 0) to ``end`` (``ramp_steps`` and after)."""
    if ramp_steps <= 0:
        return end
    return start + (end - start) * min(step / ramp_steps, 1.0)


class ImageLosses(nn.Module):
    """Weighted image-space terms on decoded images, each returned separately.

    Args:
        lpips_model: a frozen LPIPS network taking `[-1, 1]` images (``difiisr_dwt.metrics.load_lpips``),
            or ``None`` to drop the term.
        edge_weight, fft_weight, l1_weight: weights of the Sobel, FFT and pixel L1 terms (0 drops a term).
    """

    def __init__(self, lpips_model: nn.Module | None, edge_weight: float = 0.1, fft_weight: float = 0.0,
                 l1_weight: float = 0.0):
        super().__init__()
        self.lpips = lpips_model
        self.edge_weight, self.fft_weight, self.l1_weight = edge_weight, fft_weight, l1_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample, unweighted terms `{name: (B,)}` for `(B, 3, H, W)` images in [-1, 1]."""
        terms = {}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(pred.float(), target.float()).reshape(pred.shape[0])
        if self.edge_weight > 0:
            terms["edge"] = sobel_edge_loss(pred, target)
        if self.fft_weight > 0:
            terms["fft"] = fft_loss(pred, target)
        if self.l1_weight > 0:
            terms["l1"] = per_sample_mean((pred.float() - target.float()).abs())
        return terms

    @property
    def active(self) -> bool:
        """Whether any term needs the decoded images."""
        return self.lpips is not None or any(w > 0 for w in (self.edge_weight, self.fft_weight, self.l1_weight))


def diffusion_loss(
    pred_latents: torch.Tensor,
    target_latents: torch.Tensor,
    timesteps: torch.Tensor,
    num_train_timesteps: int,
    image_terms: dict[str, torch.Tensor],
    weights: dict[str, float],
) -> dict[str, torch.Tensor]:
    """The diffusion stage's loss: ``mean((z0_hat - z_0)^2) + sum_k lambda_k * mean(w(t) * L_k(D(z0_hat), x))``.

    ``lambda_k`` are the term weights, ``w(t)`` the :func:`timestep_weights` and ``L_k`` the per-sample
    image-space terms of the decoded estimate against the HR crop ``x``.

    Args:
        pred_latents, target_latents (`(B, c, h, w)`): ``z0_hat`` and ``z_0``.
        timesteps (`(B,)`): the sampled indices.
        image_terms: per-sample unweighted terms `{name: (n,)}` (from :class:`ImageLosses`) of the first
            ``n <= B`` samples (decoding part of the batch saves time).
        weights: ``{name: weight}`` for each image term (the LPIPS weight already ramped).

    Returns:
        ``{"loss": total, "mse": ..., <name>: weighted batch mean of each term}`` (scalars).
    """
    out = {"mse": per_sample_mean((pred_latents.float() - target_latents.float()) ** 2).mean()}
    total = out["mse"]
    w_t = timestep_weights(timesteps, num_train_timesteps).to(pred_latents.device)
    for name, value in image_terms.items():
        out[name] = (weights[name] * w_t[: value.shape[0]] * value).mean()
        total = total + out[name]
    out["loss"] = total
    return out
