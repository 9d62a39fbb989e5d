"""The training loop shared by the four stages: accelerate setup, optimiser, EMA, exact resume,
logging, checkpoints and validation.

Exact resume rests on three things: the model, optimiser, LR schedule and EMA come back from the
checkpoint; the data stream is a pure function of the step (:class:`~difiisr_dwt.data.StreamSampler`);
and every random draw of a step (timesteps, noise, degradation) comes from a generator seeded by
``(seed, step, micro-batch, rank)`` rather than from a global RNG whose position a restart would lose.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import pickle
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader

from difiisr_dwt.data import StreamSampler, build_training_dataset, list_image_files
from difiisr_dwt.distributed import process_group_ended
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import write_text_atomic
from difiisr_dwt.output_folder import removed_if_left_empty
from difiisr_dwt.training.checkpointing import (
    CheckpointError,
    check_earlier_run,
    check_output_dir,
    dump_rank_weights,
    read_training_state,
    register_hooks,
    resolve_checkpoint,
    run_identity,
    save_checkpoint,
)
from difiisr_dwt.training.curves import CurveLog
from difiisr_dwt.training.stage import Stage

logger = get_logger(__name__)


def step_generator(seed: int, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator for one micro-batch's random draws, independent of everything that ran before."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


@contextlib.contextmanager
def ema_weights(ema: EMAModel | None, parameters: list[torch.nn.Parameter]):
    """Temporarily put the EMA weights into ``parameters`` (no-op without EMA)."""
    if ema is None:
        yield
        return
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


def _scalar_config(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}


def train(args: argparse.Namespace, stage_cls: type[Stage]) -> dict:
    """Train ``stage_cls`` with ``args``; returns the timing summary (samples/s, data-wait share). An output
    folder the run made and left empty (it failed before its first file) is removed, and the process group of a
    run that failed is destroyed too (:func:`~difiisr_dwt.distributed.process_group_ended`; a finished run's
    ``end_training`` does it)."""
    with removed_if_left_empty(args.output_dir), process_group_ended():
        return _train(args, stage_cls)


def _train(args: argparse.Namespace, stage_cls: type[Stage]) -> dict:
    output_dir = Path(args.output_dir)
    check_output_dir(args, stage_cls.final_folders())
    identity = run_identity(stage_cls.name, args.preset)  # recorded in each checkpoint; a resume must match it
    check_earlier_run(output_dir, identity, args.resume_from_checkpoint)
    checkpoint = resolve_checkpoint(output_dir, args.resume_from_checkpoint, identity)  # before anything loads
    check_validation_set(args)
    check_training_packages(args)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)),
        kwargs_handlers=[DistributedDataParallelKwargs(**stage_cls.ddp_options)],
    )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"Launched as {world_size} processes, but accelerate set up a single-process run, so each process would "
            "train alone and overwrite the others' files. On a machine without GPUs set ACCELERATE_USE_CPU=1."
        )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(args.seed)  # identical initial weights on every rank

    stage = stage_cls(args, accelerator)
    parameters = list(stage.trainable_parameters())
    batch = args.train_batch_size
    num_processes = accelerator.num_processes
    learning_rate = args.learning_rate
    if args.scale_lr:
        learning_rate *= args.gradient_accumulation_steps * batch * num_processes
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    # the prepared scheduler steps once per process each optimiser step
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * num_processes,
                                 num_training_steps=args.max_train_steps * num_processes)
    module, optimizer, lr_scheduler = accelerator.prepare(stage.module, optimizer, lr_scheduler)
    ema = EMAModel(parameters, decay=args.ema_decay) if args.use_ema else None
    register_hooks(accelerator, stage.component, stage.component_name, ema, lambda: parameters)

    global_step = 0
    if checkpoint is not None:
        logger.info(f"Resuming from {checkpoint}")
        try:
            accelerator.load_state(str(checkpoint))
        except pickle.UnpicklingError as error:  # accelerate reads optimizer.bin & co. with weights_only=True
            raise CheckpointError(
                f"{checkpoint}: a file holds objects that are not tensors, numbers or RNG states, so "
                f"torch.load(weights_only=True) refused it ({str(error).splitlines()[0]}); nothing of it was run. "
                "Resume only from checkpoints this program wrote") from error
        state = read_training_state(checkpoint)
        global_step = int(state["step"])
        stage.load_state(state.get("stage", {}))
        if global_step >= args.max_train_steps:
            logger.warning(f"{checkpoint} is at step {global_step} and --max_train_steps is {args.max_train_steps}: "
                           "no training step will run, the saved model is the checkpoint's. Raise --max_train_steps "
                           "to train on.")
    elif args.resume_from_checkpoint:
        logger.info("No checkpoint to resume from: starting a new run.")

    dataset = build_training_dataset(args)
    sampler = StreamSampler(len(dataset), batch, args.seed, num_processes, accelerator.process_index,
                            start=global_step * args.gradient_accumulation_steps)
    dataloader = DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=args.dataloader_num_workers,
        pin_memory=accelerator.device.type == "cuda", persistent_workers=args.dataloader_num_workers > 0,
        generator=torch.Generator().manual_seed(args.seed),  # keeps the global RNG untouched
    )

    curves = CurveLog(output_dir / "curves.csv")
    if accelerator.is_main_process:
        curves.truncate(global_step)
        accelerator.init_trackers("difiisr-dwt", config=_scalar_config(args))
    logger.info(f"Stage {stage.name}: {len(dataset)} images, {sum(p.numel() for p in parameters):,} trained "
                f"parameters, {num_processes} process(es) x batch {batch} x accumulation "
                f"{args.gradient_accumulation_steps}, steps {global_step} -> {args.max_train_steps}")

    timing = {"steps": 0, "samples": 0, "step_s": 0.0, "data_wait_s": 0.0}
    batches = iter(dataloader)
    while global_step < args.max_train_steps:
        step_start = time.perf_counter()
        wait = 0.0
        sums: dict[str, float] = {}
        for micro in range(args.gradient_accumulation_steps):
            t0 = time.perf_counter()
            micro_batch = next(batches)
            wait += time.perf_counter() - t0
            micro_batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in micro_batch.items()}
            generator = step_generator(args.seed, global_step, micro, accelerator.process_index, accelerator.device)
            with accelerator.accumulate(module), accelerator.autocast():
                losses = stage.training_step(module, micro_batch, generator, global_step)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) / args.gradient_accumulation_steps
        global_step += 1
        if ema is not None:
            ema.step(parameters)
        extra = stage.after_optimizer_step(module, optimizer, micro_batch, global_step)
        names = sorted(sums)
        reduced = accelerator.reduce(torch.tensor([sums[n] for n in names], device=accelerator.device), "mean")
        values = {n: float(v) for n, v in zip(names, reduced.cpu())}
        values.update(extra)
        values["lr"] = lr_scheduler.get_last_lr()[0]
        step_time = time.perf_counter() - step_start
        values.update(step_s=step_time, data_wait_s=wait)
        if global_step > 1:  # the first step pays for lazy initialisation
            timing["steps"] += 1
            timing["samples"] += batch * num_processes * args.gradient_accumulation_steps
            timing["step_s"] += step_time
            timing["data_wait_s"] += wait
        if accelerator.is_main_process:
            curves.append(global_step, values)
            accelerator.log(values, step=global_step)
            if global_step % 10 == 0 or global_step == args.max_train_steps:
                logger.info(f"step {global_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))

        if global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps:
            save_checkpoint(accelerator, output_dir, global_step, {"stage": stage.state(), **identity},
                            args.checkpoints_total_limit)
            if accelerator.is_main_process:
                curves.plot(output_dir / "curves.png")
        if args.validation_data_dir and (global_step % args.validation_steps == 0
                                         or global_step == args.max_train_steps):
            if accelerator.is_main_process:
                with ema_weights(ema, parameters):
                    metrics = stage.validate(global_step, str(output_dir))
                accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=global_step)
                _append_jsonl(output_dir / "validation.jsonl", {"step": global_step, **metrics})
                logger.info(f"validation at step {global_step}: {metrics}")
            accelerator.wait_for_everyone()

    summary = {"num_processes": num_processes, "distributed_type": str(accelerator.distributed_type.value),
               "final_step": global_step, "resumed_from": str(checkpoint) if checkpoint else None,
               **_timing_summary(timing)}
    if args.debug_dump_rank_weights:
        dump_rank_weights(accelerator.unwrap_model(module), output_dir, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        curves.plot(output_dir / "curves.png")
        with ema_weights(ema, parameters):
            folders = stage.save_final(str(output_dir))
        write_text_atomic(json.dumps(summary, indent=2), output_dir / "run_summary.json")
        logger.info(f"Saved {', '.join(folders)}; {summary}")
        if args.push_to_hub:
            _push(args, folders)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def check_training_packages(args: argparse.Namespace) -> None:
    """Refuse, before anything loads, a run that would stop with an ``ImportError`` hours in: the ``train``
    extra's packages it uses (``matplotlib`` for ``curves.png`` at the first checkpoint, ``kornia`` for the JPEG
    step of ``--degradation realesrgan`` / ``thermal``, ``datasets`` for ``--dataset_name``, ``tensorboard`` for
    ``--report_to tensorboard``) are looked up without importing them.

    Raises:
        UsageError: naming the missing packages and the install command.
    """
    needed = ["matplotlib"]
    if args.degradation != "bicubic" and args.lr_data_dir is None:
        needed.append("kornia")
    if args.dataset_name is not None:
        needed.append("datasets")
    if args.report_to in ("tensorboard", "all"):
        needed.append("tensorboard")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"training needs {', '.join(missing)}, not installed here (the package's `train` extra): "
                         "pip install 'difiisr-dwt[train]'")


def check_validation_set(args: argparse.Namespace) -> None:
    """List the validation images now, so that a missing folder, file list or image stops the run before it
    trains instead of at the first validation; and refuse a training set that holds any of them.

    Raises:
        UsageError: no validation images, or training files that are also validation files (validating on
            what the model trained on measures nothing; e.g. a line of ``mixed_val.txt`` in the train list).
    """
    if args.validation_data_dir is None:
        return
    try:
        held_out = list_image_files(args.validation_data_dir, args.validation_file_list, flag="--validation_data_dir")
    except UsageError:  # an unreadable --validation_file_list: its own message names it
        raise
    except ValueError as error:  # a folder without images
        raise UsageError(str(error)) from error
    if args.dataset_name is not None or args.train_data_dir is None:
        return  # a datasets split: its files are not paths to compare
    held_out = {path.resolve() for path in held_out}
    leaked = [str(path) for path in list_image_files(args.train_data_dir, args.train_file_list)
              if path.resolve() in held_out]
    if leaked:
        raise UsageError(f"{len(leaked)} training image(s) are also validation images, e.g. {leaked[:3]}: a model "
                         "validated on what it trained on measures nothing; take them out of the training set "
                         "(--train_file_list) or of the validation set")


def _timing_summary(timing: dict) -> dict:
    if not timing["steps"]:
        return {"steps_timed": 0}
    return {
        "steps_timed": timing["steps"],
        "samples_per_s": timing["samples"] / timing["step_s"],
        "s_per_step": timing["step_s"] / timing["steps"],
        "data_wait_share": timing["data_wait_s"] / timing["step_s"],
    }


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
                + "\n")


def _push(args: argparse.Namespace, folders: list[str]) -> None:
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(args.hub_model_id, exist_ok=True, token=args.hub_token).repo_id
    for folder in folders:
        upload_folder(repo_id=repo_id, folder_path=folder, path_in_repo=os.path.basename(folder),
                      token=args.hub_token, commit_message=f"{args.stage} stage, step {args.max_train_steps}")
