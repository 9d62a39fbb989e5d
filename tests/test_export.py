"""``difiisr-dwt export``: Hub release folders, their model card, atomic writes, dry-run uploads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

from difiisr_dwt import evaluation
from difiisr_dwt.cli import main as run_cli  # the CLI with its error boundary
from difiisr_dwt.model_card import ModelCardError, load_eval_json
from difiisr_dwt.release import ReleaseError, export_release, release_code_files

STEPS, SEED = 15, 7
FILES = {
    "README.md", "model_index.json", "pipeline_difiisr_dwt.py", "image_processor.py", "tiling.py", "fidelity.py",
    "attention.py", "saving.py",
    "dwt_encoder/config.json", "dwt_encoder/modeling_dwt_encoder.py",
    "scheduler/scheduler_config.json", "scheduler/scheduler_resshift.py",
    "unet/config.json", "vqvae/config.json",
} | {f"{c}/diffusion_pytorch_model{v}.safetensors" for c in ("dwt_encoder", "unet", "vqvae") for v in ("", ".fp16")}

# Runs in a fresh interpreter outside the checkout: loads the copied release offline, runs it, and
# records what loading without trust_remote_code says.
LOAD_AND_RUN = """
import json, sys, numpy as np, torch
from diffusers import DiffusionPipeline
folder, image_path, out_path = sys.argv[1:4]
torch.set_num_threads(int(sys.argv[4]))
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
out = pipe(np.load(image_path), num_inference_steps=int(sys.argv[5]),
           generator=torch.Generator().manual_seed(int(sys.argv[6])), output_type="np").images
np.save(out_path, out)
try:
    DiffusionPipeline.from_pretrained(folder)
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
print(json.dumps({"modules": [type(pipe).__module__, type(pipe.dwt_encoder).__module__,
                              type(pipe.scheduler).__module__], "error": error}))
"""


def _eval_file(path: Path, bicubic: list[float], model: list[float],
               back_projection: list[float] | None = None) -> Path:
    """An ``eval --json`` file written by the evaluation module itself (two images per method; the model
    first, as ``eval --json`` writes it, so the card's row order is its own)."""
    keys = ("psnr_y", "ssim_y", "lpips_alex", "lpips_vgg")
    results = {}
    rows = [("model", model), ("bicubic", bicubic)]
    rows += [("back_projection", back_projection)] if back_projection else []
    for method, means in rows:
        spread = (-0.5, 0.5)  # two images whose mean is `means`
        per_image = {f"img{i}.png": {k: v + d * 0.01 for k, v in zip(keys, means)} for i, d in enumerate(spread)}
        results[method] = evaluation.method_summary(per_image)
    path.write_text(evaluation.to_json(results))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A ``test``-preset pipeline saved like training's output, and its release written by the CLI."""
    from difiisr_dwt.presets import build_pipeline

    root = tmp_path_factory.mktemp("export")
    pipe = build_pipeline("test", seed=0)
    source = root / "train-output" / "pipeline"
    pipe.save_pretrained(source)
    _eval_file(root / "val.json", [30.2812, 0.80241, 0.46139, 0.42491], [29.7311, 0.80291, 0.45541, 0.41])
    _eval_file(root / "tno.json", [27.5, 0.7, 0.5, 0.45], [27.9, 0.71, 0.4, 0.39], [28.1, 0.72, 0.48, 0.44])
    meta = {
        "model_id": "org/difiisr-dwt-test", "datasets": ["hanna-xu/RoadScene"], "tags": ["flir"],
        "training_data": "RoadScene `roadscene_train.txt` (181 images).",
        "train_commands": ["accelerate launch train_accelerate.py --stage autoencoder --preset test"],
        "eval": {"RoadScene val (40 images)": "val.json"},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "extra.md").write_text("## Reproduce\n\nRun the commands above on 2 CPU cores.\n")
    out = root / "hub" / "difiisr-dwt-test"
    code = run_cli([
        "export", str(source), "--out", str(out), "--card-meta", str(root / "meta.json"),
        "--eval-json", f"TNO={root / 'tno.json'}", "--variant", "fp16",
        "--train-command", "accelerate launch train_accelerate.py --stage diffusion --preset test",
        "--cpu-time", "1.5 s per 160x128 LR image at 15 steps on 2 CPU threads", "--card-extra", str(root / "extra.md"),
    ])
    assert code == 0
    return pipe, source, out, root


def test_release_layout_and_code_files(exported):
    pipe, _, out, _ = exported
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == FILES
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_difiisr_dwt", "DifIISRDWTPipeline"]
    assert index["dwt_encoder"] == ["modeling_dwt_encoder", "DWTEncoder"]
    assert index["scheduler"] == ["scheduler_resshift", "ResShiftScheduler"]
    code = release_code_files()  # every code file, written from the package's modules
    assert {p for p in FILES if p.endswith(".py")} == set(code)
    for relative, source in code.items():
        assert (out / relative).read_bytes() == source.read_bytes(), relative
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode

    from diffusers import UNet2DModel

    half = UNet2DModel.from_pretrained(out, subfolder="unet", variant="fp16", torch_dtype=torch.float16)
    for name, tensor in pipe.unet.state_dict().items():
        assert half.state_dict()[name].dtype == torch.float16
        assert torch.equal(half.state_dict()[name], tensor.half()), name


@pytest.mark.slow
def test_copied_release_loads_offline_in_a_fresh_process(exported, tmp_path):
    pipe, _, out, _ = exported
    moved = tmp_path / "elsewhere" / "difiisr-dwt-test"
    shutil.copytree(out, moved)
    image = (np.random.RandomState(0).rand(20, 28) * 255).astype(np.uint8)
    np.save(tmp_path / "image.npy", image)
    threads = torch.get_num_threads()
    expected = pipe(image, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(SEED),
                    output_type="np").images

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": "",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, str(moved), str(tmp_path / "image.npy"), str(tmp_path / "out.npy"),
         str(threads), str(STEPS), str(SEED)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(m.startswith("diffusers_modules.") for m in report["modules"]), report  # the release's own code
    got = np.load(tmp_path / "out.npy")
    assert got.shape == expected.shape == (1, 80, 112, 1)
    # another process may sum in another order under load (seen: 2.3e-6); a wrong model is far off
    assert np.abs(got - expected).max() < 1e-4, f"max abs difference {np.abs(got - expected).max()}"
    assert report["error"].startswith("ValueError"), report["error"]
    assert "trust_remote_code=True" in report["error"] and "pipeline_difiisr_dwt.py" in report["error"]


def test_model_card_metrics_and_yaml(exported):
    _, _, out, root = exported
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "diffusers" and front["pipeline_tag"] == "image-to-image"
    assert front["license"] == "apache-2.0" and front["datasets"] == ["hanna-xu/RoadScene"]
    assert {"infrared", "thermal", "super-resolution", "flir"} <= set(front["tags"])
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").data.to_dict() == front  # the Hub's own parser agrees

    for heading in ("## Use it", "### Python (diffusers)", "### Command line", "### Train or fine-tune with accelerate",
                    "## Training", "## Evaluation", "## Limitations", "## Citation"):
        assert f"\n{heading}\n" in text, heading
    assert 'DiffusionPipeline.from_pretrained("org/difiisr-dwt-test", trust_remote_code=True)' in text
    assert "accelerate launch train_accelerate.py --stage diffusion --preset test" in text
    assert "1.5 s per 160x128 LR image" in text
    assert "\n## Reproduce\n\nRun the commands above on 2 CPU cores.\n" in text
    assert text.index("## Reproduce") < text.index("## Citation")
    for key in ("yue2023resshift", "li2025difiisr", "rombach2022ldm"):
        assert key in text

    for label, file in (("RoadScene val (40 images)", "val.json"), ("TNO", "tno.json")):
        section = text.split(f"\n### {label}\n\n")[1].split("\n\n")[0]
        rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:] for line in section.splitlines()}
        data = json.loads((root / file).read_text())
        bicubic, model = data["bicubic"]["mean"], data["model"]["mean"]
        keys = ("psnr_y", "ssim_y", "lpips_alex", "lpips_vgg")
        formats = ("{:.2f}", "{:.4f}", "{:.4f}", "{:.4f}")
        assert rows["Bicubic x4"] == [f.format(bicubic[k]) for f, k in zip(formats, keys)] + ["2"]
        assert rows["DifIISR-DWT (this model)"] == [f.format(model[k]) for f, k in zip(formats, keys)] + ["2"]
        diffs = rows["difference to bicubic"][:4]
        assert [float(d) for d in diffs] == pytest.approx([model[k] - bicubic[k] for k in keys], abs=1e-4)
        order = [line.split(" | ")[0].lstrip("| ") for line in section.splitlines()[2:]]
        if "back_projection" in data:  # `eval --back-projection`: the classical row, between bicubic and ours
            projection = data["back_projection"]["mean"]
            label_bp = "Back-projection (10 rounds from bicubic, no model)"
            assert rows[label_bp] == [f.format(projection[k]) for f, k in zip(formats, keys)] + ["2"]
            assert order == ["Bicubic x4", label_bp, "DifIISR-DWT (this model)", "difference to bicubic"]
        else:
            assert order == ["Bicubic x4", "DifIISR-DWT (this model)", "difference to bicubic"]


def test_export_is_atomic(exported, monkeypatch, tmp_path):
    _, source, out, _ = exported
    import difiisr_dwt.release as release

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted while writing the model card")

    monkeypatch.setattr(release, "render_model_card", fail)
    target = tmp_path / "hub" / "new-release"
    with pytest.raises(RuntimeError, match="interrupted"):
        export_release(source, target)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []  # nothing, not even a temp folder

    previous = tmp_path / "hub" / "old-release"
    shutil.copytree(out, previous)
    before = {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="interrupted"):
        export_release(source, previous, overwrite=True)
    after = {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["old-release"]

    with pytest.raises(ReleaseError, match="--overwrite"):
        export_release(source, previous)
    (tmp_path / "notes").mkdir()
    with pytest.raises(ReleaseError, match="not a pipeline folder"):
        export_release(source, tmp_path / "notes", overwrite=True)


def test_dry_run_and_push_select_the_same_files_offline(exported, monkeypatch, tmp_path, capsys):
    _, _, out, _ = exported
    release = tmp_path / "release"
    shutil.copytree(out, release)
    (release / "checkpoint-500").mkdir()
    (release / "checkpoint-500" / "optimizer.bin").write_bytes(b"0")
    (release / "unet" / "diffusion_pytorch_model.pt").write_bytes(b"0")
    calls = []
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or "commit-url")

    assert run_cli(["export", str(release), "--push", "--repo-id", "org/x", "--dry-run"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert listed == FILES
    assert calls == []  # a dry run touches no network API

    assert run_cli(["export", str(release), "--push", "--repo-id", "org/x", "--private"]) == 0
    assert calls[0] == ("create", "org/x", {"private": True, "exist_ok": True, "repo_type": "model"})
    upload = calls[1][1]
    assert upload["repo_id"] == "org/x" and Path(upload["folder_path"]) == release
    from huggingface_hub.utils import filter_repo_objects

    every_file = [p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()]
    assert set(filter_repo_objects(every_file, ignore_patterns=upload["ignore_patterns"])) == FILES


def test_cli_errors_are_clear(exported, tmp_path, capsys):
    _, source, out, root = exported
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"images": {}}}))
    assert run_cli(["export", str(source), "--out", str(tmp_path / "r"), "--eval-json", str(bad)]) == 2
    assert "'model' has no 'mean' object" in capsys.readouterr().err
    with pytest.raises(ModelCardError, match="no evaluation results"):
        load_eval_json(root / "meta.json")

    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"datsets": ["x"]}))
    assert run_cli(["export", str(source), "--out", str(tmp_path / "r"), "--card-meta", str(meta)]) == 2
    assert "unknown key(s) ['datsets']" in capsys.readouterr().err
    assert run_cli(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "not a pipeline folder (no model_index.json)" in capsys.readouterr().err
    assert run_cli(["export", str(out), "--push"]) == 2
    assert "--repo-id" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_card_says_how_each_table_was_measured_and_refuses_another_models_figures(exported, tmp_path, capsys):
    """An ``eval --json`` of 1 image (``--limit``) with noisy LR, run on another pipeline, went into a card that
    said "LR = PIL bicubic downsampling ... all images of each set" under "DifIISR-DWT (this model)"."""
    from difiisr_dwt.presets import build_pipeline

    _, source, _, _ = exported
    hr = tmp_path / "hr"
    hr.mkdir()
    for name in ("a.png", "b.png"):
        image = np.random.default_rng(len(name)).integers(0, 255, (32, 48), dtype=np.uint8)
        PIL.Image.fromarray(image).save(hr / name)
    other = tmp_path / "other"
    build_pipeline("test", seed=1).save_pretrained(other)  # same architecture, other weights
    runs = {}
    for name, model in (("ours", source), ("other", other)):
        runs[name] = tmp_path / f"{name}.json"
        assert run_cli(["eval", "--hr", str(hr), "--noisy-lr", "--limit", "1", "--model", str(model), "--steps", "2",
                        "--metrics", "psnr_y,lr_error", "--device", "cpu", "--json", str(runs[name])]) == 0
    report = json.loads(runs["ours"].read_text())
    assert set(report) == {"bicubic", "model"}  # one object per method, as before
    protocol = report["model"]["protocol"]
    assert {k: v for k, v in protocol.items() if k in report["bicubic"]["protocol"]} == report["bicubic"]["protocol"]
    assert protocol["images"] == 1 and protocol["limit"] == 1 and protocol["images_available"] == 2
    assert protocol["noise"] == {
        "sigma": 2.0, "column_sigma": 1.5, "seed": 0}
    assert protocol["call"]["num_inference_steps"] == 2 and len(protocol["model_fingerprint"]) == 64
    capsys.readouterr()

    out = tmp_path / "release"
    assert run_cli(["export", str(source), "--out", str(out), "--eval-json", f"TNO={runs['ours']}"]) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "all images of each set" not in text
    notes = text.split("\n### TNO\n")[1].split("\n## ")[0].strip().split("\n\n")[-1].splitlines()
    assert notes[0].startswith("Measured on 1 HR image of `hr` (the first 1 of 2: `--limit`); LR = PIL bicubic /4")
    assert "Gaussian noise (sigma 2 grey levels) and per-column offsets (sigma 1.5), numpy seed 0" in notes[0]
    assert notes[1].startswith("- DifIISR-DWT (this model): seed 0, float32, `num_inference_steps=2`,")

    assert run_cli(["export", str(source), "--out", str(tmp_path / "refused"), "--eval-json",
                    f"TNO={runs['other']}"]) == 2
    err = capsys.readouterr().err
    assert "TNO: its model row was measured on" in err and str(other) in err and "not this pipeline's" in err
    assert not (tmp_path / "refused").exists()
