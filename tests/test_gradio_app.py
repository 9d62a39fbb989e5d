"""The Gradio demo (examples/gradio_app): its functions in-process, and its ``/upscale`` endpoint
through ``gradio_client`` against the app started as a real server on a free local port."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e .[demo])")

REPO = Path(__file__).resolve().parent.parent
APP_DIR = REPO / "examples" / "gradio_app"
MAX_PIXELS = 64 * 64  # the servers' input cap here: 32x24 passes, 80x64 does not


def _load_app(app_file: Path = APP_DIR / "app.py", name: str = "difiisr_gradio_app"):
    sys.path.insert(0, str(APP_DIR))  # app.py imports its sibling imaging.py
    spec = importlib.util.spec_from_file_location(name, app_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


demo_app = _load_app()
imaging = sys.modules["imaging"]


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    """A saved ``test``-preset pipeline (Hub layout), as ``--model`` takes it."""
    from difiisr_dwt.presets import build_pipeline

    folder = tmp_path_factory.mktemp("gradio_model") / "pipeline"
    build_pipeline("test", seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(pipeline_dir):
    return demo_app.load(str(pipeline_dir), "cpu")


def write_image(path: Path, size=(32, 24), channels: int = 1, bit16: bool = False, seed: int = 0) -> Path:
    """A random image file of ``size`` (width, height); the suffix picks the format."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    if bit16:
        array = rng.integers(1000, 60000, shape, dtype=np.uint16)
    else:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
    PIL.Image.fromarray(array).save(path)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(model_dir: Path, work_dir: Path, max_pixels: int = MAX_PIXELS, timeout: float = 120) -> Iterator[str]:
    """Start ``python examples/gradio_app/app.py`` on a free 127.0.0.1 port; yield its URL; stop it."""
    port = _free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
        "GRADIO_TEMP_DIR": str(work_dir / "gradio"), "TMPDIR": str(work_dir),
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }
    env.pop("GRADIO_SERVER_NAME", None)
    log_path = work_dir / "server.log"
    command = [sys.executable, str(APP_DIR / "app.py"), "--model", str(model_dir), "--port", str(port),
               "--max-pixels", str(max_pixels), "--device", "cpu"]
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer on {url} within {timeout} s:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(pipeline_dir, tmp_path_factory) -> Iterator[str]:
    with running_app(pipeline_dir, tmp_path_factory.mktemp("gradio_server")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    return Client(server, download_files=str(tmp_path_factory.mktemp("gradio_downloads")), verbose=False)


def predict(client, path: Path, steps=3, seed=0, tile_size=0, palette="Grayscale (white hot)", noise_scale=0.0):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), steps, seed, tile_size, noise_scale, palette, api_name="/upscale")


# ---------------------------------------------------------------- in-process
def test_upscale_file_16bit_gray_keeps_depth_and_size(pipe, tmp_path):
    path = write_image(tmp_path / "ir16.png", bit16=True)
    steps_seen = []
    out = demo_app.upscale_file(pipe, str(path), steps=4, seed=0, tile_size=0,
                                on_step=lambda done, total: steps_seen.append((done, total)))
    source = np.asarray(PIL.Image.open(path))
    assert out.result.mode == "I;16" and out.result.size == (128, 96)
    result = np.asarray(out.result)
    # in the input's counts (not rescaled): the mean level kept; edges may overshoot the input's span
    assert abs(result.astype(np.float64).mean() - source.astype(np.float64).mean()) < 0.02 * np.ptp(source)
    assert out.result_u8.shape == out.bicubic_u8.shape == (96, 128, 1) and out.result_u8.dtype == np.uint8
    assert steps_seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "32x24 16-bit" in out.info and "128x96 16-bit" in out.info

    saved = imaging.save_result(out.result, path.name, tmp_path / "out")
    assert saved.name == "ir16_x4.png"
    with PIL.Image.open(saved) as reread:
        assert reread.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(reread), result)


def test_upscale_file_rgb_jpeg_and_16bit_tiff(pipe, tmp_path):
    rgb = demo_app.upscale_file(pipe, str(write_image(tmp_path / "rgb.jpg", channels=3)), 2, 0, 0)
    assert rgb.result.mode == "RGB" and rgb.result.size == (128, 96) and rgb.result_u8.shape == (96, 128, 3)

    tiff = write_image(tmp_path / "ir16.tif", size=(20, 16), bit16=True)
    out = demo_app.upscale_file(pipe, str(tiff), 2, 0, 0)
    saved = imaging.save_result(out.result, tiff.name, tmp_path / "out")
    assert saved.suffix == ".tif"
    with PIL.Image.open(saved) as reread:
        assert reread.mode == "I;16" and reread.size == (80, 64)


def test_seed_and_tiling_controls(pipe, tmp_path):
    path = write_image(tmp_path / "ir.png", size=(24, 16))
    first, again, other = (np.asarray(demo_app.upscale_file(pipe, str(path), 2, seed, 0).result) for seed in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    tiled = demo_app.upscale_file(pipe, str(path), 2, 1, tile_size=16)  # 2 tiles across
    assert tiled.result.size == (96, 64)
    assert not np.array_equal(np.asarray(tiled.result), first)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (None, None, "Upload an image first"),
        ("notes.txt", b"hello", "notes.txt: unsupported file type"),
        ("fake.png", b"this is not a PNG", "fake.png is not a readable PNG, JPEG or TIFF image (not an image)"),
        ("truncated.png", "truncated", "truncated.png is not a readable"),
        ("big.png", "big", "big.png is 80x64 = 5,120 pixels; this demo accepts at most 4,096 input pixels"),
    ],
)
def test_bad_uploads_raise_readable_errors(pipe, tmp_path, name, content, message):
    path = None
    if name is not None:
        path = tmp_path / name
        if content == "big":
            write_image(path, size=(80, 64))
        elif content == "truncated":
            write_image(path, size=(64, 48), channels=3, seed=1)
            path.write_bytes(path.read_bytes()[:200])
        else:
            path.write_bytes(content)
    with pytest.raises(imaging.UploadError) as error:
        demo_app.upscale_file(pipe, None if path is None else str(path), 2, 0, 0, max_pixels=MAX_PIXELS)
    assert message in str(error.value)
    assert str(tmp_path) not in str(error.value)  # the file's name, never the server's path


@pytest.mark.parametrize(("steps", "seed", "tile", "message"), [
    (0, 0, 0, "Steps must be a whole number in [1, 15]"), (2.5, 0, 0, "Steps"), (2, -1, 0, "Seed"),
    (2, float("inf"), 0, "Seed"), (None, 0, 0, "Steps"), (2, 0, "big", "Tile size"),
    (2, 0, 31, "`tile_size` must be a positive multiple of 2"),
])
def test_bad_settings_raise_readable_errors(pipe, tmp_path, steps, seed, tile, message):
    path = write_image(tmp_path / "ir.png")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        demo_app.upscale_file(pipe, str(path), steps, seed, tile)


def test_numeric_settings_accept_numbers_and_numeric_strings_alike(pipe, tmp_path):
    """Components send numbers, API clients may send strings: every setting takes both, or refuses both."""
    path = str(write_image(tmp_path / "ir.png", size=(16, 12)))
    as_numbers = demo_app.upscale_file(pipe, path, 2, 3, 0, noise_scale=0.5)
    as_strings = demo_app.upscale_file(pipe, path, "2", "3", "0", noise_scale="0.5")
    np.testing.assert_array_equal(np.asarray(as_numbers.result), np.asarray(as_strings.result))
    assert "2 steps, detail 0.5, seed 3" in as_strings.info
    for bad in ("half", 1.5, "1.5", float("nan"), [0.5]):
        with pytest.raises(imaging.UploadError, match=r"Detail \(noise scale\) must be a number in \[0, 1\]"):
            demo_app.upscale_file(pipe, path, 2, 0, 0, noise_scale=bad)


def test_palettes_change_display_only():
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    shown = {name: imaging.colorize(ramp, name) for name in imaging.PALETTES}
    for name, image in shown.items():
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8, name
    np.testing.assert_array_equal(shown["Grayscale (white hot)"], np.repeat(ramp, 3, axis=2))
    np.testing.assert_array_equal(shown["Black hot"], 255 - shown["Grayscale (white hot)"])
    for name in ("Ironbow", "Inferno", "Magma", "Turbo (rainbow)"):
        assert np.ptp(shown[name].astype(int), axis=2).max() > 100, f"{name} has no colour"
        assert tuple(shown[name][0, 0]) != tuple(shown[name][-1, -1])
    assert len({image.tobytes() for image in shown.values()}) == len(imaging.PALETTES)
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imaging.colorize(rgb, "Grayscale (white hot)"), rgb)  # colour input as it is
    assert imaging.colorize(rgb, "Inferno").shape == (8, 8, 3)
    with pytest.raises(imaging.UploadError, match="Unknown palette"):
        imaging.colorize(ramp, "Sepia")


def test_main_binds_localhost_with_a_bounded_queue(pipeline_dir, monkeypatch):
    launched = {}
    monkeypatch.setattr(demo_app.gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    demo = demo_app.main(["--model", str(pipeline_dir), "--device", "cpu", "--queue-size", "3"])
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] is None
    assert demo._queue.max_size == 3
    api = [fn.api_name for fn in demo.fns.values()]
    assert "upscale" in api


def test_space_layout_runs_without_the_package(pipeline_dir, tmp_path, monkeypatch):
    """A Space holds only app.py + imaging.py: the app must load and run without ``difiisr_dwt``."""
    space = tmp_path / "space"
    space.mkdir()
    for name in ("app.py", "imaging.py"):
        shutil.copy(APP_DIR / name, space / name)
    for module in ("difiisr_dwt", "difiisr_dwt.loading"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import difiisr_dwt` fail
    space_app = _load_app(space / "app.py", "difiisr_gradio_space_app")
    assert space_app.load_pipeline is None and space_app.DEFAULT_MODEL is None
    import diffusers

    asked = []

    def no_network(model, **kwargs):
        asked.append(model)
        raise OSError("no network in tests")

    with monkeypatch.context() as patch:
        patch.delenv("DIFIISR_MODEL", raising=False)
        with pytest.raises(space_app.UploadError, match="set DIFIISR_MODEL"):  # no placeholder repo id to fall to
            space_app.load(None, "cpu")
        patch.setenv("DIFIISR_MODEL", "someone/their-model")
        patch.setattr(diffusers.DiffusionPipeline, "from_pretrained", no_network)
        with pytest.raises(OSError):
            space_app.load(None, "cpu")
    assert asked == ["someone/their-model"]  # without the package, the default is the Space's model
    with pytest.raises(ValueError, match="trust_remote_code"):  # another model's code runs only when asked
        space_app.load(str(pipeline_dir), "cpu")
    pipe = space_app.load(str(pipeline_dir), "cpu", trust_remote_code=True)
    out = space_app.upscale_file(pipe, str(write_image(tmp_path / "ir.png", size=(16, 12))), 1, 0, 0)
    assert out.result.size == (64, 48)


# ---------------------------------------------------------------- through the server
@pytest.mark.slow
def test_client_upscale_16bit_and_palette(client, tmp_path):
    path = write_image(tmp_path / "ir16.png", bit16=True)
    (bicubic, result), download, info = predict(client, path, palette="Grayscale (white hot)")
    for shown in (bicubic, result):
        with PIL.Image.open(shown) as image:
            assert image.size == (128, 96)
    with PIL.Image.open(download) as image:
        assert image.mode == "I;16" and image.size == (128, 96) and Path(download).name == "ir16_x4.png"
        full = np.asarray(image)
    assert "32x24 16-bit I;16 -> 128x96 16-bit I;16; 3 steps, detail 0, seed 0" in info
    with PIL.Image.open(result) as image:
        gray = np.asarray(image.convert("RGB")).astype(int)
    assert np.ptp(gray, axis=2).max() == 0  # grayscale palette: R = G = B

    (_, colored), download2, _ = predict(client, path, palette="Inferno")
    with PIL.Image.open(colored) as image:
        assert np.ptp(np.asarray(image.convert("RGB")).astype(int), axis=2).max() > 50
    with PIL.Image.open(download2) as image:
        np.testing.assert_array_equal(np.asarray(image), full)  # the palette never touches the result file


@pytest.mark.slow
def test_client_errors_leave_server_serving(client, tmp_path):
    from gradio_client.exceptions import AppError

    fake = tmp_path / "fake.png"
    fake.write_bytes(b"GIF89a but not really")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = [
        (fake, "fake.png is not a readable PNG, JPEG or TIFF image"),
        (write_image(tmp_path / "big.png", size=(80, 64)), "this demo accepts at most 4,096 input pixels"),
        (text, "Invalid file type"),  # gradio's own check of the upload's suffix
    ]
    for path, message in cases:
        with pytest.raises(AppError) as error:
            predict(client, path)
        assert message in str(error.value)
        assert "Traceback" not in str(error.value)
        # ...and the next request still succeeds
        (_, result), _, _ = predict(client, write_image(tmp_path / "ok.png", size=(20, 16)), steps=1)
        with PIL.Image.open(result) as image:
            assert image.size == (80, 64)


def test_demo_refuses_a_missing_device(capsys):
    """``--device`` is checked when parsed, before the model loads (the same check as the CLI's)."""
    with pytest.raises(SystemExit):
        demo_app.parse_args(["--device", "foo"])
    assert "foo" in capsys.readouterr().err


def test_demo_refuses_a_model_it_cannot_load_in_one_line(tmp_path, capsys):
    """Like a bad ``--device``: the usage and one ``error:`` line, exit status 2, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        demo_app.main(["--model", str(tmp_path / "does" / "not" / "exist"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert lines[0].endswith(f": error: cannot load the model {tmp_path / 'does' / 'not' / 'exist'}: no such folder")


def test_no_placeholder_model_id():
    """The Space's front matter and the app name no made-up repo id (``org/...``): a real one or none."""
    text = (APP_DIR / "README.md").read_text(encoding="utf-8") + (APP_DIR / "app.py").read_text(encoding="utf-8")
    assert "org/difiisr-dwt" not in text
    front_matter = (APP_DIR / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert "models:" not in front_matter or "org/" not in front_matter


# ---------------------------------------------------------------- radiometric uploads
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radiometric_float_tiff_keeps_units_with_colorbar_and_readout(pipe, tmp_path, dtype):
    import gradio as gr
    import tifffile

    celsius = np.linspace(18.0, 26.0, 24 * 32).reshape(24, 32).astype(dtype)
    path = tmp_path / "facade_degC.tif"
    tifffile.imwrite(path, celsius)
    out = demo_app.upscale_file(pipe, str(path), 1, 0, 0, value_range=(15, 30))
    assert out.result.mode == "F" and out.result.size == (128, 96) and "32-bit F" in out.info
    thermal = out.thermal
    assert thermal["value_range"] == (15.0, 30.0) and thermal["after"].shape == (96, 128)
    bar, probe, text = demo_app.thermal_view(thermal, "Ironbow")
    assert bar["visible"] and bar["value"].shape == (56, 512, 3) and probe["value"].shape == (96, 128, 3)
    line = demo_app.read_point(thermal, gr.SelectData(None, {"index": [100, 40], "value": None}))
    lr, before, after = celsius[40 // 4, 100 // 4], thermal["before"][40, 100], thermal["after"][40, 100]
    assert line == (f"at (100, 40): input {lr:.3f}, before (bicubic) {before:.3f}, after {after:.3f} "
                    "°C or K, as in the file")
    assert 17.5 < after < 26.5  # a temperature of the input's scale, not a [0, 1] grey level
    saved = imaging.save_result(out.result, path.name, tmp_path / "out")
    with PIL.Image.open(saved) as reread:
        assert reread.mode == "F"
        np.testing.assert_array_equal(np.asarray(reread), np.asarray(out.result))


def test_16bit_upload_reads_counts_and_ordinary_upload_hides_the_readout(pipe, tmp_path):
    counts = demo_app.upscale_file(pipe, str(write_image(tmp_path / "ir16.tif", size=(20, 16), bit16=True)), 1, 0, 0)
    assert counts.thermal["unit"] == "counts" and counts.thermal["value_range"][1] > counts.thermal["value_range"][0]
    plain = demo_app.upscale_file(pipe, str(write_image(tmp_path / "ir.png", size=(20, 16))), 1, 0, 0)
    assert plain.thermal is None
    bar, probe, _ = demo_app.thermal_view(None, "Ironbow")
    assert bar["visible"] is False and probe["visible"] is False


@pytest.mark.parametrize(("low", "high", "message"), [(5, None, "give both low and high"),
                                                      (30, 20, "low must be below high")])
def test_bad_range_is_a_readable_error(pipe, tmp_path, low, high, message):
    with pytest.raises(imaging.UploadError, match=message):
        demo_app.upscale_file(pipe, str(write_image(tmp_path / "a.png")), 1, 0, 0, value_range=(low, high))
