# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""ResShift residual-shifting scheduler (Yue et al., NeurIPS 2023), as a diffusers scheduler.

Pure schedule math over tensors: it knows nothing of wavelets, latents or images. The state moves
from the low-resolution condition ``y`` (``t = T-1``) to the clean sample ``x_0`` (``t = -1``):

    q(x_t | x_0, y) = N(x_0 + eta_t (y - x_0), kappa^2 eta_t I)

This file is self-contained (torch + diffusers only): it is also the Hub code file of the
``scheduler`` component.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


@dataclass
class ResShiftSchedulerOutput(BaseOutput):
    """Output of :meth:`ResShiftScheduler.step`.

    Args:
        prev_sample (`torch.Tensor` of shape `(B, C, H, W)`):
            The state at the next timestep of the sampling list (``x_{t'}``).
        pred_original_sample (`torch.Tensor` of shape `(B, C, H, W)`):
            The model's estimate of ``x_0`` that the step used.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def resshift_sqrt_etas(
    num_train_timesteps: int, min_noise_level: float, etas_end: float, kappa: float, power: float
) -> torch.Tensor:
    """The ResShift v2 schedule ``sqrt(eta_t)``, t = 1..T, in float64 (shape `(T,)`)."""
    sqrt_eta_1 = min(min_noise_level / kappa, min_noise_level)
    if num_train_timesteps == 1:
        return torch.tensor([etas_end], dtype=torch.float64)
    steps = num_train_timesteps - 1
    base = math.exp(math.log(etas_end / sqrt_eta_1) / steps)
    exponent = (torch.arange(num_train_timesteps, dtype=torch.float64) / steps) ** power * steps
    return sqrt_eta_1 * base**exponent


class ResShiftScheduler(SchedulerMixin, ConfigMixin):
    """Residual-shifting scheduler with the posterior of ResShift, for any subsequence of steps.

    Timesteps are the integer indices ``0..T-1`` of the trained schedule (index ``t`` holds
    ``eta_{t+1}`` in the paper's 1-based notation); they are passed to the model unscaled.

    Args:
        num_train_timesteps (`int`): Number of trained diffusion steps ``T``.
        kappa (`float`): Noise scale; the forward variance is ``kappa^2 eta_t``.
        min_noise_level (`float`): Sets ``sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level)``.
        etas_end (`float`): ``sqrt(eta_T)``.
        power (`float`): Exponent ``p`` of the geometric schedule's time warp.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 15,
        kappa: float = 2.0,
        min_noise_level: float = 0.04,
        etas_end: float = 0.99,
        power: float = 0.3,
    ):
        if num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be >= 1, got {num_train_timesteps}.")
        if kappa <= 0 or not 0 < etas_end <= 1 or min_noise_level <= 0:
            raise ValueError(
                f"Invalid schedule: kappa={kappa}, etas_end={etas_end}, min_noise_level={min_noise_level}"
                " (need kappa > 0, 0 < etas_end <= 1, min_noise_level > 0)."
            )
        # float64 master copies: ratios like eta_{t-1}/eta_t lose digits in float32 near t=1
        self.sqrt_etas = resshift_sqrt_etas(num_train_timesteps, min_noise_level, etas_end, kappa, power)
        self.etas = self.sqrt_etas**2
        # The prior's standard deviation around the condition, as diffusers' `init_noise_sigma`.
        self.init_noise_sigma = float(kappa * self.sqrt_etas[-1])
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.long)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose ``num_inference_steps`` decreasing trained indices from ``T-1`` down to ``0``.

        ``n = T`` gives every step; ``n = 1`` gives ``[T-1]`` (one jump from the prior to ``x_0``).
        """
        T = self.config.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ValueError(
                f"`num_inference_steps` must be an integer in [1, {T}] (the trained steps), "
                f"got {num_inference_steps!r}."
            )
        if num_inference_steps == 1:
            timesteps = [T - 1]
        else:
            # evenly spaced over the trained indices, always including both ends
            timesteps = torch.linspace(T - 1, 0, num_inference_steps, dtype=torch.float64).round().long().tolist()
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.tensor(timesteps, dtype=torch.long, device=device)

    def _eta(self, timesteps: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``eta`` at integer ``timesteps``, broadcast to ``like``'s rank (batch on dim 0)."""
        t = torch.as_tensor(timesteps, device=self.etas.device).long().reshape(-1)
        if (t < 0).any() or (t >= self.config.num_train_timesteps).any():
            raise ValueError(f"timesteps must lie in [0, {self.config.num_train_timesteps - 1}], got {t.tolist()}.")
        eta = self.etas[t].to(device=like.device, dtype=like.dtype)
        return eta.reshape(-1, *([1] * (like.ndim - 1)))

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        """Normalise the state to unit variance for the model: ``x_t / sqrt(kappa^2 eta_t + 1)``."""
        eta = self._eta(timestep, sample)
        return sample / torch.sqrt(self.config.kappa**2 * eta + 1)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        lr_samples: torch.Tensor,
    ) -> torch.Tensor:
        """Forward process ``x_t = x_0 + eta_t (y - x_0) + kappa sqrt(eta_t) noise``.

        Args:
            original_samples (`torch.Tensor` of shape `(B, C, H, W)`): clean ``x_0``.
            noise (`torch.Tensor` of shape `(B, C, H, W)`): standard normal noise.
            timesteps (`torch.Tensor` of shape `(B,)`): integer indices in ``[0, T-1]``.
            lr_samples (`torch.Tensor` of shape `(B, C, H, W)`): the condition ``y`` in the same space.
        """
        eta = self._eta(timesteps, original_samples)
        return original_samples + eta * (lr_samples - original_samples) + self.config.kappa * eta.sqrt() * noise

    def prior_sample(self, lr_samples: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample of ``x_T``: ``y + kappa sqrt(eta_T) noise``."""
        return lr_samples + self.init_noise_sigma * noise

    def previous_timestep(self, timestep: int) -> int:
        """The timestep after ``timestep`` in the sampling list, or ``-1`` (meaning ``eta = 0``) at the end."""
        timesteps = self.timesteps.tolist()
        if int(timestep) not in timesteps:
            raise ValueError(f"timestep {int(timestep)} is not in the sampling list {timesteps}; call `set_timesteps`.")
        index = timesteps.index(int(timestep))
        return timesteps[index + 1] if index + 1 < len(timesteps) else -1

    def posterior_mean_variance(
        self, sample: torch.Tensor, pred_original_sample: torch.Tensor, timestep: int, prev_timestep: int
    ) -> tuple[torch.Tensor, float]:
        """Mean and variance of ``q(x_{t'} | x_t, x_0)`` for ``t' < t`` (``t' = -1`` means ``eta = 0``).

        mean = (eta_{t'} / eta_t) x_t + ((eta_t - eta_{t'}) / eta_t) x_0,
        variance = kappa^2 (eta_{t'} / eta_t) (eta_t - eta_{t'}).
        """
        eta_t = self.etas[int(timestep)]
        eta_prev = self.etas[int(prev_timestep)] if prev_timestep >= 0 else torch.zeros((), dtype=self.etas.dtype)
        if eta_prev >= eta_t:
            raise ValueError(f"The posterior needs prev_timestep < timestep, got {prev_timestep} >= {timestep}.")
        ratio = float(eta_prev / eta_t)
        mean = ratio * sample + (1.0 - ratio) * pred_original_sample
        variance = float(self.config.kappa**2 * ratio * (eta_t - eta_prev))
        return mean, variance

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        noise_scale: float = 1.0,
        lr_sample: torch.Tensor | None = None,
    ) -> ResShiftSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One reverse step from ``timestep`` to the next timestep ``t'`` of the sampling list.

        With ``noise_scale = 1`` this samples the ResShift posterior ``q(x_{t'} | x_t, x_0)`` (see
        :meth:`posterior_mean_variance`). With ``s = noise_scale < 1`` it takes the DDIM-style step
        (Song et al., ICLR 2021, in ResShift's parametrisation) that keeps the marginal
        ``q(x_{t'} | x_0, y)`` but draws only ``sigma^2 = s^2 * variance`` of fresh noise:

            eps = (x_t - x_0 - eta_t (y - x_0)) / (kappa sqrt(eta_t))
            x_{t'} = x_0 + eta_{t'} (y - x_0) + sqrt(kappa^2 eta_{t'} - sigma^2) eps + sigma noise

        ``s = 0`` is deterministic (the most faithful to ``x_0``); ``s = 1`` equals the posterior.

        Args:
            model_output (`torch.Tensor` of shape `(B, C, H, W)`): the predicted ``x_0`` in the
                state's space (ResShift predicts ``x_0`` directly).
            timestep (`int`): current index, an element of ``self.timesteps``.
            sample (`torch.Tensor` of shape `(B, C, H, W)`): current state ``x_t``.
            generator: for the posterior noise.
            return_dict: return a :class:`ResShiftSchedulerOutput` instead of a tuple.
            noise_scale (`float`): ``s`` in [0, 1], the share of the posterior's standard deviation
                drawn as fresh noise.
            lr_sample (`torch.Tensor` of shape `(B, C, H, W)`, *optional*): the condition ``y``;
                required when ``noise_scale < 1``.

        Returns:
            ``(prev_sample, pred_original_sample)``; at the last timestep of the list
            ``prev_sample`` is ``pred_original_sample`` itself (variance 0).

        Raises:
            ValueError: ``noise_scale`` outside [0, 1], or ``noise_scale < 1`` without ``lr_sample``.
        """
        if not 0.0 <= noise_scale <= 1.0:
            raise ValueError(f"noise_scale must lie in [0, 1], got {noise_scale}.")
        timestep = int(timestep)
        prev_timestep = self.previous_timestep(timestep)
        if prev_timestep < 0:
            prev_sample = model_output
        elif noise_scale == 1.0:
            mean, variance = self.posterior_mean_variance(sample, model_output, timestep, prev_timestep)
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev_sample = mean + math.sqrt(variance) * noise
        else:
            if lr_sample is None:
                raise ValueError("noise_scale < 1 needs `lr_sample` (the condition y) to recover the step's noise.")
            _, variance = self.posterior_mean_variance(sample, model_output, timestep, prev_timestep)
            kappa = self.config.kappa
            eta_t, eta_prev = float(self.etas[timestep]), float(self.etas[prev_timestep])
            residual = lr_sample - model_output
            eps = (sample - model_output - eta_t * residual) / (kappa * math.sqrt(eta_t))
            sigma = noise_scale * math.sqrt(variance)
            prev_sample = model_output + eta_prev * residual + math.sqrt(max(kappa**2 * eta_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
                prev_sample = prev_sample + sigma * noise
        if not return_dict:
            return (prev_sample, model_output)
        return ResShiftSchedulerOutput(prev_sample=prev_sample, pred_original_sample=model_output)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
