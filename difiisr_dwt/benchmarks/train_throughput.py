"""Training throughput (``difiisr-dwt bench --section train``): samples/s of the diffusion stage and the share
of step time spent waiting for data.

    difiisr-dwt bench --section train -- --train_data_dir ../shared/data/ir/roadscene \\
        --train_file_list ../shared/data/ir/roadscene_train.txt --lpips_backbone_dir ../shared/lpips

Runs ``train_warmup_steps + train_steps`` steps of ``train_accelerate.py --stage diffusion`` (freshly
initialised VQ and DWT-encoder folders unless the training flags name some) in a temporary folder and
reports the timed steps only: the first steps decode every image once into the loader's cache and set up
lazily. The flags after ``--`` go to the training script (``--dataloader_num_workers 2``,
``--mixed_precision bf16``, ``--output_dir DIR`` to keep the run...) and win over the bench's own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from difiisr_dwt.benchmarks import BenchConfig
from difiisr_dwt.presets import build_dwt_encoder, build_vqvae
from difiisr_dwt.training import get_stage
from difiisr_dwt.training.args import parse_args
from difiisr_dwt.training.curves import CurveLog
from difiisr_dwt.training.loop import train


def throughput_from_curves(curve_csv: str | Path, skip: int) -> dict[str, float]:
    """Mean seconds per step and data-wait share over the steps after the first ``skip`` of a ``curves.csv``.

    Raises:
        ValueError: the file has no step after ``skip``.
    """
    rows = [r for r in CurveLog(curve_csv).read() if r["step"] > skip]
    if not rows:
        raise ValueError(f"{curve_csv}: no steps after step {skip} to time.")
    step_s = sum(r["step_s"] for r in rows)
    wait_s = sum(r["data_wait_s"] for r in rows)
    return {"timed_steps": len(rows), "s_per_step": step_s / len(rows), "data_wait_share": wait_s / step_s}


def bench_training(config: BenchConfig) -> dict:
    """Train the diffusion stage for ``config.train_warmup_steps + config.train_steps`` steps and time the last.

    Reads ``train_preset``, ``train_batch_size``, ``train_resolution``, ``train_steps``, ``train_warmup_steps``
    and ``train_args`` (more ``train_accelerate.py`` flags; training data must be among them) from ``config``.

    Returns:
        ``{"preset", "batch" (samples per optimiser step, all processes), "resolution", "timed_steps",
        "s_per_step", "data_wait_share", "samples_per_s", "num_processes"}``.
    """
    with tempfile.TemporaryDirectory(prefix="difiisr-bench-") as tmp:
        fresh_vq, fresh_encoder = f"{tmp}/vq", f"{tmp}/enc"
        train_args = parse_args([
            "--stage", "diffusion", "--preset", config.train_preset, "--vqvae_model_name_or_path", fresh_vq,
            "--dwt_encoder_model_name_or_path", fresh_encoder, "--output_dir", f"{tmp}/run",
            "--max_train_steps", str(config.train_warmup_steps + config.train_steps),
            "--checkpointing_steps", "1000000000", "--train_batch_size", str(config.train_batch_size),
            "--resolution", str(config.train_resolution), *config.train_args,
        ])
        if train_args.vqvae_model_name_or_path == fresh_vq:
            build_vqvae(train_args.preset).save_pretrained(fresh_vq)
        if train_args.dwt_encoder_model_name_or_path == fresh_encoder:
            build_dwt_encoder(train_args.preset).save_pretrained(fresh_encoder)
        run = train(train_args, get_stage("diffusion"))
        stats = throughput_from_curves(Path(train_args.output_dir) / "curves.csv", config.train_warmup_steps)
    batch = train_args.train_batch_size * run["num_processes"] * train_args.gradient_accumulation_steps
    return {"preset": train_args.preset, "batch": batch, "resolution": train_args.resolution, **stats,
            "samples_per_s": batch / stats["s_per_step"], "num_processes": run["num_processes"]}
