"""The model card (``README.md``) of a release: Hub metadata, usage, training, metrics, limitations.

What a card says beyond the pipeline itself comes from :class:`ReleaseInfo`, filled from a small
JSON file (``export --card-meta``) and command-line flags; metrics come from ``difiisr-dwt eval
--json`` files, one per evaluation set.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from difiisr_dwt.errors import UsageError
from difiisr_dwt.evaluation import METRICS as METRIC_INFO

DEFAULT_TAGS = ["super-resolution", "image-super-resolution", "infrared", "thermal", "diffusion", "resshift",
                "wavelet", "difiisr-dwt"]
# ``eval --json``: method key -> row label, in table order.
# row order of the tables; ``back_projection`` is ``eval --back-projection`` (classical, no model)
METHODS = {
    "bicubic": "Bicubic x4",
    "back_projection": "Back-projection (10 rounds from bicubic, no model)",
    "model": "DifIISR-DWT (this model)",
    "sr": "SR outputs",
}
# metric key -> (column header, format, higher is better), from the one definition in evaluation.METRICS
METRICS = {key: (info.heading, info.fmt, info.higher_is_better) for key, info in METRIC_INFO.items()}
EVAL_PROTOCOL = (
    "x4; PSNR and SSIM on the BasicSR Y channel, LPIPS (AlexNet and VGG) on RGB in [0, 1]; under each table, "
    "the images, how their LR was made (the DifIISR / M3FD protocol: PIL bicubic downsampling of the HR) and "
    "the model's settings, as `difiisr-dwt eval --json` recorded them."
)


class ModelCardError(UsageError):
    """Release metadata or an evaluation file that cannot go into a model card."""


@dataclasses.dataclass
class ReleaseInfo:
    """What a model card says beyond the pipeline itself; every field is optional.

    The JSON file of ``export --card-meta`` holds these keys (``eval`` maps a label to an
    ``eval --json`` file, relative to the JSON file).
    """

    model_id: str | None = None  # what the usage snippets load: a Hub repo id or a folder
    title: str | None = None
    summary: str | None = None  # a paragraph under the title
    datasets: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)  # added to DEFAULT_TAGS
    base_model: str | None = None  # e.g. the repo whose VQ decoder was reused
    code_url: str | None = None  # the source repository
    training_data: str | None = None  # markdown
    train_commands: list[str] = dataclasses.field(default_factory=list)
    steps_note: str | None = None  # e.g. steps and wall time of each training stage
    cpu_time: str | None = None  # e.g. "7.1 s per 160x128 LR image at 15 steps, 2 CPU threads"
    eval_note: str | None = None  # replaces the default protocol sentence
    limitations: list[str] = dataclasses.field(default_factory=list)  # added to the default ones
    extra: str | None = None  # a markdown section appended before the citations
    # label -> eval JSON path, or a list of them whose methods are merged (e.g. the model's and a baseline's)
    eval: dict[str, str | list[str]] = dataclasses.field(default_factory=dict)
    method_names: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. {"sr": "Real-ESRGAN x4plus"}
    images: list[str] = dataclasses.field(default_factory=list)  # files copied into the release (plots)

    @classmethod
    def from_json(cls, path: str | Path) -> ReleaseInfo:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelCardError(f"{path}: not a readable JSON file ({error})") from error
        if not isinstance(data, dict):
            raise ModelCardError(f"{path}: expected a JSON object of release metadata")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ModelCardError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
        for key in ("datasets", "tags", "train_commands", "limitations", "images"):
            if key in data and not (isinstance(data[key], list) and all(isinstance(v, str) for v in data[key])):
                raise ModelCardError(f"{path}: {key!r} must be a list of strings")
        if "eval" in data:
            if not isinstance(data["eval"], dict):
                raise ModelCardError(f"{path}: 'eval' must map a label to an eval --json file")
            data["eval"] = {
                label: [str(path.parent / f) for f in files] if isinstance(files, list) else str(path.parent / files)
                for label, files in data["eval"].items()
            }
        if "images" in data:
            data["images"] = [str(path.parent / file) for file in data["images"]]
        return cls(**data)


def load_eval_json(path: str | Path | list[str | Path]) -> dict[str, dict]:
    """The ``{method: {"mean": {metric: value}, "images": ..., "protocol": ...}}`` objects of an ``eval --json``
    file; ``protocol`` is its record of how the method was measured (``None`` in files of older versions).

    A list of files merges their methods, the first file's kept where two have the same method (the
    model's run and a baseline's ``--sr`` run of the same images give one table).

    Metrics left out of the evaluation (``eval --metrics``) become empty cells; ``null`` means (PSNR of
    identical images) are shown as not finite.

    Raises:
        ModelCardError: unreadable file, no known method, a method without ``mean``, or no known metric.
    """
    if isinstance(path, (list, tuple)):
        merged: dict[str, dict] = {}
        for file in path:
            for method, result in load_eval_json(file).items():
                merged.setdefault(method, result)
        return {key: merged[key] for key in METHODS if key in merged}
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelCardError(f"{path}: not a readable eval JSON file ({error})") from error
    methods = {key: data[key] for key in METHODS if isinstance(data, dict) and key in data}
    if not methods:
        raise ModelCardError(f"{path}: no evaluation results; expected one of the keys {list(METHODS)}")
    for method, result in methods.items():
        mean = result.get("mean") if isinstance(result, dict) else None
        if not isinstance(mean, dict):
            raise ModelCardError(f"{path}: {method!r} has no 'mean' object")
        bad = [k for k in METRICS if k in mean and mean[k] is not None and not isinstance(mean[k], (int, float))]
        if bad:
            raise ModelCardError(f"{path}: {method!r} mean has non-numeric value(s) for {bad}")
    if not any(key in result["mean"] for result in methods.values() for key in METRICS):
        raise ModelCardError(f"{path}: no known metric; expected some of {list(METRICS)}")
    return {method: {**result, "protocol": result.get("protocol") if isinstance(result.get("protocol"), dict)
                     else None} for method, result in methods.items()}


def describe_protocol(protocol: dict | None) -> str:
    """One sentence of what an ``eval --json`` protocol record says about its data: the images and how their LR
    was made (or that the file records none)."""
    if not protocol:
        return "the evaluation file records no protocol (written by an older `difiisr-dwt eval`)."
    count = protocol.get("images")
    text = f"{count} HR image{'' if count == 1 else 's'} of `{Path(protocol.get('hr') or '?').name}`"
    if protocol.get("file_list"):
        text += f" listed in `{Path(protocol['file_list']).name}`"
    if protocol.get("limit"):
        text += f" (the first {protocol['limit']} of {protocol.get('images_available', '?')}: `--limit`)"
    if protocol.get("lr") == "folder":
        return text + f"; LR from the folder `{Path(protocol.get('lr_folder') or '?').name}`."
    text += "; LR = PIL bicubic /4 of the HR cropped to a multiple of 4"
    noise = protocol.get("noise")
    if noise:
        text += (f", then Gaussian noise (sigma {noise['sigma']:g} grey levels) and per-column offsets (sigma "
                 f"{noise['column_sigma']:g}), numpy seed {noise['seed']}, rounded to 8 bit")
    return text + "."


def describe_method(protocol: dict | None, method: str) -> str | None:
    """What the protocol record says of one row beyond the data: the model's settings, or where ``--sr``
    results were read; ``None`` when it says nothing more."""
    if not protocol:
        return None
    if method == "sr" and protocol.get("sr"):
        return f"read from `{Path(protocol['sr']).name}`."
    if method == "model" and protocol.get("model"):
        call = ", ".join(f"`{key}={value!r}`" for key, value in (protocol.get("call") or {}).items())
        return f"seed {protocol.get('seed')}, {protocol.get('dtype')}" + (f", {call}" if call else "") + "."
    return None


def _cell(value, fmt: str, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–" if value is None else "not finite"
    return ("+" if sign and value >= 0 else "") + fmt.format(value)


def metrics_table(methods: dict[str, dict], names: dict[str, str] | None = None) -> str:
    """A markdown table, one row per method (row labels from ``names``, else :data:`METHODS`), plus
    the difference to bicubic when both are there."""
    names = {**METHODS, **(names or {})}
    columns = [key for key in METRICS if any(key in result["mean"] for result in methods.values())]
    header = "| method | " + " | ".join(METRICS[key][0] for key in columns) + " | images |"
    lines = [header, "|---" * (len(columns) + 2) + "|"]
    for method, result in methods.items():
        cells = [_cell(result["mean"].get(key), METRICS[key][1]) for key in columns]
        images = result.get("images")
        count = str(len(images)) if isinstance(images, (list, dict)) else "–"
        lines.append(f"| {names[method]} | " + " | ".join(cells) + f" | {count} |")
    ours = next((m for m in ("model", "sr") if m in methods), None)
    if ours and "bicubic" in methods:
        cells = []
        for key in columns:
            a, b = methods[ours]["mean"].get(key), methods["bicubic"]["mean"].get(key)
            cells.append(_cell(None if a is None or b is None else a - b, METRICS[key][1], sign=True))
        lines.append("| difference to bicubic | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def _component_table(pipe, folder: Path) -> str:
    def params(module) -> str:
        count = sum(p.numel() for p in module.parameters())
        return f"{count / 1e6:.2f}M" if count >= 100_000 else f"{count:,}"

    vq = pipe.vqvae
    rows = [
        ("`dwt_encoder`", "`DWTEncoder` (this repo)",
         f"2-level Haar DWT ({pipe.dwt_encoder.out_channels} channels at 1/4 size, no weights) + latent "
         f"adapter ({params(pipe.dwt_encoder)} parameters incl. the detail downsampler)"),
        ("`unet`", "diffusers `UNet2DModel`",
         f"{params(pipe.unet)} parameters, {pipe.unet.config.in_channels} -> {pipe.unet.config.out_channels} "
         f"channels, widths {list(pipe.unet.config.block_out_channels)}; predicts the clean VQ latent"),
        ("`vqvae`", "diffusers `VQModel`",
         f"VQ-f4, decoder {params(vq.decoder)} parameters (+ post-quant conv); codebook "
         f"{vq.config.num_vq_embeddings} x {vq.config.vq_embed_dim}; the encoder ({params(vq.encoder)}) is "
         "only used in training"),
        ("`scheduler`", "`ResShiftScheduler` (this repo)",
         f"T = {pipe.scheduler.config.num_train_timesteps}, kappa = {pipe.scheduler.config.kappa}, "
         f"p = {pipe.scheduler.config.power}"),
    ]
    weights = sum(f.stat().st_size for f in folder.rglob("*.safetensors") if len(f.name.split(".")) == 2)
    lines = ["| component | class | what it is |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append("")
    snap = ("snaps latents to the VQ codebook" if pipe.config.quantize_decode
            else "decodes latents without snapping them to the VQ codebook")
    lines.append(f"Weights: {weights / 2**20:.1f} MiB of safetensors (float32). By default the pipeline {snap} "
                 f"(`quantize_decode = {pipe.config.quantize_decode}`; override per call with `quantize=`).")
    return "\n".join(lines)


def render_model_card(pipe, folder: str | Path, info: ReleaseInfo, evaluations: dict[str, dict],
                      variant: str | None = None) -> ModelCard:
    """The model card of the release in ``folder`` (already holding its weights) for ``pipe``.

    Args:
        pipe: the exported ``DifIISRDWTPipeline``.
        folder: the release folder (for weight sizes).
        info: release metadata.
        evaluations: label -> methods from :func:`load_eval_json`.
        variant: ``"fp16"`` when the release has fp16 variant weights too.
    """
    folder = Path(folder)
    model_id = info.model_id or folder.name
    title = info.title or model_id.rstrip("/").split("/")[-1]
    steps = pipe.scheduler.config.num_train_timesteps
    data = ModelCardData(
        library_name="diffusers", pipeline_tag="image-to-image", license="apache-2.0",
        tags=list(dict.fromkeys(DEFAULT_TAGS + info.tags)), datasets=info.datasets or None,
        base_model=info.base_model,
    )
    parts = [f"---\n{data.to_yaml()}\n---", f"# {title}"]
    parts.append(
        "x4 super-resolution of infrared (thermal) images with a diffusers pipeline: ResShift-style residual "
        f"shifting (trained on {steps} steps) whose diffusion state lives in the wavelet space of a "
        "parameter-free 2-level Haar DWT encoder. The UNet predicts the clean VQ-f4 latent, a small adapter "
        "carries it back into wavelet space for the sampler, and a VQ-f4 decoder turns the last prediction into "
        "pixels. Grayscale in gives grayscale out; 16-bit in gives 16-bit out."
    )
    if info.summary:
        parts.append(info.summary)
    parts.append(_component_table(pipe, folder))
    code = sorted(type(pipe).code_files({}))  # the pipeline file and its sibling files (folder root)
    siblings = [name for name in code if name != os.path.basename(inspect.getfile(type(pipe)))]
    windows = {"unet": pipe.config.get("unet_attention_window"), "decoder": pipe.config.get("decoder_attention_window")}
    parts.append(_usage(model_id, steps, info, variant, siblings, windows))
    parts.append(_training(info))
    parts.append(_evaluation(evaluations, info, pipe))
    parts.append(_limitations(info))
    if info.extra:
        parts.append(info.extra.strip())
    parts.append(CITATIONS)
    return ModelCard("\n\n".join(parts) + "\n")


def _usage(model_id: str, steps: int, info: ReleaseInfo, variant: str | None, siblings: list[str],
           windows: dict[str, int | None]) -> str:
    install = f'pip install "difiisr-dwt @ git+{info.code_url}"' if info.code_url else "pip install -e .  # in a clone"
    lines = [
        "## Use it",
        "",
        "### Python (diffusers)",
        "",
        "```python",
        "import torch",
        "from diffusers import DiffusionPipeline",
        "from PIL import Image",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{model_id}", trust_remote_code=True)',
        'lr = Image.open("thermal.png")  # L, RGB or I;16',
        "sr = pipe(lr, generator=torch.Generator().manual_seed(0)).images[0]  # the default call",
        'sr.save("thermal_x4.png")',
        "```",
        "",
        "`trust_remote_code=True` runs the code files of this repository: the pipeline (`pipeline_difiisr_dwt.py` "
        f"with its sibling files {_and_list([f'`{name}`' for name in siblings])}), "
        "the DWT encoder (`dwt_encoder/modeling_dwt_encoder.py`) and the scheduler "
        "(`scheduler/scheduler_resshift.py`); read them first, or install `difiisr-dwt` and load with "
        f'`difiisr_dwt.loading.load_pipeline("{model_id}")`, which uses the installed classes and runs no code '
        f"from the model. `num_inference_steps` goes from 1 to {steps}; `noise_scale` (0 to 1) draws more of the "
        "posterior's noise; `lr_consistency=True` (default) back-projects the output onto its input; "
        "`pipe.enable_unet_tiling(64)` bounds memory on large images (tiles share GroupNorm statistics)"
        + "".join(f"; the {'UNet' if model == 'unet' else 'VQ decoder'}'s self-attention runs within windows of "
                  f"{window}x{window} LR pixels (`{model}_attention_window` in `model_index.json`: cost linear in the "
                  f"image's area; `pipe.disable_{model}_window_attention()` for global attention)"
                  for model, window in windows.items() if window) + ".",
    ]
    if variant:
        lines += [
            "",
            f"On a GPU, the {variant} weights halve the download and the memory:",
            "",
            "```python",
            f'pipe = DiffusionPipeline.from_pretrained("{model_id}", trust_remote_code=True, variant="{variant}",',
            "                                         torch_dtype=torch.float16).to(\"cuda\")",
            "```",
        ]
    lines += [
        "",
        "### Command line",
        "",
        "```bash",
        install,
        f"difiisr-dwt upscale thermal.png -o out/ --model {model_id}",
        f"difiisr-dwt eval --hr HR_DIR --lr LR_DIR --model {model_id} --json eval.json",
        "```",
        "",
        "### Train or fine-tune with accelerate",
        "",
        "`train_accelerate.py` (source repository) trains the three stages on 1..N GPUs or CPU processes:",
        "",
        "```bash",
        "accelerate launch train_accelerate.py --stage autoencoder --preset tiny --train_data_dir IR_IMAGES "
        "--output_dir out/ae",
        "accelerate launch train_accelerate.py --stage adapter --preset tiny --train_data_dir IR_IMAGES "
        "--vqvae_model_name_or_path out/ae/vqvae --output_dir out/adapter",
        "accelerate launch train_accelerate.py --stage diffusion --preset tiny --train_data_dir IR_IMAGES "
        "--vqvae_model_name_or_path out/ae/vqvae --dwt_encoder_model_name_or_path out/adapter/dwt_encoder "
        "--output_dir out/diffusion   # -> out/diffusion/pipeline",
        "difiisr-dwt export out/diffusion/pipeline --out my-release",
        "```",
    ]
    return "\n".join(lines)


def _training(info: ReleaseInfo) -> str:
    lines = ["## Training"]
    if info.training_data:
        lines += ["", info.training_data.strip()]
    if info.train_commands:
        lines += ["", "The commands that trained this model:", "", "```bash", *info.train_commands, "```"]
    if info.steps_note:
        lines += ["", info.steps_note.strip()]
    if len(lines) == 1:
        lines += ["", "Not recorded for this release."]
    return "\n".join(lines)


def _evaluation(evaluations: dict[str, dict], info: ReleaseInfo, pipe) -> str:
    lines = ["## Evaluation", "", info.eval_note or EVAL_PROTOCOL]
    if not evaluations:
        lines += ["", "No evaluation was recorded for this release."]
    fingerprint, names = None, {**METHODS, **info.method_names}
    for label, methods in evaluations.items():
        protocol = (methods.get("model") or {}).get("protocol") or {}
        if protocol.get("model_fingerprint"):
            from difiisr_dwt.loading import pipeline_fingerprint

            fingerprint = fingerprint or pipeline_fingerprint(pipe)
            if protocol["model_fingerprint"] != fingerprint:
                raise ModelCardError(
                    f"{label}: its model row was measured on {protocol.get('model')} ({protocol.get('dtype')}), "
                    "whose weights are not this pipeline's: evaluate the pipeline being exported (difiisr-dwt eval "
                    "--model PIPELINE_DIR --json ...) or leave that file out")
        data: dict[str, list[str]] = {}  # one sentence per evaluation file (a table may merge several)
        for method, result in methods.items():
            data.setdefault(describe_protocol(result.get("protocol")), []).append(names[method])
        notes = ([f"Measured on {text}" for text in data] if len(data) == 1 else
                 [f"- {', '.join(rows)}: {text}" for text, rows in data.items()])
        notes += [f"- {names[method]}: {text}" for method, result in methods.items()
                  if (text := describe_method(result.get("protocol"), method))]
        lines += ["", f"### {label}", "", metrics_table(methods, info.method_names), "", *notes]
    if info.cpu_time:
        lines += ["", f"Speed: {info.cpu_time.strip()}"]
    return "\n".join(lines)


DEFAULT_LIMITATIONS = [
    "x4 only, trained on synthetic LR images (bicubic downsampling unless the training command says "
    "otherwise): real sensor blur, noise and fixed-pattern noise are outside what it has seen.",
    "A generative model: it can invent plausible but false detail. Do not use its output for measurement, "
    "radiometry or as the only evidence in safety-critical decisions.",
    "The model has no notion of temperature: it works on grey levels. A 16-bit or float input is scaled by its "
    "own minimum and maximum (or by a fixed `value_range`, the same mapping for every frame) and the output is "
    "mapped back to the input's units; the fidelity step makes the output's /4 downsampling agree with the "
    "input, but the detail between input pixels is the model's guess, not a measurement.",
    "The VQ-f4 decoder bounds the quality: the output cannot be sharper than what the decoder reconstructs.",
    "Trained and evaluated on the data listed above; other sensors, scenes and resolutions may do worse.",
]


def _limitations(info: ReleaseInfo) -> str:
    return "\n".join(["## Limitations", ""] + [f"- {item}" for item in DEFAULT_LIMITATIONS + info.limitations])


CITATIONS = r"""## Citation

This model follows ResShift's residual shifting and DifIISR's infrared setting, and uses the VQ-f4
autoencoder design of latent diffusion:

```bibtex
@inproceedings{yue2023resshift,
  title     = {ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting},
  author    = {Yue, Zongsheng and Wang, Jianyi and Loy, Chen Change},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2023}
}

@inproceedings{li2025difiisr,
  title     = {DifIISR: A Diffusion Model with Gradient Guidance for Infrared Image Super-Resolution},
  author    = {Li, Xingyuan and Wang, Zirui and Zou, Yang and Chen, Zhixin and Ma, Jun and Jiang, Zhiying
               and Ma, Long and Liu, Jinyuan},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025}
}

@inproceedings{rombach2022ldm,
  title     = {High-Resolution Image Synthesis with Latent Diffusion Models},
  author    = {Rombach, Robin and Blattmann, Andreas and Lorenz, Dominik and Esser, Patrick and Ommer, Bj{\"o}rn},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {10684--10695},
  year      = {2022}
}
```"""


def _and_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)
