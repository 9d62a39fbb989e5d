"""Throughput of the diffusion stage: samples/s and the share of step time spent waiting for data.

    python -m difiisr_dwt.training.bench --preset tiny --train_data_dir ../shared/data/ir/roadscene \\
        --train_file_list ../shared/data/ir/roadscene_train.txt --lpips_weights ../shared/lpips

Runs ``--warmup_steps + --steps`` training steps of ``train_accelerate.py --stage diffusion`` (freshly
initialised VQ and DWT-encoder folders unless given) in a temporary folder and reports the timed
steps only: the first steps decode every image once into the loader's cache and set up lazily.
Extra flags are passed to the training script (``--dataloader_num_workers 2``, ``--mixed_precision bf16``...).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from difiisr_dwt.training.curves import CurveLog


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=("test", "tiny", "full"))
    p.add_argument("--steps", type=int, default=20, help="Timed steps.")
    p.add_argument("--warmup_steps", type=int, default=25, help="Untimed steps first (a pass over the cache).")
    p.add_argument("--train_batch_size", type=int, default=8)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--vqvae_model_name_or_path", default=None)
    p.add_argument("--dwt_encoder_model_name_or_path", default=None)
    p.add_argument("--output_dir", default=None, help="Keep the run here instead of a temporary folder.")
    return p


def summarize(curve_csv: str | Path, skip: int) -> dict[str, float]:
    """Samples/s and data-wait share over the steps after the first ``skip`` of a run's ``curves.csv``."""
    rows = [r for r in CurveLog(curve_csv).read() if r["step"] > skip]
    if not rows:
        raise ValueError(f"{curve_csv}: no steps after step {skip} to time.")
    step_s = sum(r["step_s"] for r in rows)
    wait_s = sum(r["data_wait_s"] for r in rows)
    return {"timed_steps": len(rows), "s_per_step": step_s / len(rows), "data_wait_share": wait_s / step_s}


def main(argv: list[str] | None = None) -> int:
    args, passthrough = build_parser().parse_known_args(argv)
    from difiisr_dwt.presets import build_dwt_encoder, build_vqvae
    from difiisr_dwt.training import get_stage
    from difiisr_dwt.training.args import parse_args
    from difiisr_dwt.training.loop import train

    with tempfile.TemporaryDirectory(prefix="difiisr-bench-") as tmp:
        vq, enc = args.vqvae_model_name_or_path, args.dwt_encoder_model_name_or_path
        if vq is None:
            vq = f"{tmp}/vq"
            build_vqvae(args.preset).save_pretrained(vq)
        if enc is None:
            enc = f"{tmp}/enc"
            build_dwt_encoder(args.preset).save_pretrained(enc)
        output_dir = args.output_dir or f"{tmp}/run"
        train_args = parse_args([
            "--stage", "diffusion", "--preset", args.preset, "--vqvae_model_name_or_path", vq,
            "--dwt_encoder_model_name_or_path", enc, "--output_dir", output_dir,
            "--max_train_steps", str(args.warmup_steps + args.steps), "--checkpointing_steps", "1000000000",
            "--train_batch_size", str(args.train_batch_size), "--resolution", str(args.resolution), *passthrough,
        ])
        run = train(train_args, get_stage("diffusion"))
        stats = summarize(Path(output_dir) / "curves.csv", args.warmup_steps)
    batch = args.train_batch_size * run["num_processes"] * train_args.gradient_accumulation_steps
    result = {"preset": args.preset, "batch": batch, "resolution": args.resolution, **stats,
              "samples_per_s": batch / stats["s_per_step"], "num_processes": run["num_processes"]}
    print(json.dumps(result, indent=2))
    print(f"diffusion stage, preset {args.preset}: {result['samples_per_s']:.2f} samples/s "
          f"({stats['s_per_step'] * 1000:.0f} ms/step, batch {batch}), data wait {100 * stats['data_wait_share']:.1f}% "
          "of step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
