"""``train_accelerate.py``: each stage on real IR crops, exact resume after kill -9, a 2-process CPU run.

Runs a few steps of ``--preset tiny`` at 64-pixel crops; the subprocess runs use one thread each.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from difiisr_dwt.training.checkpointing import CheckpointError, list_checkpoints, resolve_checkpoint
from difiisr_dwt.training.curves import CurveLog

REPO = Path(__file__).resolve().parent.parent


def _data_args(shared: Path) -> list[str]:
    ir = shared / "data" / "ir"
    return ["--preset", "tiny", "--train_data_dir", str(ir / "roadscene"), "--train_file_list",
            str(ir / "roadscene_train.txt"), "--resolution", "64", "--train_batch_size", "2",
            "--lpips_backbone_dir", str(shared / "lpips"), "--seed", "0"]


def _validation_args(shared: Path) -> list[str]:
    ir = shared / "data" / "ir"
    return ["--validation_data_dir", str(ir / "roadscene"), "--validation_file_list", str(ir / "roadscene_val.txt"),
            "--num_validation_images", "1", "--validation_crop", "64", "--validation_inference_steps", "2"]


def _run_in_process(argv: list[str]) -> dict:
    from difiisr_dwt.training import get_stage
    from difiisr_dwt.training.args import parse_args
    from difiisr_dwt.training.loop import train

    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess runs: two threads on two shared cores mostly wait on each other
    try:
        return train(args, get_stage(args.stage))
    finally:
        torch.set_num_threads(threads)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _curve(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _resumed_run_matches(argv: list[str], tmp_path: Path, steps: int,
                         keys: tuple[str, ...]) -> tuple[Path, Path, list[dict[str, float]]]:
    """``argv`` (checkpointing every 2 steps) run to ``steps`` uninterrupted (``full``), and to step 2 then
    resumed to ``steps`` (``part``); asserts the resumed run's curve is the uninterrupted one's for ``keys``
    (1e-5). Returns the two output folders and the uninterrupted curve."""
    full, part = tmp_path / "full", tmp_path / "part"
    _run_in_process([*argv, "--output_dir", str(full), "--max_train_steps", str(steps)])
    _run_in_process([*argv, "--output_dir", str(part), "--max_train_steps", "2"])
    summary = _run_in_process([*argv, "--output_dir", str(part), "--max_train_steps", str(steps),
                               "--resume_from_checkpoint", "latest"])
    assert summary["resumed_from"].endswith("checkpoint-2")
    a, b = _curve(full / "curves.csv"), _curve(part / "curves.csv")
    assert [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b):
        for key in keys:
            assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)
    return full, part, a


@pytest.fixture(scope="module")
def tiny_components(tmp_path_factory) -> tuple[Path, Path]:
    """Freshly initialised tiny VQ and DWT-encoder folders (``save_pretrained``)."""
    from difiisr_dwt.presets import build_dwt_encoder, build_vqvae

    root = tmp_path_factory.mktemp("components")
    torch.manual_seed(0)
    build_vqvae("tiny").save_pretrained(root / "vq")
    build_dwt_encoder("tiny").save_pretrained(root / "enc")
    return root / "vq", root / "enc"


def test_kmeans_recovers_separated_clusters():
    from difiisr_dwt.training.autoencoder import kmeans

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [4.0, 4.0, 4.0]])
    points = torch.cat([c + 0.1 * torch.randn(200, 3, generator=g) for c in centres])
    found = kmeans(points, 4, iterations=20, generator=torch.Generator().manual_seed(1))
    distance = torch.cdist(centres, found).min(dim=1).values
    assert distance.max() < 0.1


def test_checkpoint_resolution_ignores_partial_saves(tmp_path):
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "training_state.json").write_text(json.dumps({"step": step}))
    (tmp_path / ".checkpoint-6.tmp").mkdir()  # a save killed half-way
    (tmp_path / "checkpoint-8").mkdir()  # no state file: not complete
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-4"
    assert resolve_checkpoint(tmp_path / "none", "latest") is None
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-8"))


def test_curve_log_truncates_on_resume(tmp_path):
    log = CurveLog(tmp_path / "c.csv")
    for step in range(1, 6):
        log.append(step, {"loss": 1.0 / step, "lr": 0.1})
    CurveLog(tmp_path / "c.csv").truncate(3)
    rows = CurveLog(tmp_path / "c.csv").read()
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["loss"] == pytest.approx(1 / 3)
    log.plot(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_curve_log_writes_are_atomic(tmp_path, monkeypatch):
    """A rewrite or plot killed half-way leaves the previous file and no temporary file behind."""
    from matplotlib.figure import Figure

    from difiisr_dwt.training import curves

    log = CurveLog(tmp_path / "c.csv")
    for step in range(1, 4):
        log.append(step, {"loss": 1.0 / step})
    log.plot(tmp_path / "c.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def killed(value):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(curves, "_fmt", killed)
        with pytest.raises(KeyboardInterrupt):
            log.truncate(2)

    def disk_full(self, fname, **kwargs):
        (open(fname, "wb") if isinstance(fname, (str, os.PathLike)) else fname).write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space left"):
        log.plot(tmp_path / "c.png")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.slow
def test_autoencoder_stage_warms_up_then_quantises(shared_dir, tmp_path):
    from diffusers import VQModel

    out = tmp_path / "ae"
    _run_in_process(["--stage", "autoencoder", *_data_args(shared_dir), *_validation_args(shared_dir),
                     "--output_dir", str(out), "--max_train_steps", "6", "--vq_warmup_steps", "3",
                     "--vq_init_batches", "2", "--vq_reseed_steps", "2", "--checkpointing_steps", "3",
                     "--validation_steps", "6"])
    rows = _curve(out / "curves.csv")
    assert [r["quantized"] for r in rows] == [0, 0, 0, 1, 1, 1]
    assert all(r["vq"] == 0 for r in rows[:3]) and all(r["vq"] > 0 for r in rows[3:])
    # k-means on the encoder outputs uses many codes; the default tiny init would put every vector on a few
    assert rows[3]["codebook_used"] > 0.2
    vq = VQModel.from_pretrained(out / "vqvae")
    codebook = vq.quantize.embedding.weight
    assert codebook.std() > 10 / vq.config.num_vq_embeddings  # default init is uniform(+-1/K)
    validation = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert validation[-1]["step"] == 6 and validation[-1]["q_psnr_y"] > 0 and "raw_lpips_alex" in validation[-1]
    assert (out / "validation" / "step-0000006.png").is_file() and (out / "curves.png").is_file()


@pytest.mark.slow
def test_new_decoder_keeps_the_latent_space_and_resumes(shared_dir, tmp_path, tiny_components):
    """``--keep_latent_space --vqvae_mid_block_attention drop``: the attention is gone, the codebook is the
    teacher's, the encoder starts from (and is pulled towards) the teacher's latents, and a run stopped at
    step 2 and resumed gives the uninterrupted run's losses and weights."""
    from diffusers import VQModel

    vq, _ = tiny_components
    argv = ["--stage", "autoencoder", *_data_args(shared_dir), "--vqvae_model_name_or_path", str(vq),
            "--keep_latent_space", "--vqvae_mid_block_attention", "drop", "--checkpointing_steps", "2"]
    full, part, a = _resumed_run_matches(argv, tmp_path, 4, ("loss", "l1", "lpips", "latent_mse"))
    assert a[0]["latent_mse"] > 0  # the encoder lost its attention: its latents moved, and it is trained back

    teacher, student = VQModel.from_pretrained(vq), VQModel.from_pretrained(full / "vqvae")
    assert teacher.config.mid_block_add_attention and not student.config.mid_block_add_attention
    assert not any("attentions" in name for name, _ in student.named_parameters())
    assert torch.equal(student.quantize.embedding.weight, teacher.quantize.embedding.weight)
    t_params = dict(teacher.named_parameters())
    changed = {name for name, p in student.named_parameters() if not torch.equal(p, t_params[name])}
    assert any(n.startswith("decoder.") for n in changed) and any(n.startswith("encoder.") for n in changed)
    wa, wb = (load_file(d / "vqvae" / "diffusion_pytorch_model.safetensors") for d in (full, part))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


@pytest.mark.slow
def test_adapter_stage_trains_only_the_adapter(shared_dir, tmp_path, tiny_components):
    from difiisr_dwt.models.modeling_dwt_encoder import DWTEncoder

    vq, enc = tiny_components
    out = tmp_path / "adapter"
    _run_in_process(["--stage", "adapter", *_data_args(shared_dir), "--vqvae_model_name_or_path", str(vq),
                     "--dwt_encoder_model_name_or_path", str(enc), "--output_dir", str(out),
                     "--max_train_steps", "4", "--checkpointing_steps", "4", "--use_ema"])
    before, after = DWTEncoder.from_pretrained(enc), DWTEncoder.from_pretrained(out / "dwt_encoder")
    for (name, p0), (_, p1) in zip(before.named_parameters(), after.named_parameters()):
        changed = not torch.equal(p0, p1)
        assert changed == name.startswith("adapter."), name
    assert (out / "checkpoint-4" / "dwt_encoder_ema" / "ema_state.json").is_file()


@pytest.mark.slow
def test_diffusion_resumes_exactly_after_kill(shared_dir, tmp_path, tiny_components):
    """Kill -9 right after the step-2 checkpoint; ``latest`` continues with the same per-step losses."""
    vq, enc = tiny_components
    argv = [sys.executable, "train_accelerate.py", "--stage", "diffusion", *_data_args(shared_dir),
            "--vqvae_model_name_or_path", str(vq), "--dwt_encoder_model_name_or_path", str(enc),
            "--max_train_steps", "4", "--checkpointing_steps", "2", "--use_ema", "--lr_scheduler", "cosine",
            "--lr_warmup_steps", "1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    # the uninterrupted run goes alongside the one to be killed (one thread each)
    reference = subprocess.Popen([*argv, "--output_dir", str(full)], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
    proc = subprocess.Popen([*argv, "--output_dir", str(killed)], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint-2").is_dir():
        assert proc.poll() is None and time.time() < deadline, "the run ended without writing checkpoint-2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "unet").exists()  # it really died before the end
    assert reference.wait() == 0, reference.stderr.read()[-3000:]
    subprocess.run([*argv, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"], cwd=REPO,
                   env=_env(), check=True, capture_output=True)
    summary = json.loads((killed / "run_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    a, b = _curve(full / "curves.csv"), _curve(killed / "curves.csv")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("loss", "mse", "lpips", "edge", "lr"):
            assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)
    wa, wb = (load_file(d / "unet" / "diffusion_pytorch_model.safetensors") for d in (full, killed))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # the saved pipeline attends within windows of the crops' LR side (64 / 4): what the UNet saw in training
    assert json.loads((full / "pipeline" / "model_index.json").read_text())["unet_attention_window"] == 16


@pytest.mark.slow
def test_two_process_cpu_run_keeps_ranks_identical_and_resumes(shared_dir, tmp_path, tiny_components):
    from diffusers import DiffusionPipeline

    vq, enc = tiny_components
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "train_accelerate.py",
              "--stage", "diffusion", *_data_args(shared_dir), "--output_dir", str(out), "--checkpointing_steps",
              "2", "--vqvae_model_name_or_path", str(vq), "--dwt_encoder_model_name_or_path", str(enc),
              "--debug_dump_rank_weights"]
    env = {**_env(), "ACCELERATE_USE_CPU": "1"}
    for steps, resumed in ((2, None), (4, "checkpoint-2")):
        extra = ["--max_train_steps", str(steps)] + (["--resume_from_checkpoint", "latest"] if resumed else [])
        result = subprocess.run([*launch, *extra], cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((out / "run_summary.json").read_text())
        assert summary["num_processes"] == 2 and summary["distributed_type"] == "MULTI_CPU"
        assert summary["final_step"] == steps
        assert (summary["resumed_from"] or "").endswith(resumed or "")
        ranks = [load_file(out / "rank_weights" / f"rank{r}.safetensors") for r in (0, 1)]
        assert ranks[0].keys() == ranks[1].keys()
        assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    assert (out / "checkpoint-2" / "random_states_1.pkl").is_file()  # each rank's RNG state is kept
    pipe = DiffusionPipeline.from_pretrained(out / "pipeline", trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(torch.rand(1, 3, 16, 20), num_inference_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 64, 80) and torch.isfinite(image).all()
