"""ResShiftScheduler against the published schedules and an independent float64 posterior."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch

from difiisr_dwt.schedulers.scheduling_resshift import ResShiftScheduler, ResShiftSchedulerOutput


def reference_etas(config: dict) -> list[float]:
    """DESIGN section 3, written out independently in plain Python floats."""
    T, kappa, p = config["num_train_timesteps"], config["kappa"], config["power"]
    sqrt_eta_1 = min(config["min_noise_level"] / kappa, config["min_noise_level"])
    b = math.exp(math.log(config["etas_end"] / sqrt_eta_1) / (T - 1))
    return [(sqrt_eta_1 * b ** (((t - 1) / (T - 1)) ** p * (T - 1))) ** 2 for t in range(1, T + 1)]


def test_constructor_names_and_defaults():
    params = inspect.signature(ResShiftScheduler.__init__).parameters
    for name in ("num_train_timesteps", "kappa", "min_noise_level", "etas_end", "power"):
        assert name in params
    scheduler = ResShiftScheduler()
    assert scheduler.config.num_train_timesteps == 15 and scheduler.config.kappa == 2.0
    assert scheduler.etas.shape == (15,) and scheduler.etas.is_floating_point()


@pytest.mark.parametrize("key", ["resshift_v2_15step", "resshift_v3_4step"])
def test_etas_match_published_schedule(shared_dir, key):
    reference = json.loads((shared_dir / "reference" / "resshift_schedules.json").read_text())[key]
    scheduler = ResShiftScheduler(**reference["config"])
    etas = torch.tensor(reference["etas"], dtype=torch.float64)
    sqrt_etas = torch.tensor(reference["sqrt_etas"], dtype=torch.float64)
    # the published values are rounded to 8 (etas) and 6 (sqrt_etas) decimals
    assert torch.allclose(scheduler.etas, etas, atol=1e-6, rtol=0)
    assert torch.allclose(scheduler.sqrt_etas, sqrt_etas, atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [2, 4, 15])
def test_etas_match_independent_formula(steps):
    config = dict(num_train_timesteps=steps, kappa=1.5, min_noise_level=0.05, etas_end=0.95, power=0.5)
    scheduler = ResShiftScheduler(**config)
    assert torch.allclose(scheduler.etas, torch.tensor(reference_etas(config), dtype=torch.float64), atol=1e-12)


def test_set_timesteps_subsequences():
    scheduler = ResShiftScheduler()
    scheduler.set_timesteps(15)
    assert scheduler.timesteps.tolist() == list(range(14, -1, -1))
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [14]
    scheduler.set_timesteps(4)
    ts = scheduler.timesteps.tolist()
    assert len(ts) == 4 and ts[0] == 14 and ts[-1] == 0 and ts == sorted(set(ts), reverse=True)
    for bad in (0, 16, -1, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            scheduler.set_timesteps(bad)


def test_config_json_round_trip(tmp_path):
    scheduler = ResShiftScheduler(kappa=1.0, min_noise_level=0.2, num_train_timesteps=4)
    scheduler.save_pretrained(tmp_path)
    loaded = ResShiftScheduler.from_pretrained(tmp_path)
    keys = ("num_train_timesteps", "kappa", "min_noise_level", "etas_end", "power")
    assert {k: loaded.config[k] for k in keys} == {k: scheduler.config[k] for k in keys}
    assert {k: loaded.config[k] for k in keys} == dict(num_train_timesteps=4, kappa=1.0, min_noise_level=0.2,
                                                       etas_end=0.99, power=0.3)
    assert torch.equal(loaded.etas, scheduler.etas)
    config = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert ResShiftScheduler.from_config(config).config.kappa == 1.0


def test_add_noise_scale_and_prior():
    scheduler = ResShiftScheduler()
    x0, y, noise = torch.randn(3, 2, 4, 4, dtype=torch.float64).unbind(0)
    x0, y, noise = x0[None], y[None], noise[None]
    for t in (0, 7, 14):
        eta = scheduler.etas[t].item()
        expected = x0 + eta * (y - x0) + 2.0 * math.sqrt(eta) * noise
        assert torch.allclose(scheduler.add_noise(x0, noise, torch.tensor([t]), y), expected, atol=1e-12)
        scaled = scheduler.scale_model_input(expected, t)
        assert torch.allclose(scaled, expected / math.sqrt(4.0 * eta + 1), atol=1e-12)
    assert torch.allclose(scheduler.prior_sample(y, noise), y + 2.0 * 0.99 * noise, atol=1e-12)
    assert scheduler.init_noise_sigma == pytest.approx(2.0 * 0.99)
    with pytest.raises(ValueError, match="timesteps"):
        scheduler.add_noise(x0, noise, torch.tensor([15]), y)


def independent_posterior(x_t, x_0, y, eta_t: float, eta_prev: float, kappa: float):
    """q(x_prev | x_t, x_0, y) by Bayes' rule for two Gaussians (float64), without DESIGN's closed form.

    Prior q(x_prev | x_0, y) = N(x_0 + eta_prev r, kappa^2 eta_prev) and transition
    q(x_t | x_prev, y) = N(x_prev + (eta_t - eta_prev) r, kappa^2 (eta_t - eta_prev)), r = y - x_0.
    """
    r = y - x_0
    alpha = eta_t - eta_prev
    var_prior, var_trans = kappa**2 * eta_prev, kappa**2 * alpha
    variance = 1 / (1 / var_prior + 1 / var_trans)
    mean = variance * ((x_0 + eta_prev * r) / var_prior + (x_t - alpha * r) / var_trans)
    return mean, variance


@pytest.mark.parametrize("steps", [15, 4, 1])
def test_step_mean_and_variance_match_float64_posterior(steps):
    scheduler = ResShiftScheduler()
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.tolist()
    x_t = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    x_0 = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for i, t in enumerate(timesteps):
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        assert scheduler.previous_timestep(t) == prev
        out = scheduler.step(x_0, t, x_t, generator=torch.Generator().manual_seed(i))
        assert isinstance(out, ResShiftSchedulerOutput) and out.pred_original_sample is x_0
        if prev < 0:
            assert out.prev_sample is x_0  # the last step returns the prediction exactly
            continue
        eta_t, eta_prev = scheduler.etas[t].item(), scheduler.etas[prev].item()
        y = torch.randn(x_t.shape, dtype=torch.float64)  # the posterior must not depend on y
        mean, variance = independent_posterior(x_t, x_0, y, eta_t, eta_prev, 2.0)
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        assert torch.allclose(out.prev_sample, mean + math.sqrt(variance) * noise, atol=1e-10)


@pytest.mark.parametrize("steps", [15, 4])
def test_posterior_preserves_forward_marginals_monte_carlo(steps):
    """x_t ~ q(x_t | x_0, y), one posterior step with the true x_0 must give q(x_t' | x_0, y)."""
    scheduler = ResShiftScheduler()
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    n = 200_000
    x_0, y = torch.full((n, 1, 1, 1), 0.3, dtype=torch.float64), torch.full((n, 1, 1, 1), -0.5, dtype=torch.float64)
    timesteps = scheduler.timesteps.tolist()
    for t, prev in zip(timesteps[:-1], timesteps[1:]):
        noise = torch.randn(x_0.shape, generator=generator, dtype=torch.float64)
        x_t = scheduler.add_noise(x_0, noise, torch.full((n,), t), y)
        x_prev = scheduler.step(x_0, t, x_t, generator=generator).prev_sample
        eta = scheduler.etas[prev].item()
        assert x_prev.mean().item() == pytest.approx(0.3 + eta * (-0.8), abs=5 * 2 * math.sqrt(eta / n) + 1e-9)
        assert x_prev.var().item() == pytest.approx(4.0 * eta, rel=0.02)


def test_step_rejects_unknown_timestep():
    scheduler = ResShiftScheduler()
    scheduler.set_timesteps(4)
    with pytest.raises(ValueError, match="not in the sampling list"):
        scheduler.step(torch.zeros(1, 1, 2, 2), 13, torch.zeros(1, 1, 2, 2))


def test_noise_scale_one_is_the_posterior_and_zero_keeps_the_marginal():
    """s = 1 samples q(x_t' | x_t, x_0) (same draw as the default step); s = 0 is the DDIM-style step,
    which maps x_t = forward(x_0, eps) to forward(x_0, eps) at t' with the same eps."""
    from difiisr_dwt.schedulers.scheduling_resshift import ResShiftScheduler

    scheduler = ResShiftScheduler()
    scheduler.set_timesteps(4)
    t, t_prev = int(scheduler.timesteps[1]), int(scheduler.timesteps[2])
    x0, y, noise = torch.randn(3, 2, 3, 8, 8).unbind(0)
    xt = scheduler.add_noise(x0, noise, torch.tensor([t, t]), y)
    posterior = scheduler.step(x0, t, xt, generator=torch.Generator().manual_seed(0)).prev_sample
    almost_one = scheduler.step(x0, t, xt, generator=torch.Generator().manual_seed(0), noise_scale=1 - 1e-9,
                                lr_sample=y).prev_sample
    assert torch.allclose(posterior, almost_one, atol=1e-5)
    deterministic = scheduler.step(x0, t, xt, noise_scale=0.0, lr_sample=y).prev_sample
    assert torch.allclose(deterministic, scheduler.add_noise(x0, noise, torch.tensor([t_prev, t_prev]), y), atol=1e-5)
    with pytest.raises(ValueError, match="lr_sample"):
        scheduler.step(x0, t, xt, noise_scale=0.5)
    with pytest.raises(ValueError, match="noise_scale"):
        scheduler.step(x0, t, xt, noise_scale=2.0, lr_sample=y)
