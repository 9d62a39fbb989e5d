"""Training data: image folders or ``datasets`` images, random HR crops, and a resumable sampler.

Every crop is decided by a per-sample seed (the sample's position in the global stream), so a run
that resumes at step ``n`` sees exactly the crops an uninterrupted run would have seen, whatever the
number of data-loader workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset, Sampler

from difiisr_dwt.io import IMAGE_SUFFIXES, ImageReadError, read_file_list, read_image

logger = logging.getLogger(__name__)

AUGMENTATIONS = ("none", "flip", "flip_rot90")
INTENSITY_AUGMENTATIONS = ("none", "thermal")


def image_to_array(image: PIL.Image.Image) -> np.ndarray:
    """Any image -> float32 `(H, W, 3)` in [0, 1]: grayscale repeated to 3 equal channels, 16-bit
    images normalised by their own range (thermal sensors rarely use the full 16 bits)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = ((array - low) / max(high - low, 1e-12)).astype(np.float32)
    else:
        converted = image.convert("L" if image.mode in ("L", "LA", "1") else "RGB")
        array = np.asarray(converted, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array


def list_image_files(root: str | os.PathLike, file_list: str | os.PathLike | None = None,
                     flag: str = "--train_data_dir") -> list[Path]:
    """The image files of ``root`` (sorted), or those named in ``file_list`` (relative to ``root``); ``flag``
    names ``root``'s option in the errors."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{flag} {root}: no such folder.")
    if file_list is not None:
        paths = [root / name for name in read_file_list(file_list)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} files of {file_list} are missing, e.g. {missing[:3]}.")
        return paths
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{flag} {root}: no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return paths


def augment_params(seed: int, augment: str) -> tuple[bool, int]:
    """(horizontal flip, number of 90-degree rotations) for one sample."""
    rng = np.random.default_rng([seed, 1])
    flip = augment != "none" and bool(rng.integers(2))
    rotations = int(rng.integers(4)) if augment == "flip_rot90" else 0
    return flip, rotations


def intensity_params(seed: int, kind: str) -> tuple[bool, float, float, float] | None:
    """``(invert, gamma, low, high)`` of one sample's grey-level transform, or ``None`` (identity).

    ``"thermal"`` mimics what differs between thermal cameras and their settings: polarity
    (white-hot / black-hot, p = 0.25), the AGC's tone curve (gamma, log-uniform in [0.6, 1.6]) and its
    level and span (the [0, 1] range mapped onto [low, high], 0 <= low < high <= 1, span >= 0.3). A
    third of the samples keep their levels, so the camera's own statistics stay in the mix.
    """
    if kind == "none":
        return None
    rng = np.random.default_rng([seed, 2])
    if rng.random() < 1 / 3:
        return None
    invert = bool(rng.random() < 0.25)
    gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    span = float(rng.uniform(0.3, 1.0))
    low = float(rng.uniform(0.0, 1.0 - span))
    return invert, gamma, low, low + span


def apply_intensity(array: np.ndarray, params: tuple[bool, float, float, float] | None) -> np.ndarray:
    """Apply :func:`intensity_params`' transform to a float `(H, W, C)` array in [0, 1] (pointwise,
    so an HR crop and its paired LR crop stay consistent)."""
    if params is None:
        return array
    invert, gamma, low, high = params
    if invert:
        array = 1.0 - array
    return (low + (high - low) * np.power(array, gamma)).astype(np.float32)


def apply_augment(array: np.ndarray, flip: bool, rotations: int) -> np.ndarray:
    if flip:
        array = array[:, ::-1]
    if rotations:
        array = np.rot90(array, rotations, axes=(0, 1))
    return np.ascontiguousarray(array)


class PairedCropDataset(Dataset):
    """Random HR crops (and aligned LR crops when paired LR images are given).

    Indexed by a *key* from :class:`StreamSampler`: ``key % len(self)`` is the image, the whole key
    seeds that sample's crop and augmentation.

    Args:
        images: a sequence whose items are PIL images or paths (folder files, or a ``datasets`` column).
        resolution: HR crop side in pixels (a multiple of ``scale``).
        scale: the super-resolution factor.
        lr_images: optional paired LR images (same order), each ``scale`` times smaller than its HR.
        augment: ``"none"``, ``"flip"`` or ``"flip_rot90"``.
        intensity_augment: ``"none"`` or ``"thermal"`` (see :func:`intensity_params`).
        names: names for log messages (defaults to the paths).
    """

    def __init__(
        self,
        images: Sequence,
        resolution: int,
        scale: int = 4,
        lr_images: Sequence | None = None,
        augment: str = "flip_rot90",
        names: Sequence[str] | None = None,
        intensity_augment: str = "none",
    ):
        if len(images) == 0:
            raise ValueError("The training set is empty.")
        if resolution <= 0 or resolution % scale:
            raise ValueError(f"--resolution must be a positive multiple of {scale}, got {resolution}.")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}.")
        if intensity_augment not in INTENSITY_AUGMENTATIONS:
            raise ValueError(f"intensity_augment must be one of {INTENSITY_AUGMENTATIONS}, got {intensity_augment!r}.")
        self.intensity_augment = intensity_augment
        if lr_images is not None and len(lr_images) != len(images):
            raise ValueError(f"{len(lr_images)} LR images for {len(images)} HR images.")
        self.images, self.lr_images = images, lr_images
        self.resolution, self.scale, self.augment = resolution, scale, augment
        self.names = list(names) if names is not None else [str(x) if isinstance(x, (str, Path)) else f"#{i}"
                                                            for i, x in enumerate(images)]
        self._cache: dict[tuple[int, bool], np.ndarray] = {}
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, index: int, lr: bool) -> np.ndarray:
        key = (index, lr)
        if key not in self._cache:  # decoded once per worker: PNG decoding would dominate a CPU step
            item = (self.lr_images if lr else self.images)[index]
            image = item if isinstance(item, PIL.Image.Image) else read_image(item)
            array = image_to_array(image)
            self._cache[key] = (np.rint(array * 255).astype(np.uint8) if image.mode in ("L", "RGB")
                                else array)
        array = self._cache[key]
        return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array

    def _crop(self, index: int, seed: int) -> dict[str, torch.Tensor]:
        hr = self._load(index, lr=False)
        lr = self._load(index, lr=True) if self.lr_images is not None else None
        size, scale = self.resolution, self.scale
        if lr is not None:
            if (lr.shape[0], lr.shape[1]) != (hr.shape[0] // scale, hr.shape[1] // scale):
                raise ImageReadError(f"LR size {lr.shape[1]}x{lr.shape[0]} is not HR size {hr.shape[1]}x{hr.shape[0]}"
                                     f" / {scale} (rounded down)")
            hr = hr[: lr.shape[0] * scale, : lr.shape[1] * scale]  # sides not multiples of the scale: as eval does
        if hr.shape[0] < size or hr.shape[1] < size:  # small images: reflect-pad up to one crop
            pad = ((0, max(size - hr.shape[0], 0)), (0, max(size - hr.shape[1], 0)), (0, 0))
            hr = np.pad(hr, pad, mode="reflect")
            if lr is not None:
                lr = np.pad(lr, tuple((a // scale, b // scale + 1) for a, b in pad), mode="reflect")
        rng = np.random.default_rng([seed, 0])
        # crop on the LR grid so that a paired LR crop stays aligned
        top = int(rng.integers((hr.shape[0] - size) // scale + 1)) * scale
        left = int(rng.integers((hr.shape[1] - size) // scale + 1)) * scale
        flip, rotations = augment_params(seed, self.augment)
        out = {"hr": apply_augment(hr[top : top + size, left : left + size], flip, rotations)}
        if lr is not None:
            s = size // scale
            out["lr"] = apply_augment(lr[top // scale : top // scale + s, left // scale : left // scale + s], flip,
                                      rotations)
        levels = intensity_params(seed, self.intensity_augment)
        return {k: torch.from_numpy(apply_intensity(v, levels)).permute(2, 0, 1) * 2 - 1 for k, v in out.items()}

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        """``{"hr": (3, R, R)[, "lr": (3, R/scale, R/scale)]}`` in [-1, 1] for stream key ``key``."""
        index = key % len(self)
        for _ in range(len(self)):
            if index not in self._bad:
                try:
                    return self._crop(index, key)
                except (ImageReadError, OSError, ValueError) as error:
                    # a long run must survive one bad file: log it once and take the next image
                    self._bad.add(index)
                    logger.warning("Skipping training image %s: %s", self.names[index], error)
            index = (index + 1) % len(self)
        raise ImageReadError(f"none of the {len(self)} training images can be used (each was logged above as "
                             "'Skipping training image')")


class StreamSampler(Sampler[int]):
    """An endless, resumable stream of sample keys for one process.

    The global stream visits the images in a fresh seeded permutation every epoch. Process ``rank``
    of ``num_replicas`` takes micro-batch ``m`` from positions ``[(m * num_replicas + rank) * B,
    ... + B)``, so the ranks never share a sample and a run resumed at micro-batch ``start`` sees the
    same keys as an uninterrupted one. A key is ``position * N + image_index`` (``N`` images).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 start: int = 0):
        if num_items <= 0:
            raise ValueError("StreamSampler needs at least one item.")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.num_replicas, self.rank, self.start = num_replicas, rank, start
        self._permutations: dict[int, np.ndarray] = {}

    def key(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_items)}
        return position * self.num_items + int(self._permutations[epoch][offset])

    def __iter__(self) -> Iterator[int]:
        micro = self.start
        while True:
            first = (micro * self.num_replicas + self.rank) * self.batch_size
            for position in range(first, first + self.batch_size):
                yield self.key(position)
            micro += 1


class _ColumnView(Sequence):
    """One column of a `datasets.Dataset`, decoded row by row (``ds[column]`` would decode every image at once)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index][self.column]


def build_training_dataset(args) -> PairedCropDataset:
    """The training set from ``--train_data_dir`` [+ ``--train_file_list``], or ``--dataset_name``."""
    if args.dataset_name is not None:
        import datasets

        if args.dataset_name == "imagefolder":
            ds = datasets.load_dataset("imagefolder", data_dir=args.train_data_dir, split="train",
                                       cache_dir=args.cache_dir)
        else:
            ds = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split="train",
                                       cache_dir=args.cache_dir)
        if args.image_column not in ds.column_names:
            raise ValueError(f"--image_column {args.image_column!r} is not in {args.dataset_name}: {ds.column_names}.")
        return PairedCropDataset(_ColumnView(ds, args.image_column), args.resolution, augment=args.augment,
                                 names=[f"{args.dataset_name}[{i}]" for i in range(len(ds))],
                                 intensity_augment=args.intensity_augment)
    if args.train_data_dir is None:
        raise ValueError("Give --train_data_dir (an image folder) or --dataset_name.")
    paths = list_image_files(args.train_data_dir, args.train_file_list)
    lr_paths = None
    if args.lr_data_dir is not None:
        lr_paths = [Path(args.lr_data_dir) / p.name for p in paths]
        missing = [str(p) for p in lr_paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"--lr_data_dir lacks {len(missing)} LR images, e.g. {missing[:3]}.")
    return PairedCropDataset(paths, args.resolution, lr_images=lr_paths, augment=args.augment,
                             intensity_augment=args.intensity_augment)


def load_validation_images(data_dir: str | os.PathLike, file_list: str | os.PathLike | None, limit: int | None,
                           crop: int | None = None, multiple: int = 16) -> list[tuple[str, np.ndarray]]:
    """Validation HR images as float32 `(H, W, 3)` in [0, 1], centre-cropped to ``crop`` (if given) and
    to a multiple of ``multiple`` so that the LR is a whole number of pixels."""
    out = []
    for path in list_image_files(data_dir, file_list, flag="--validation_data_dir")[:limit]:
        array = image_to_array(read_image(path))
        h, w = array.shape[:2]
        if crop is not None:
            h, w = min(h, crop), min(w, crop)
        h, w = h - h % multiple, w - w % multiple
        top, left = (array.shape[0] - h) // 2, (array.shape[1] - w) // 2
        out.append((path.name, array[top : top + h, left : left + w]))
    return out
