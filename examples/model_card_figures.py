"""The model card's crop figures, made again from the data in ``../shared`` with any model folder.

    python examples/model_card_figures.py --model hub/difiisr-dwt-tiny --shared ../shared --out hub/difiisr-dwt-tiny

Writes two PNGs and prints the numbers the card quotes:

* ``noisy_crops.png``: the noisy-LR protocol of ``difiisr-dwt eval --noisy-lr`` (PIL bicubic /4, then
  Gaussian noise sigma 2 and per-column offsets sigma 1.5 grey levels, per-image seed): for each row a
  128x128 HR crop (shown at 2x, nearest), bicubic x4 of the noisy LR, and the default call on the noisy
  LR (seed 0). Prints each image's whole-frame PSNR_Y (bicubic and ours).
* ``flirpy_crops.png``: the real frames of ``data/ir/flirpy`` (no ground truth): a 160x128 LR crop (x
  240..400, y 200..328) of each, as LR (nearest x4), bicubic x4, the exact fidelity step
  (``input_noise_level=0``) and the estimated one (``input_noise_level=None``), each shown on the crop's
  own range. Prints :func:`difiisr_dwt.metrics.high_frequency_rms` of every column in the input's units.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from difiisr_dwt import evaluation as ev
from difiisr_dwt.io import read_image, save_image_atomic
from difiisr_dwt.loading import load_pipeline
from difiisr_dwt.metrics import high_frequency_rms, psnr_y
from difiisr_dwt.radiometric import read_radiometric
from difiisr_dwt.radiometric_eval import bicubic_up

# (set folder, file, HR crop box (left, top)): a flat sky / road next to edges, where noise shows
NOISY_ROWS = (("tno", "01.png", (320, 96)), ("tno", "14.png", (256, 256)), ("roadscene", "FLIR_08954.png", (256, 192)))
NOISY_CROP = 128
NOISY_ZOOM = 2
FLIRPY_BOX = (slice(200, 328), slice(240, 400))
LABEL_HEIGHT = 14


def _grey(array: np.ndarray, low: float | None = None, high: float | None = None) -> PIL.Image.Image:
    """An 8-bit tile of a 2-D array, stretched from ``low``..``high`` (default: its own min..max)."""
    array = np.asarray(array, dtype=np.float64)
    low = array.min() if low is None else low
    high = array.max() if high is None else high
    scaled = (array - low) / max(high - low, 1e-9) * 255
    return PIL.Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")


def _grid(rows: list[list[PIL.Image.Image]], labels: list[str]) -> PIL.Image.Image:
    width, height = rows[0][0].size
    sheet = PIL.Image.new("L", (width * len(labels), LABEL_HEIGHT + height * len(rows)), 255)
    draw = PIL.ImageDraw.Draw(sheet)
    for column, label in enumerate(labels):
        draw.text((column * width + 3, 1), label, fill=0)
    for row, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            sheet.paste(tile, (column * width, LABEL_HEIGHT + row * height))
    return sheet


def noisy_crops(pipe, shared: Path) -> PIL.Image.Image:
    noise = ev.SensorNoise()
    rows = []
    for folder, name, (left, top) in NOISY_ROWS:
        hr = ev.modcrop(ev.load_8bit(shared / "data/ir" / folder / name)).convert("L")
        lr = noise(ev.bicubic_down(hr), name)
        bicubic = ev.bicubic_up(lr)
        ours = pipe(lr, generator=torch.Generator().manual_seed(0)).images[0].convert("L")
        box = (left, top, left + NOISY_CROP, top + NOISY_CROP)
        hr_rgb = ev.to_rgb_array(hr)
        print(f"noisy {folder}/{name}: PSNR_Y whole image bicubic {psnr_y(ev.to_rgb_array(bicubic), hr_rgb):.2f} dB, "
              f"ours {psnr_y(ev.to_rgb_array(ours), hr_rgb):.2f} dB; crop {box}")
        size = (NOISY_CROP * NOISY_ZOOM,) * 2  # nearest zoom: the grain is a few pixels wide
        rows.append([image.crop(box).resize(size, PIL.Image.NEAREST) for image in (hr, bicubic, ours)])
    return _grid(rows, ["HR", "bicubic (noisy LR)", "ours (default)"])


def flirpy_crops(pipe, shared: Path) -> PIL.Image.Image:
    rows = []
    for name in ("example_radiometric.tiff", "baboons.jpg"):
        path = shared / "data/ir/flirpy" / name
        if path.suffix == ".tiff":
            lr = read_radiometric(path).frames[0][FLIRPY_BOX]
        else:
            lr = np.asarray(read_image(path).convert("L"))[FLIRPY_BOX]
        lr_float = lr.astype(np.float64)
        columns = {"LR (nearest x4)": np.kron(lr_float, np.ones((4, 4))), "bicubic x4": bicubic_up(lr_float)}
        for label, level in (("exact (0)", 0.0), ("estimate (None)", None)):
            # a PIL output comes back in the input's type and units (counts for the 16-bit frame)
            out = pipe(PIL.Image.fromarray(lr), input_noise_level=level, generator=torch.Generator().manual_seed(0))
            columns[label] = np.asarray(out.images[0], dtype=np.float64)
        rms = ", ".join(f"{label} {high_frequency_rms(array):.2f}" for label, array in columns.items())
        print(f"flirpy {name} (span {lr_float.max() - lr_float.min():.0f}): high-frequency RMS {rms}")
        low, high = lr_float.min(), lr_float.max()
        rows.append([_grey(array, low, high) for array in columns.values()])
    return _grid(rows, list(columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder or repo id (default: the embedded model)")
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the two PNGs")
    args = parser.parse_args()
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_image_atomic(noisy_crops(pipe, args.shared), args.out / "noisy_crops.png")
    save_image_atomic(flirpy_crops(pipe, args.shared), args.out / "flirpy_crops.png")


if __name__ == "__main__":
    main()
