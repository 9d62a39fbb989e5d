"""End-to-end benchmark: the DWT pipeline against the same pipeline started from the VQ encoder, and
diffusers' ``LDMSuperResolutionPipeline`` (100 DDIM steps, a UNet of equal size), with the time split
into encoder / adapter / UNet / decoder / everything else.

The split comes from timers wrapped around the components' methods (:class:`ComponentTimer`); the
"other" share is the pipeline's measured total minus the time inside those calls, so any overhead
of the pipeline itself (pre/post-processing, scheduler math, tiling, copies) lands there.

The ratio check predicts DWT / VQ-start time from per-call component costs. Those costs are the
medians of the calls made inside the measured runs themselves (both pipelines pooled for the
shared UNet, adapter and decoder): on a shared CPU the same decoder call varies by ~10% from one
minute to the next, so components timed in a separate block predict a different machine state
than the one the pipelines ran in. The separately timed components are still reported.
"""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, UNet2DModel

# Imported from its module: the package-level name is only exported when transformers is installed.
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution import (
    LDMSuperResolutionPipeline,
)

from difiisr_dwt.benchmarks import BenchConfig
from difiisr_dwt.benchmarks.timing import ComponentTimer, count_parameters, measure_peak_rss, time_call
from difiisr_dwt.benchmarks.vq_start import vq_start_pipeline
from difiisr_dwt.presets import build_pipeline, build_scheduler

logger = logging.getLogger(__name__)

OTHER_SHARE_LIMIT = 0.03  # acceptance: time outside DWT/UNet/VQ calls at the full step count
RATIO_TOLERANCE = 0.02  # acceptance: measured vs predicted end-to-end ratio


def build_ldm_pipeline(pipe) -> LDMSuperResolutionPipeline:
    """diffusers' LDM x4 pipeline sharing ``pipe``'s VQ model, with a UNet of the same configuration
    taking the LDM input (latent + LR image channels)."""
    latent_channels = pipe.vqvae.config.latent_channels
    unet = UNet2DModel.from_config({**pipe.unet.config, "in_channels": 2 * latent_channels}).eval()
    # LDM-SR's training schedule (CompVis config); it does not change the cost of a step.
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0155, clip_sample=False)
    ldm = LDMSuperResolutionPipeline(vqvae=pipe.vqvae, unet=unet, scheduler=scheduler)
    ldm.set_progress_bar_config(disable=True)
    return ldm


@torch.no_grad()
def component_times(pipe, lr_size: tuple[int, int], repeats: int, seconds: float) -> tuple[dict, dict]:
    """Seconds per call of each component alone, at the shapes the pipelines use for ``lr_size``.

    Returns:
        ``({"dwt_encoder", "vq_encoder", "adapter", "unet", "decoder"}, same keys)``: the fastest call
        of each in wall-clock seconds (other load on the machine only adds time), and in CPU seconds.
    """
    height, width = lr_size
    factor = pipe.upscale_factor
    latent_channels = pipe.vqvae.config.latent_channels
    image = torch.rand(1, 3, height * factor, width * factor) * 2 - 1
    latents = torch.randn(1, latent_channels, height, width)
    unet_input = torch.randn(1, pipe.unet.config.in_channels, height, width)
    timestep = torch.full((1,), pipe.scheduler.config.num_train_timesteps - 1, dtype=torch.long)
    quantize = pipe.config.quantize_decode
    calls = {
        "dwt_encoder": lambda: pipe.dwt_encoder.encode(image),
        "vq_encoder": lambda: pipe.vqvae.encode(image).latents,
        "adapter": lambda: pipe.dwt_encoder.project_latent(latents),
        "unet": lambda: pipe.unet(unet_input, timestep).sample,
        "decoder": lambda: pipe.decode_vq_latents(latents, quantize),
    }
    wall, cpu = {}, {}
    for name, fn in calls.items():
        if name in ("dwt_encoder", "adapter"):  # milliseconds: many repeats cost nothing
            timing = time_call(fn, repeats=20, warmup=1, max_seconds=seconds)
        else:
            timing = time_call(fn, repeats=repeats, max_seconds=seconds)
        wall[name], cpu[name] = timing.minimum, timing.cpu_minimum
    return wall, cpu


def timed_run(call, wraps: list[tuple[object, str, str]]) -> dict:
    """Run ``call()`` once under component timers and a peak-memory probe.

    Args:
        call: runs the pipeline.
        wraps: ``(object, method name, category)`` to time.

    Returns:
        ``{"total_s", "cpu_s", "split_s": {category: s, "other": s}, "calls", "memory": {...}}``
        (``cpu_s``: this process's CPU time).
    """
    with ComponentTimer() as timer:
        for obj, method, category in wraps:
            timer.wrap(obj, method, category)

        def run() -> tuple[float, float]:
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            return time.perf_counter() - start, time.process_time() - cpu_start

        (total, cpu), memory = measure_peak_rss(run)
        split = dict(timer.seconds)
        calls = dict(timer.calls)
        call_seconds = {category: list(values) for category, values in timer.durations.items()}
    split["other"] = total - sum(split.values())
    return {"total_s": total, "cpu_s": cpu, "split_s": split, "calls": calls, "call_s": call_seconds,
            "memory": memory}


def _median_run(runs: list[dict]) -> dict:
    """The run with the median total (the lower middle one for an even count), plus every run's
    total and the median total."""
    ordered = sorted(runs, key=lambda r: r["total_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["all_totals_s"] = [r["total_s"] for r in runs]
    chosen["median_total_s"] = statistics.median(chosen["all_totals_s"])
    return chosen


def paired_ratio(dwt_runs: list[dict], vq_runs: list[dict], key: str) -> float:
    """Median over repeats of ``dwt[key] / vq[key]`` for the two runs of each repeat, which ran back to
    back: a machine whose speed drifts over minutes moves both runs of a pair alike, so the pairwise
    ratio cancels the drift that a ratio of separately pooled totals keeps."""
    return statistics.median(a[key] / b[key] for a, b in zip(dwt_runs, vq_runs, strict=True))


def in_run_components(dwt_runs: list[dict], vq_runs: list[dict]) -> dict:
    """Median seconds per call of each component, read off the measured pipeline runs.

    Returns:
        ``{"dwt_encoder", "vq_encoder", "adapter", "unet", "decoder"}``; the encoders from their own
        pipeline's runs, the shared components from the calls of both pipelines.
    """

    def median_call(runs: list[dict], category: str) -> float:
        return statistics.median(d for run in runs for d in run["call_s"][category])

    both = dwt_runs + vq_runs
    return {
        "dwt_encoder": median_call(dwt_runs, "encoder"),
        "vq_encoder": median_call(vq_runs, "encoder"),
        "adapter": median_call(both, "adapter"),
        "unet": median_call(both, "unet"),
        "decoder": median_call(both, "decoder"),
    }


def predicted_ratio(c: dict, steps: int) -> float:
    """DWT / VQ-start pipeline time predicted from the components alone.

    ``(E + T*u + d) / (Enc + A + T*u + d)`` for ``T`` steps, with ``E`` the DWT encoder, ``Enc`` the VQ
    encoder, ``A`` the adapter, ``u`` = UNet + adapter per step and ``d`` the decoder; as ``E`` is ~1 ms this
    is ``(T*u + d) / (e + T*u + d)`` with ``e = Enc + A``, the VQ start's extra cost.
    """
    shared = steps * (c["unet"] + c["adapter"]) + c["decoder"]
    return (c["dwt_encoder"] + shared) / (c["vq_encoder"] + c["adapter"] + shared)


@torch.no_grad()
def bench_end_to_end(config: BenchConfig) -> dict:
    """Time the three pipelines on one random LR image of ``config.e2e_lr_size`` (output 4x that).

    Reads from ``config``:

    - ``e2e_preset``: model size (``"full"``: ResShift-size UNet, CompVis VQ-f4).
    - ``e2e_lr_size``: LR ``(height, width)``, multiples of the UNet's size multiple (the LDM pipeline gets a
      tensor, so its multiple-of-32 resize of PIL inputs does not apply).
    - ``steps``: step counts for the DWT and VQ-start pipelines. Each step count is one block: the
      components alone (a cross-check), then the two pipelines alternating (A B B A ...). The
      prediction uses the per-call medians of the components inside those runs.
    - ``ldm_steps``: DDIM steps of the LDM pipeline (its default is 100; one run); 0 skips it.
    - ``repeats``: runs of each pipeline per block; the measured ratio is the median of the
      back-to-back pairs' ratios (all totals are kept) and the reported split is the median run's.
    - ``component_repeats``, ``component_seconds``: repeats (fastest kept) and time budget of each
      separate component timing (at least one call).
    - ``seed``: seed of weights, input and sampling noise.
    """
    preset, lr_size, steps, seed = config.e2e_preset, config.e2e_lr_size, config.steps, config.seed
    repeats, ldm_steps = config.repeats, config.ldm_steps
    pipe = build_pipeline(preset, seed=seed)
    vq_pipe = vq_start_pipeline(pipe, build_scheduler())
    rng = np.random.default_rng(seed)
    lr_image = PIL.Image.fromarray(rng.integers(0, 256, (*lr_size, 3), dtype=np.uint8))

    dwt, unet, vqvae = pipe.dwt_encoder, pipe.unet, pipe.vqvae
    shared_wraps = [(dwt, "project_latent", "adapter"), (unet, "forward", "unet"), (vqvae, "decode", "decoder")]
    wraps = {
        "dwt": [(dwt, "encode", "encoder")] + shared_wraps,
        "vq_start": [(vqvae, "encode", "encoder")] + shared_wraps,
    }
    pipes = {"dwt": pipe, "vq_start": vq_pipe}
    logger.info("end-to-end: warm-up run (untimed)")
    vq_pipe(lr_image, num_inference_steps=1)  # first calls at these shapes pick kernels and map memory

    results = []
    for num_steps in steps:
        isolated, isolated_cpu = component_times(pipe, lr_size, config.component_repeats,
                                                  config.component_seconds)
        logger.info("end-to-end: components alone: %s", {k: round(v, 3) for k, v in isolated.items()})
        runs: dict[str, list[dict]] = {"dwt": [], "vq_start": []}
        for repeat in range(repeats):
            for name in ("dwt", "vq_start") if repeat % 2 == 0 else ("vq_start", "dwt"):

                def call(p=pipes[name], n=num_steps):
                    p(lr_image, num_inference_steps=n, generator=torch.Generator().manual_seed(seed))

                runs[name].append(timed_run(call, wraps[name]))
                logger.info("end-to-end: %s, %d steps: %.2f s", name, num_steps, runs[name][-1]["total_s"])
        dwt_run, vq_run = _median_run(runs["dwt"]), _median_run(runs["vq_start"])
        measured = paired_ratio(runs["dwt"], runs["vq_start"], "total_s")
        components = in_run_components(runs["dwt"], runs["vq_start"])
        predicted = predicted_ratio(components, num_steps)
        predicted_isolated = predicted_ratio(isolated, num_steps)
        # The same check in CPU seconds: a cross-check that is far less disturbed by other processes.
        measured_cpu = paired_ratio(runs["dwt"], runs["vq_start"], "cpu_s")
        predicted_cpu = predicted_ratio(isolated_cpu, num_steps)
        results.append(
            {
                "steps": num_steps,
                "component_seconds": components,
                "isolated_component_seconds": isolated,
                "component_cpu_seconds": isolated_cpu,
                "dwt": dwt_run,
                "vq_start": vq_run,
                "measured_ratio": measured,
                "predicted_ratio": predicted,
                "ratio_error": measured - predicted,
                "ratio_of_median_totals": dwt_run["median_total_s"] / vq_run["median_total_s"],
                "predicted_isolated_ratio": predicted_isolated,
                "isolated_ratio_error": measured - predicted_isolated,
                "measured_cpu_ratio": measured_cpu,
                "predicted_cpu_ratio": predicted_cpu,
                "cpu_ratio_error": measured_cpu - predicted_cpu,
                "dwt_other_share": dwt_run["split_s"]["other"] / dwt_run["total_s"],
                "vq_start_other_share": vq_run["split_s"]["other"] / vq_run["total_s"],
            }
        )

    ldm = None
    if ldm_steps:
        ldm_pipe = build_ldm_pipeline(pipe)
        lr_tensor = torch.from_numpy(np.array(lr_image)).permute(2, 0, 1)[None].float() / 127.5 - 1

        def call_ldm():
            ldm_pipe(lr_tensor, num_inference_steps=ldm_steps, generator=torch.Generator().manual_seed(seed))

        ldm_run = timed_run(call_ldm, [(ldm_pipe.unet, "forward", "unet"), (vqvae, "decode", "decoder")])
        logger.info("end-to-end: LDM-SR, %d steps: %.2f s", ldm_steps, ldm_run["total_s"])
        ldm = {"steps": ldm_steps, "params_unet": count_parameters(ldm_pipe.unet), **ldm_run}
        ldm["other_share"] = ldm["split_s"]["other"] / ldm["total_s"]

    acceptance = _acceptance(results, max(steps))
    return {
        "preset": preset,
        "lr_size": list(lr_size),
        "output_size": [lr_size[0] * pipe.upscale_factor, lr_size[1] * pipe.upscale_factor],
        "repeats": repeats,
        "params": {
            "dwt_encoder_and_adapter": count_parameters(dwt),
            "unet": count_parameters(unet),
            "vq_encoder": count_parameters(vqvae.encoder, vqvae.quant_conv),
            "vq_decoder": count_parameters(vqvae) - count_parameters(vqvae.encoder, vqvae.quant_conv),
        },
        "pipelines": results,
        "ldm": ldm,
        "acceptance": acceptance,
    }


def _acceptance(results: list[dict], full_steps: int) -> dict:
    at_full = next(r for r in results if r["steps"] == full_steps)
    errors = {str(r["steps"]): abs(r["ratio_error"]) for r in results}
    return {
        "other_share_steps": full_steps,
        "other_share": at_full["dwt_other_share"],
        "other_share_limit": OTHER_SHARE_LIMIT,
        "other_share_ok": at_full["dwt_other_share"] <= OTHER_SHARE_LIMIT,
        "ratio_abs_error": errors,
        "ratio_tolerance": RATIO_TOLERANCE,
        "ratio_ok": all(e <= RATIO_TOLERANCE for e in errors.values()),
    }
