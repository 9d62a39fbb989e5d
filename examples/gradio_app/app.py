"""Gradio demo of DifIISR-DWT: x4 super-resolution of infrared images, next to bicubic.

Run locally (binds 127.0.0.1; on a Hugging Face Space the same file runs unchanged):

    python examples/gradio_app/app.py [--model PATH_OR_REPO] [--port 7860]

The pipeline is loaded once at start, on the GPU when there is one. Uploads are PNG / JPEG / TIFF,
8- or 16-bit, grayscale or RGB, or radiometric TIFFs (16-bit counts, float temperatures); the result file
keeps the input's channels, bit depth and units. Radiometric uploads get a colour bar in their units and a
readout of the value at a clicked point, before (bicubic) and after; a fixed range (low, high in the
input's units) maps the same temperature to the same model input for every upload.
"""

from __future__ import annotations

import argparse
import html
import inspect
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import torch

HERE = Path(__file__).resolve().parent
if (HERE.parent.parent / "difiisr_dwt").is_dir():  # a checkout: use its package and embedded model
    sys.path.insert(0, str(HERE.parent.parent))

from imaging import (  # noqa: E402  (a sibling file: the script's folder is on sys.path)
    PALETTES,
    UPLOAD_SUFFIXES,
    UploadError,
    bicubic_x4,
    bit_depth,
    colorbar,
    colorize,
    is_radiometric,
    kept_metadata,
    open_upload,
    quantize,
    readout,
    save_result,
    to_unit,
    unit_label,
    values_x4,
)

try:
    from video_clip import MAX_CLIP_FRAMES, MAX_CLIP_PIXELS, upscale_clip  # noqa: E402
except ImportError:  # no difiisr_dwt package or no PyAV: the app has no video section
    upscale_clip = None

try:
    from difiisr_dwt import DEFAULT_MODEL
    from difiisr_dwt.errors import DifIISRError
    from difiisr_dwt.loading import device_argument, load_pipeline

    #: What loading a model it cannot use raises (a missing folder, an unknown repo, code not trusted).
    LOAD_ERRORS: tuple[type[Exception], ...] = (DifIISRError, OSError, ValueError)
except ImportError:  # a Space ships this folder without the difiisr_dwt package
    DEFAULT_MODEL = load_pipeline = None
    device_argument = str
    LOAD_ERRORS = (OSError, ValueError)

#: Where a Space names its model (a Hub repo id, set in the Space's settings), used when ``--model`` is not
#: given; a checkout with the package falls back to its embedded model, a Space without it has no default.
MODEL_ENV = "DIFIISR_MODEL"
#: 640x512, the largest common thermal sensor (x4: 2560x2048 out).
MAX_INPUT_PIXELS = 640 * 512
EXAMPLE_DIRS = (HERE / "images", HERE.parent / "images")  # in a Space, or in this repository

logger = logging.getLogger("difiisr_dwt.gradio_app")


@dataclass
class Upscaled:
    """One upscaled upload.

    Args:
        result: full-resolution result in the input's mode (``L``, ``RGB`` or 16-bit ``I;16``).
        result_u8, bicubic_u8: `(4h, 4w, C)` uint8 display arrays (``C`` 1 or 3), same grey scale.
        info: one line for the user: sizes, bit depth, steps, time, device.
        thermal: for a radiometric input, its values in its units: ``lr`` (input), ``before`` (bicubic x4),
            ``after`` (result), with ``unit`` and the ``value_range`` the model used; else ``None``.
    """

    result: PIL.Image.Image
    result_u8: np.ndarray
    bicubic_u8: np.ndarray
    info: str
    thermal: dict | None = None


def load(model: str | None, device: str | None = None, trust_remote_code: bool = False):
    """The pipeline on ``device`` (the GPU when present), with its console progress bar off.

    With the ``difiisr_dwt`` package the model loads into its classes; the model folder's own code files
    run only with ``trust_remote_code``. Without the package (a Space) they are the only code there is:
    they run for the Space's own model (``$DIFIISR_MODEL``, chosen by whoever deploys the Space) and,
    for any other model, only with ``trust_remote_code``.

    Raises:
        UploadError: no ``model``, no ``$DIFIISR_MODEL`` and no package with its embedded model.
    """
    space_model = os.environ.get(MODEL_ENV) or None
    model = model or space_model or DEFAULT_MODEL
    if model is None:
        raise UploadError(f"No model: pass --model PATH_OR_REPO, or set {MODEL_ENV} to the Space's model repo id "
                          "(in the Space's settings).")
    if load_pipeline is not None:
        pipe = load_pipeline(model, device, trust_remote_code=trust_remote_code)
    else:
        from diffusers import DiffusionPipeline

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = DiffusionPipeline.from_pretrained(model, trust_remote_code=trust_remote_code or model == space_model)
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _checked_number(value, name: str, low: float, high: float, whole: bool = False) -> float:
    """A setting as a number within [low, high]: components send numbers, API clients may send numeric
    strings ("3", "0.5"); both are taken the same way for every setting."""
    try:
        number = float(value)
        ok = low <= number <= high and (number.is_integer() or not whole)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        kind = "a whole number" if whole else "a number"
        raise UploadError(f"{name} must be {kind} in [{low}, {high}], got {value!r}.")
    return number


def _checked_int(value, name: str, low: int, high: int) -> int:
    """Sliders and API clients may send floats; accept integral values within [low, high] only."""
    return int(_checked_number(value, name, low, high, whole=True))


def call_default(pipe, name: str):
    """The default of ``pipe.__call__``'s argument ``name`` (the sliders start where the pipeline does)."""
    return inspect.signature(pipe.__call__).parameters[name].default


def upscale_file(
    pipe, path: str, steps: int, seed: int, tile_size: int, max_pixels: int = MAX_INPUT_PIXELS, on_step=None,
    noise_scale: float | None = None, value_range: tuple[float, float] | None = None,
) -> Upscaled:
    """Upscale one uploaded file x4.

    Args:
        pipe: a loaded ``DifIISRDWTPipeline``.
        path: the upload (PNG / JPEG / TIFF).
        steps: sampling steps, 1..T of the model's scheduler.
        seed: seed of the sampling noise, 0..2**32-1 (the same seed gives the same result).
        tile_size: LR pixels per diffusion tile, 0 for the whole image at once.
        max_pixels: largest accepted input (width x height).
        on_step: ``fn(done, total)`` after every sampling step (progress).
        noise_scale: the fidelity-realism knob in [0, 1] (0: most faithful); ``None``: the pipeline's default.
        value_range: ``(low, high)`` in the input's units mapped to the model's input (the pipeline's
            ``value_range``); ``None``: a 16-bit or float input by its own min and max.

    Raises:
        UploadError: a bad upload or setting. ``ValueError`` from the pipeline: an input it rejects.
    """
    steps = _checked_int(steps, "Steps", 1, pipe.scheduler.config.num_train_timesteps)
    seed = _checked_int(seed, "Seed", 0, 2**32 - 1)
    tile_size = _checked_int(tile_size, "Tile size", 0, 4096)
    if noise_scale is None:
        noise_scale = call_default(pipe, "noise_scale")
    noise_scale = _checked_number(noise_scale, "Detail (noise scale)", 0, 1)
    value_range = checked_range(value_range)
    image = open_upload(path, max_pixels)
    if tile_size:  # one request at a time (concurrency_limit=1): the tiling state is this call's
        pipe.enable_unet_tiling(tile_size=tile_size, tile_overlap=min(16, tile_size // 4))
    else:
        pipe.disable_unet_tiling()

    def callback(pipeline, i, t, callback_kwargs):
        if on_step is not None:
            on_step(i + 1, steps)
        return {}

    start = time.perf_counter()
    output = pipe(
        image,
        num_inference_steps=steps,
        noise_scale=float(noise_scale),
        generator=torch.Generator("cpu").manual_seed(seed),  # CPU generator: the same noise on any device
        callback_on_step_end=callback,
        value_range=value_range,
    )
    seconds = time.perf_counter() - start
    result, value_range = output.images[0], output.value_ranges[0]
    # the download keeps the upload's ICC profile, EXIF and physical size (DPI x4)
    result.info.update(kept_metadata(image, scale=result.width / image.width))
    bicubic = bicubic_x4(to_unit(image, value_range), pipe.upscale_factor)
    info = (
        f"{Path(path).name}: {image.width}x{image.height} {bit_depth(image)}-bit {image.mode} -> "
        f"{result.width}x{result.height} {bit_depth(result)}-bit {result.mode}; {steps} steps, detail {noise_scale:g}, "
        f"seed {seed}, "
        f"{seconds:.1f} s on {pipe.device.type}"
    )
    thermal = None
    if is_radiometric(image):
        thermal = {"lr": np.asarray(image, np.float64), "before": values_x4(image, pipe.upscale_factor),
                   "after": np.asarray(result, np.float64), "unit": unit_label(image), "value_range": value_range}
    return Upscaled(result, quantize(to_unit(result, value_range)), quantize(bicubic), info, thermal)


def checked_range(value_range) -> tuple[float, float] | None:
    """``(low, high)`` from the two range fields: both empty gives ``None`` (each image by its own range).

    Raises:
        UploadError: one field empty, or not ``low < high``.
    """
    if value_range is None or all(v is None or str(v).strip() == "" for v in value_range):
        return None
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise UploadError(
            f"Range: give both low and high (numbers in the input's units), got {value_range!r}."
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise UploadError(f"Range: low must be below high, got {low:g} and {high:g}.")
    return (low, high)


def thermal_view(thermal: dict | None, palette: str) -> tuple:
    """Colour bar, clickable result and first readout line of a radiometric result (hidden otherwise)."""
    if thermal is None:
        return (gr.update(visible=False, value=None), gr.update(visible=False, value=None),
                "Radiometric inputs (16-bit counts, float temperatures) get a colour bar and a readout here.")
    low, high = thermal["value_range"]
    after = np.clip((thermal["after"] - low) / (high - low), 0, 1)[:, :, None]
    return (gr.update(visible=True, value=colorbar(low, high, thermal["unit"], palette)),
            gr.update(visible=True, value=colorize(quantize(after), palette)),
            "Click the result to read the value at that point, before (bicubic) and after.")


def read_point(thermal: dict | None, evt: gr.SelectData) -> str:
    """The readout line at the clicked point of the result image."""
    if thermal is None or evt is None or evt.index is None:
        return "Upscale a radiometric image first."
    x, y = (int(v) for v in evt.index)
    return readout(x, y, thermal["lr"], thermal["before"], thermal["after"], thermal["unit"])


def find_examples() -> tuple[list[str], str]:
    """Example image paths and their attribution text (``images/ATTRIBUTION.md``), from the first folder found."""
    for folder in EXAMPLE_DIRS:
        paths = sorted(str(p) for p in folder.glob("*") if p.suffix.lower() in UPLOAD_SUFFIXES)
        if paths:
            attribution = folder / "ATTRIBUTION.md"
            return paths, attribution.read_text(encoding="utf-8") if attribution.is_file() else ""
    return [], ""


def as_user_error(error: Exception) -> gr.Error:
    """A readable ``gr.Error`` for any failure (the message is HTML: escape what came from the user)."""
    if isinstance(error, ValueError):  # UploadError, or an input the pipeline rejects
        message = html.escape(str(error), quote=False)
        return gr.Error(message, title="Cannot upscale this input", print_exception=False)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return gr.Error("Out of GPU memory; set a tile size (e.g. 128) and try again.", title="Out of memory")
    logger.exception("Upscaling failed")
    message = html.escape(f"Upscaling failed: {type(error).__name__}: {error}", quote=False)
    return gr.Error(message, title="Upscaling failed")


def build_demo(pipe, max_pixels: int = MAX_INPUT_PIXELS, output_root: Path | None = None) -> gr.Blocks:
    """The Blocks app around a loaded pipeline; ``upscale`` is also its API endpoint (``/upscale``)."""
    output_root = output_root or Path(tempfile.gettempdir()) / "difiisr_dwt_gradio"
    max_steps = pipe.scheduler.config.num_train_timesteps
    examples, attribution = find_examples()

    def run(path, steps, seed, tile_size, noise_scale, palette, range_low=None, range_high=None,
            progress=gr.Progress()):
        try:
            progress(0, desc="Sampling")
            out = upscale_file(
                pipe, path, steps, seed, tile_size, max_pixels,
                on_step=lambda done, total: progress((done, total), desc="Sampling", unit="steps"),
                noise_scale=noise_scale, value_range=(range_low, range_high),
            )
            download = save_result(out.result, Path(path).name, output_root)
            pair = (colorize(out.bicubic_u8, palette), colorize(out.result_u8, palette))
        except Exception as error:  # every failure becomes a readable message, never a stack trace
            raise as_user_error(error) from error
        return pair, str(download), out.info, (out.bicubic_u8, out.result_u8), out.thermal

    def recolor(shown, palette):
        if shown is None:
            return gr.skip()
        try:
            return tuple(colorize(image, palette) for image in shown)
        except Exception as error:
            raise as_user_error(error) from error

    with gr.Blocks(title="DifIISR-DWT: x4 infrared super-resolution", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# DifIISR-DWT: x4 infrared super-resolution\n"
            "Residual-shifting diffusion in Haar-wavelet space with a VQ-f4 decoder. Upload a thermal image "
            f"(PNG / JPEG / TIFF, 8- or 16-bit, grayscale or RGB, at most {max_pixels:,} pixels). "
            "Drag the slider to compare bicubic (left) with the result (right)."
        )
        shown = gr.State(None, time_to_live=3600)  # uint8 (bicubic, result): palette changes need no rerun
        thermal = gr.State(None, time_to_live=3600)  # a radiometric result's values, for the readout
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Infrared image", file_types=list(UPLOAD_SUFFIXES),
                                 elem_id="upload")
                steps = gr.Slider(1, max_steps, value=call_default(pipe, "num_inference_steps"), step=1,
                                  label="Sampling steps", elem_id="steps")
                noise_scale = gr.Slider(0, 1, value=call_default(pipe, "noise_scale"), step=0.1,
                                        label="Detail (0 = most faithful, 1 = most invented detail)",
                                        elem_id="noise_scale")
                seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=2**32 - 1)
                tile_size = gr.Slider(0, 512, value=0, step=32, label="Tile size (LR pixels; 0 = whole image)")
                palette = gr.Dropdown(list(PALETTES), value=PALETTES[0], label="Display palette (display only)",
                                      elem_id="palette")
                with gr.Row():  # the fixed intensity mapping (the pipeline's value_range, the CLI's --range)
                    # text, not gr.Number: the browser sends an empty number field as 0, not as "no range"
                    range_low = gr.Textbox("", label="Range low (input units; empty: the image's own)",
                                           elem_id="range_low")
                    range_high = gr.Textbox("", label="Range high", elem_id="range_high")
                button = gr.Button("Upscale x4", variant="primary", elem_id="run")
                if examples:
                    gr.Examples([[p] for p in examples], inputs=[upload], label="Example IR frames")
                    if attribution:
                        with gr.Accordion("Example image sources", open=False):
                            gr.Markdown(attribution)
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Bicubic | DifIISR-DWT", format="png", elem_id="result",
                                        interactive=False)
                download = gr.File(label="Full-resolution result (input bit depth)", interactive=False,
                                   elem_id="download")
                info = gr.Markdown(elem_id="info")
                with gr.Accordion("Temperature readout (radiometric inputs)", open=True):
                    bar = gr.Image(label="Colour bar (input units)", visible=False, interactive=False,
                                   elem_id="colorbar")
                    probe = gr.Image(label="Result: click a point", visible=False, interactive=False,
                                     elem_id="probe")
                    point = gr.Markdown(elem_id="readout")
        button.click(run, [upload, steps, seed, tile_size, noise_scale, palette, range_low, range_high],
                     [slider, download, info, shown, thermal], api_name="upscale", concurrency_limit=1
                     ).then(thermal_view, [thermal, palette], [bar, probe, point], api_visibility="private")
        palette.change(recolor, [shown, palette], slider, api_visibility="private", show_progress="hidden"
                       ).then(thermal_view, [thermal, palette], [bar, probe, point], api_visibility="private")
        probe.select(read_point, [thermal], point, api_visibility="private")
        if upscale_clip is not None:
            add_video_section(pipe, output_root, steps)
    return demo


def add_video_section(pipe, output_root: Path, steps: gr.Slider) -> None:
    """A short clip in, the x4 clip out (``/upscale_video``); see ``video_clip.py``."""

    def run_clip(path, steps_value, progress=gr.Progress(track_tqdm=True)):
        try:
            steps_value = _checked_int(steps_value, "Steps", 1, pipe.scheduler.config.num_train_timesteps)
            out = upscale_clip(pipe, path, output_root, steps_value)
        except Exception as error:
            raise as_user_error(error) from error
        return str(out.path), out.info

    with gr.Accordion("Short video clip", open=False):
        gr.Markdown(f"A thermal clip (MP4, AVI, MKV, MOV...; at most {MAX_CLIP_FRAMES} frames of "
                    f"{MAX_CLIP_PIXELS:,} pixels) comes back x4 at its frame rate, without flicker: no per-frame "
                    "noise draw, so the added detail moves with the content. Uses the sampling steps above.")
        with gr.Row():
            clip = gr.File(label="Video clip", file_types=[".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"],
                           elem_id="clip")
            clip_out = gr.Video(label="x4 clip (H.264 MP4)", interactive=False, elem_id="clip_result")
        clip_button = gr.Button("Upscale clip x4", elem_id="run_clip")
        clip_info = gr.Markdown(elem_id="clip_info")
        clip_button.click(run_clip, [clip, steps], [clip_out, clip_info], api_name="upscale_video",
                          concurrency_limit=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="pipeline folder or Hub repo id (default: $DIFIISR_MODEL, else the embedded model)")
    parser.add_argument("--device", default=None, type=device_argument,
                        help="cpu, cuda, cuda:1... (default: the GPU when present)")
    parser.add_argument("--trust-remote-code", "--trust_remote_code", action="store_true",
                        help="run the code files inside the --model folder or repo instead of the installed "
                        "difiisr_dwt classes; only for models whose code you trust")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to bind (default 127.0.0.1; a Space sets GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--max-pixels", type=int, default=MAX_INPUT_PIXELS, help="largest input, width x height")
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting at most; more are turned away")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> gr.Blocks:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        pipe = load(args.model, args.device, trust_remote_code=args.trust_remote_code)
    except LOAD_ERRORS as error:  # a model that cannot load is a bad --model: one line, exit 2
        parser.error(str(error))
    demo = build_demo(pipe, args.max_pixels)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size="100mb",
                allowed_paths=[str(d) for d in EXAMPLE_DIRS if d.is_dir()])
    return demo


if __name__ == "__main__":
    main()
