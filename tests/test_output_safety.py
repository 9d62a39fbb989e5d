"""No writer replaces or deletes a file it did not write (issue 18 items 1, 3, 4).

Every writer (upscale's images and manifest, eval's reports, bench's JSON, export, convert-vq, training's
output folder, the demo's downloads) is aimed at an input, at an input model folder and at a folder of
foreign files; the checksums of every file there before and after must agree. Plus the cases the issue
named, the stale-temp cleanup of two runs sharing a folder, and reruns into the input folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt.cli import main
from difiisr_dwt.io import InputGuard, writer_token
from difiisr_dwt.output_folder import OUTPUT_LOG, remove_stale_temps

REPO = Path(__file__).resolve().parent.parent
BASE = ["--steps", "1", "--device", "cpu"]


def _image(path: Path, seed: int, size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    PIL.Image.fromarray((rng.rand(size[1], size[0]) * 255).astype(np.uint8)).save(path)
    return path


def _checksums(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _upscale(model: Path, *args: str) -> list[str]:
    return ["upscale", *args, "--model", str(model), *BASE]


# ------------------------------------------------------------------------------------------------ item 1: named cases
def test_dataset_folder_into_itself_without_suffix_is_refused(saved_test_model, tmp_path, capsys):
    """``--dataset_name D -o D --suffix "" --overwrite`` replaced a.png and b.tif with their x4 results."""
    pytest.importorskip("datasets")
    folder = tmp_path / "D"
    _image(folder / "a.png", 0)
    PIL.Image.open(_image(folder / "b.png", 1)).save(folder / "b.tif")
    (folder / "b.png").unlink()
    before = _checksums(folder)
    code = main(_upscale(saved_test_model, "--dataset_name", str(folder), "-o", str(folder), "--suffix", "",
                         "--overwrite"))
    err = capsys.readouterr().err
    assert code == 2 and "would replace an input" in err, err
    assert _checksums(folder) == before


def test_manifest_onto_an_input_image_is_refused(saved_test_model, tmp_path, capsys):
    """``--manifest in/b.png`` replaced an input image with JSON."""
    _image(tmp_path / "in" / "a.png", 0)
    _image(tmp_path / "in" / "b.png", 1)
    before = _checksums(tmp_path / "in")
    code = main(_upscale(saved_test_model, str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                         "--manifest", str(tmp_path / "in" / "b.png")))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --manifest") and "is the input" in err[-1]
    assert _checksums(tmp_path / "in") == before
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))  # refused before compute


def test_hard_link_and_symlink_to_an_input_count_as_the_input(saved_test_model, tmp_path, capsys):
    a = _image(tmp_path / "in" / "a.png", 0)
    os.link(a, tmp_path / "linked.json")
    (tmp_path / "sym.json").symlink_to(a)
    before = _checksums(tmp_path / "in")
    for target in ("linked.json", "sym.json"):
        code = main(_upscale(saved_test_model, str(a), "-o", str(tmp_path / "out"),
                             "--manifest", str(tmp_path / target)))
        assert code == 2 and "is the input" in capsys.readouterr().err
    assert _checksums(tmp_path / "in") == before


def test_eval_grid_onto_the_ground_truth_is_refused(tmp_path, capsys):
    """``eval --grid HR/a.png`` replaced the ground-truth image."""
    hr = tmp_path / "HR"
    _image(hr / "a.png", 0, (32, 24))
    before = _checksums(hr)
    code = main(["eval", "--hr", str(hr), "--bicubic", "--metrics", "psnr_y", "--grid", str(hr / "a.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--grid" in err and "is the input" in err or "inside the input folder" in err, err
    assert _checksums(hr) == before


@pytest.fixture(scope="module")
def release_source(tmp_path_factory) -> Path:
    """A ``test``-preset pipeline folder (training's ``OUTPUT_DIR/pipeline``) with a notes file."""
    from difiisr_dwt.presets import build_pipeline

    source = tmp_path_factory.mktemp("export") / "M"
    build_pipeline("test", seed=0).save_pretrained(source)
    return source


def test_export_into_its_own_source_is_refused(release_source, tmp_path, capsys):
    """``export M --out M --overwrite`` deleted the folder's other files and rewrote its card."""
    import shutil

    model = tmp_path / "M"
    shutil.copytree(release_source, model)
    (model / "NOTES.md").write_text("my notes\n")
    (model / "README.md").write_text("my card\n")
    (model / "figures").mkdir()
    (model / "figures" / "plot.png").write_bytes(b"png")
    before = _checksums(tmp_path)
    for out in (model, model / "release"):
        assert main(["export", str(model), "--out", str(out), "--overwrite"]) == 2
        assert "export never writes into the pipeline folder it reads" in capsys.readouterr().err
    assert main(["export", str(model / "unet" / ".."), "--out", str(tmp_path), "--overwrite"]) == 2  # holds M
    assert _checksums(tmp_path) == before


def test_export_overwrite_keeps_other_files_and_drops_its_own_stale_ones(release_source, tmp_path, capsys):
    out = tmp_path / "release"
    assert main(["export", str(release_source), "--out", str(out), "--variant", "fp16"]) == 0
    fp16 = out / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    assert fp16.is_file()
    (out / "NOTES.md").write_text("release notes\n")
    (out / "unet" / "README.txt").write_text("about this UNet\n")
    foreign = {name: (out / name).read_bytes() for name in ("NOTES.md", "unet/README.txt")}
    capsys.readouterr()
    assert main(["export", str(release_source), "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in foreign} == foreign
    assert not fp16.exists()  # the earlier export's variant, not written this time: dropped
    assert "kept 2 file(s) export does not write: NOTES.md, unet/README.txt" in printed
    assert "replaced the model card" in printed
    from difiisr_dwt.release import check_release

    assert check_release(out) == []


# ------------------------------------------------------------------------------------------------ item 3: temp files
_SLOW_WRITER = """
import sys, time
from pathlib import Path
from difiisr_dwt.io import write_atomic
go = Path(sys.argv[2])
def write(f):
    f.write(b"half")
    f.flush()
    Path(sys.argv[3]).write_text("writing")
    while not go.exists():
        time.sleep(0.05)
    f.write(b" and the rest")
write_atomic(sys.argv[1], write)
"""


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.05)


def test_cleanup_spares_a_live_writers_temp_file_and_takes_a_dead_ones(tmp_path):
    """A second run into the same folder deleted a live run's temp file as "left by an interrupted run"."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    live = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out / "a_x4.png"), str(tmp_path / "go"),
                             str(tmp_path / "live-started")], env=env)
    dead = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out / "b_x4.png"), str(tmp_path / "never"),
                             str(tmp_path / "dead-started")], env=env)
    try:
        _wait_for(tmp_path / "live-started", live)
        _wait_for(tmp_path / "dead-started", dead)
        dead.send_signal(signal.SIGKILL)  # an interrupted run: its temp file stays behind
        dead.wait()
        temps = sorted(p.name for p in out.glob(".*.tmp"))
        assert len(temps) == 2 and all(f".p{live.pid}-" in t or f".p{dead.pid}-" in t for t in temps)
        # a second run, started later: every temp file is older than it
        removed = remove_stale_temps(out, ["a_x4.png", "b_x4.png"], before=time.time() + 3600)
        assert removed == 1
        assert [p.name for p in out.glob(".*.tmp")] == [t for t in temps if f".p{live.pid}-" in t]
        (tmp_path / "go").write_text("")
        assert live.wait(timeout=120) == 0  # the live run finishes: no ENOENT
        assert (out / "a_x4.png").read_bytes() == b"half and the rest"
    finally:
        for process in (live, dead):
            if process.poll() is None:
                process.kill()


def test_temp_of_another_host_is_kept_an_earlier_boots_and_an_old_versions_go(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    token = writer_token()  # pPID-HHHHBBBB: this process, this host (HHHH) and boot (BBBB)
    host, boot = token[-8:-4], token[-4:]
    other_host = "0000" if host != "0000" else "1111"
    other_boot = "0000" if boot != "0000" else "1111"
    elsewhere = out / f".a_x4.png.abc123.p{os.getpid()}-{other_host}{boot}.tmp"
    earlier_boot = out / f".d_x4.png.abc123.p{os.getpid()}-{host}{other_boot}.tmp"
    legacy = out / ".b_x4.png.k3j9x.tmp"
    ours_live = out / f".c_x4.png.def456.{token}.tmp"  # this very process
    for path in (elsewhere, earlier_boot, legacy, ours_live):
        path.write_bytes(b"x")
    names = ["a_x4.png", "b_x4.png", "c_x4.png", "d_x4.png"]
    assert remove_stale_temps(out, names, before=time.time() + 60) == 2
    assert elsewhere.exists() and ours_live.exists() and not legacy.exists() and not earlier_boot.exists()


# ------------------------------------------------------------------------------------------------ item 4: reruns
def test_rerun_into_the_input_folder_takes_earlier_outputs_for_outputs(saved_test_model, tmp_path, capsys):
    """An identical rerun with ``-o`` the input folder was refused ("would replace an input")."""
    folder = tmp_path / "in"
    _image(folder / "a.png", 0)
    _image(folder / "b.png", 1)
    assert main(_upscale(saved_test_model, str(folder), "-o", str(folder))) == 0
    first = _checksums(folder)
    assert sorted(first) == [OUTPUT_LOG, "a.png", "a_x4.png", "b.png", "b_x4.png"]
    capsys.readouterr()
    assert main(_upscale(saved_test_model, str(folder), "-o", str(folder))) == 0
    printed = capsys.readouterr().out
    assert "left out 2 earlier output(s)" in printed and "0 written, 2 skipped" in printed
    assert _checksums(folder) == first
    # an output changed since is the user's file again: an input, which a's output would replace
    (folder / "a_x4.png").write_bytes((folder / "a.png").read_bytes())
    assert main(_upscale(saved_test_model, str(folder), "-o", str(folder), "--overwrite")) == 2
    assert "would replace an input" in capsys.readouterr().err


def test_overwrite_replaces_only_files_upscale_wrote(saved_test_model, tmp_path, capsys):
    folder = tmp_path / "in"
    _image(folder / "a.png", 0)
    _image(folder / "b.png", 1)
    out = tmp_path / "out"
    assert main(_upscale(saved_test_model, str(folder / "a.png"), "-o", str(out))) == 0
    (out / "b_x4.png").write_bytes(b"someone else's file")  # not written by upscale
    before = _checksums(out)
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out), "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "b_x4.png" in err and "--overwrite replaces only those" in err, err
    assert _checksums(out) == before  # refused before any compute: a_x4.png not redone either
    (out / "b_x4.png").unlink()
    assert main(_upscale(saved_test_model, str(folder), "-o", str(out), "--overwrite")) == 0  # its own: redone
    assert "2 written" in capsys.readouterr().out


@pytest.mark.parametrize("streaming", [False, True])
def test_dataset_into_its_own_folder_refused_when_streaming_too(saved_test_model, tmp_path, capsys, streaming):
    pytest.importorskip("datasets")
    folder = tmp_path / "D"
    _image(folder / "a.png", 0)
    _image(folder / "b.png", 1)
    before = _checksums(folder)
    code = main(_upscale(saved_test_model, "--dataset_name", str(folder), "-o", str(folder), "--suffix", "",
                         "--overwrite", *(["--streaming"] if streaming else [])))
    err = capsys.readouterr().err
    assert code == 2 and ("would replace an input" in err or "is the input" in err), err
    assert _checksums(folder) == before


def test_dataset_rerun_into_its_folder_does_not_upscale_earlier_outputs(saved_test_model, tmp_path, capsys):
    """The dataset path wrote ``a_x4_x4.png``."""
    pytest.importorskip("datasets")
    folder = tmp_path / "D"
    _image(folder / "a.png", 0)
    assert main(_upscale(saved_test_model, "--dataset_name", str(folder), "-o", str(folder))) == 0
    assert main(_upscale(saved_test_model, "--dataset_name", str(folder), "-o", str(folder))) == 0
    assert sorted(p.name for p in folder.iterdir()) == [OUTPUT_LOG, "a.png", "a_x4.png"]


def test_outputs_listed_in_an_earlier_manifest_are_outputs(saved_test_model, tmp_path, capsys):
    """Outputs of a run that kept no log (an older version) are known from its ``--manifest``."""
    folder = tmp_path / "in"
    _image(folder / "a.png", 0)
    manifest = tmp_path / "run.json"
    assert main(_upscale(saved_test_model, str(folder), "-o", str(folder), "--manifest", str(manifest))) == 0
    (folder / OUTPUT_LOG).unlink()
    assert main(_upscale(saved_test_model, str(folder), "-o", str(folder), "--manifest", str(manifest))) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x4.png"]  # a_x4.png skipped, not upscaled


# ------------------------------------------------------------------------------------------------ training, demo
def test_training_output_dir_may_not_replace_its_input_component(tmp_path):
    """The autoencoder stage fine-tuning ``OUT/vqvae`` into ``--output_dir OUT`` would replace its input."""
    from difiisr_dwt.errors import UsageError
    from difiisr_dwt.training.args import parse_args
    from difiisr_dwt.training.autoencoder import AutoencoderStage
    from difiisr_dwt.training.checkpointing import check_output_dir
    from difiisr_dwt.training.diffusion import DiffusionStage

    (tmp_path / "out" / "vqvae").mkdir(parents=True)
    (tmp_path / "out" / "checkpoint-500" / "vqvae").mkdir(parents=True)  # e.g. a VQ model picked from a checkpoint
    (tmp_path / "data").mkdir()

    def args(*extra):
        return parse_args(["--stage", "autoencoder", "--train_data_dir", str(tmp_path / "data"), *extra])

    with pytest.raises(UsageError, match="--output_dir .*vqvae is the input folder"):
        check_output_dir(args("--vqvae_model_name_or_path", str(tmp_path / "out" / "vqvae"),
                              "--output_dir", str(tmp_path / "out")), AutoencoderStage.final_folders())
    with pytest.raises(UsageError, match="lies inside the input folder"):
        check_output_dir(args("--output_dir", str(tmp_path / "data" / "run")), AutoencoderStage.final_folders())
    with pytest.raises(UsageError, match="checkpoint-500 holds the input folder"):
        check_output_dir(args("--vqvae_model_name_or_path", str(tmp_path / "out" / "checkpoint-500" / "vqvae"),
                              "--output_dir", str(tmp_path / "out")), DiffusionStage.final_folders())
    # the adapter stage reading OUT/vqvae writes OUT/dwt_encoder: allowed
    adapter = parse_args(["--stage", "adapter", "--train_data_dir", str(tmp_path / "data"),
                          "--vqvae_model_name_or_path", str(tmp_path / "out" / "vqvae"),
                          "--output_dir", str(tmp_path / "out")])
    from difiisr_dwt.training.adapter import AdapterStage

    check_output_dir(adapter, AdapterStage.final_folders())


def test_demo_cleanup_never_deletes_files_it_did_not_write(tmp_path):
    sys.path.insert(0, str(REPO / "examples" / "gradio_app"))
    try:
        import imaging
    finally:
        sys.path.remove(str(REPO / "examples" / "gradio_app"))
    root = tmp_path / "downloads"
    foreign = [root / "mine" / "photo_x4.png", root / "notes.txt", root / "x" / "y"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"foreign")
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    old = imaging.save_result(PIL.Image.new("L", (8, 8)), "a.png", root)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    new = imaging.save_result(PIL.Image.new("L", (8, 8)), "b.png", root)
    assert all(p.read_bytes() == b"foreign" for p in foreign)
    assert not old.exists() and new.is_file()


# ------------------------------------------------------------------------------------------------ acceptance
def _ldm_vq_checkpoint(path: Path) -> Path:
    """An original-layout VQ-f4 checkpoint (the reference model of ``test_convert_vq``)."""
    spec = importlib.util.spec_from_file_location("_convert_vq_reference", REPO / "tests" / "test_convert_vq.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.save(module.LDMVQModel().state_dict(), path)
    return path


@pytest.fixture
def world(saved_test_model, tmp_path):
    """Inputs of every writer: images, an eval HR folder, a model folder, a VQ checkpoint, training parts."""
    import shutil

    from difiisr_dwt.presets import build_dwt_encoder, build_vqvae

    root = tmp_path / "world"
    inputs = root / "in"
    _image(inputs / "a.png", 0)
    _image(inputs / "b.png", 1)
    for i in range(2):
        _image(root / "hr" / f"h{i}.png", i, (64, 64))
    shutil.copytree(saved_test_model, root / "model")
    (root / "ckpt").mkdir()
    _ldm_vq_checkpoint(root / "ckpt" / "vq.pth")
    torch.manual_seed(0)
    build_vqvae("test").save_pretrained(root / "vq")
    build_dwt_encoder("test").save_pretrained(root / "enc")
    foreign = root / "foreign"
    for name in ("notes.txt", "a_x4.png", "sub/data.bin"):
        (foreign / name).parent.mkdir(parents=True, exist_ok=True)
        (foreign / name).write_bytes(name.encode() * 3)
    return root


#: writer -> (aimed at an input, aimed at an input model folder), relative to the world folder. Aimed at a
#: folder of foreign files, folder writers write into ``foreign/`` and file writers to ``foreign/report.json``.
AIMS = {
    "upscale-files": ("in", "model/out"),  # into the input folder with --suffix "": onto the inputs
    "upscale-folder": ("in", "model/out"),
    "upscale-dataset": ("in", "model/out"),
    "upscale-manifest": ("in/b.png", "model/model_index.json"),
    "eval-json": ("hr/h1.png", "model/model_index.json"),
    "eval-grid": ("hr/h0.png", "model/unet/config.json"),
    "eval-csv": ("hr/notes.csv", "model/out.csv"),  # a new file inside the HR folder
    "bench-json": ("model/unet/config.json", "model/bench.json"),  # bench reads only its --model
    "export": ("model", "model/release"),
    "convert-vq": ("ckpt", "ckpt/vq.pth"),  # the checkpoint's folder (replaced whole), the checkpoint itself
    "train": ("hr", "vq/run"),  # the training data, inside the VQ model it reads
}
FOLDER_WRITERS = {"upscale-files", "upscale-folder", "upscale-dataset", "export", "convert-vq", "train"}


def _aim(world: Path, writer: str, aim: str) -> Path:
    if aim == "foreign":
        return world / "foreign" / ("" if writer in FOLDER_WRITERS else "report.png" if writer == "eval-grid"
                                    else "report.json")
    return world / AIMS[writer][0 if aim == "input" else 1]


def _command(world: Path, writer: str, target: Path, aim: str):
    model = ["--model", str(world / "model")]
    upscale = [*BASE, *model] + (["--suffix", "", "--overwrite"] if aim == "input" else [])
    if writer == "upscale-files":
        return ["upscale", str(world / "in" / "a.png"), str(world / "in" / "b.png"), "-o", str(target), *upscale]
    if writer == "upscale-folder":
        return ["upscale", str(world / "in"), "-o", str(target), *upscale]
    if writer == "upscale-dataset":
        return ["upscale", "--dataset_name", str(world / "in"), "-o", str(target), *upscale]
    if writer == "upscale-manifest":
        return ["upscale", str(world / "in"), "-o", str(world / "out"), "--manifest", str(target), *BASE, *model]
    if writer in ("eval-json", "eval-grid", "eval-csv"):
        option = "--" + writer.split("-")[1]
        return ["eval", "--hr", str(world / "hr"), *model, *BASE, "--metrics", "psnr_y", option, str(target)]
    if writer == "bench-json":
        return ["bench", "--quick", "--threads", "1", "--section", "encoder", "--section", "gpu", *model,
                "--json", str(target)] if aim != "foreign" else \
            ["bench", "--quick", "--threads", "1", "--section", "encoder", "--json", str(target)]
    if writer == "export":
        return ["export", str(world / "model"), "--out", str(target), "--overwrite"]
    if writer == "convert-vq":
        return ["convert-vq", str(world / "ckpt" / "vq.pth"), "--out", str(target), "--overwrite"]
    if writer == "train":
        data = world / "hr"
        return ["--stage", "adapter", "--preset", "test", "--train_data_dir", str(data), "--resolution", "64",
                "--train_batch_size", "1", "--max_train_steps", "2", "--checkpointing_steps", "2",
                "--vqvae_model_name_or_path", str(world / "vq"),
                "--dwt_encoder_model_name_or_path", str(world / "enc"), "--output_dir", str(target)]
    raise AssertionError(writer)


WRITERS = ["upscale-files", "upscale-folder", "upscale-dataset", "upscale-manifest", "eval-json", "eval-grid",
           "eval-csv", "bench-json", "export", "convert-vq", pytest.param("train", marks=pytest.mark.slow)]


@pytest.mark.parametrize("aim", ["input", "model", "foreign"])
@pytest.mark.parametrize("writer", WRITERS)
def test_no_writer_replaces_or_deletes_a_file_it_did_not_write(world, writer, aim, train_main, capsys):
    if writer == "upscale-dataset":
        pytest.importorskip("datasets")
    if writer == "train" and aim == "foreign":
        pytest.importorskip("accelerate")
    target = _aim(world, writer, aim)
    if writer == "export" and aim == "foreign":  # an earlier release with foreign files beside it
        assert main(["export", str(world / "model"), "--out", str(target), "--overwrite"]) == 2  # not a release
        import shutil

        shutil.rmtree(target)
        assert main(["export", str(world / "model"), "--out", str(target)]) == 0
        for name in ("notes.txt", "sub/data.bin"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(name.encode() * 3)
    if writer == "convert-vq" and aim == "foreign":  # an earlier model folder with foreign files in it
        assert main(["convert-vq", str(world / "ckpt" / "vq.pth"), "--out", str(target), "--overwrite"]) == 2
        import shutil

        shutil.rmtree(target)
        assert main(["convert-vq", str(world / "ckpt" / "vq.pth"), "--out", str(target)]) == 0
        (target / "notes.txt").write_text("notes")
    before = _checksums(world)
    argv = _command(world, writer, target, aim)
    code = train_main(argv) if writer == "train" else main(argv)
    err = capsys.readouterr().err
    after = _checksums(world)
    changed = sorted(name for name, digest in before.items() if after.get(name) != digest)
    if writer == "export" and aim == "foreign":  # the earlier release's own files are replaced, by design
        from difiisr_dwt.release import is_release_file

        changed = [name for name in changed if not is_release_file(world / "foreign", name.split("/", 1)[1])]
    if writer == "convert-vq" and aim == "foreign":
        changed = [name for name in changed if name.split("/", 1)[1] not in
                   ("config.json", "diffusion_pytorch_model.safetensors")]
    assert changed == [], (code, err)
    if aim == "foreign" and writer in ("upscale-files", "upscale-folder", "upscale-dataset"):
        # foreign/a_x4.png is a's output name: not this tool's file, so neither replaced nor taken for a finished
        # output (it was skipped, "1 skipped", exit 0, and a never upscaled); refused before any work
        assert code == 2 and "a_x4.png" in err and "is no earlier output of this tool" in err, err
        assert set(after) == set(before)
    elif aim == "foreign":
        assert code == 0, err
        created = sorted(set(after) - set(before))
        if writer not in ("export", "convert-vq"):  # those replaced their earlier folder, created above
            assert any(name.startswith("foreign/") for name in created), created
        assert all(name.startswith(("foreign/", "out/")) for name in created), created  # out/: upscale's -o
    else:
        assert code == 2, err
        assert "error:" in err and ("input" in err or "pipeline folder it reads" in err), err
        assert set(after) == set(before)  # nothing written anywhere either


def test_input_guard_compares_files_not_names(tmp_path):
    a = _image(tmp_path / "a.png", 0)
    (tmp_path / "model").mkdir()
    guard = InputGuard(files=[a], folders=[tmp_path / "model"])
    assert guard.problem(tmp_path / "b.png") is None
    assert "is the input" in guard.problem(tmp_path / "." / "a.png")
    assert "inside the input folder" in guard.problem(tmp_path / "model" / "x" / "y.json")
    assert guard.problem(tmp_path, replaces_folder=True).startswith("holds the input")
    assert guard.problem(tmp_path) is None  # writing beside an input is fine
