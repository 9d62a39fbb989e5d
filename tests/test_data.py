"""Training data: crops, augmentation, paired LR alignment, bad files, the resumable sampler."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch

from difiisr_dwt.data import (
    PairedCropDataset,
    StreamSampler,
    build_training_dataset,
    image_to_array,
    list_image_files,
)


def _gradient_image(width: int = 48, height: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 5 + y * 3) % 256).astype(np.uint8)


def test_grayscale_becomes_three_equal_channels():
    array = image_to_array(PIL.Image.fromarray(_gradient_image()))
    assert array.shape == (40, 48, 3) and array.dtype == np.float32
    assert np.array_equal(array[..., 0], array[..., 2])
    assert array.max() <= 1.0 and array.min() >= 0.0


def test_16bit_images_are_normalised_by_their_range():
    raw = np.linspace(1000, 3000, 40 * 48).reshape(40, 48).astype(np.uint16)
    array = image_to_array(PIL.Image.fromarray(raw))  # PIL opens uint16 as I;16
    assert array.min() == 0.0 and array.max() == pytest.approx(1.0)
    assert np.allclose(array[..., 0], (raw - 1000) / 2000, atol=1e-6)


def test_crops_are_seeded_by_key_and_in_range(tmp_path):
    for i in range(3):
        PIL.Image.fromarray(np.roll(_gradient_image(96, 80), 7 * i)).save(tmp_path / f"{i}.png")
    dataset = PairedCropDataset(list_image_files(tmp_path), resolution=32)
    a, b, c = dataset[5], dataset[5], dataset[8]  # keys 5 and 8: the same image (5 % 3 == 8 % 3), other crop
    assert a["hr"].shape == (3, 32, 32)
    assert torch.equal(a["hr"], b["hr"])
    assert not torch.equal(a["hr"], c["hr"])
    assert a["hr"].min() >= -1 and a["hr"].max() <= 1


def test_paired_lr_crop_stays_aligned_under_augmentation(tmp_path):
    hr = (np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8)
    lr = hr.reshape(16, 4, 20, 4).mean(axis=(1, 3))  # exact 4x4 box average: aligned by construction
    PIL.Image.fromarray(hr).save(tmp_path / "hr.png")
    PIL.Image.fromarray(lr.astype(np.float32), mode="F").save(tmp_path / "lr.tiff")
    dataset = PairedCropDataset([tmp_path / "hr.png"], resolution=32, lr_images=[tmp_path / "lr.tiff"])
    for key in range(8):  # several crops, flips and rotations
        sample = dataset[key]
        box = sample["hr"][0].reshape(8, 4, 8, 4).mean(dim=(1, 3))
        # the float LR is normalised by its own range; compare shapes of the signal, not absolute values
        lr_crop = sample["lr"][0]
        corr = np.corrcoef(box.flatten().numpy(), lr_crop.flatten().numpy())[0, 1]
        assert corr > 0.999, f"key {key}: LR crop not aligned with HR crop (corr {corr:.3f})"


def test_paired_lr_of_an_hr_not_a_multiple_of_4_is_the_rounded_down_size(tmp_path):
    """HR 83x66 with LR 20x16 (floor of HR / 4, as ``eval`` and most tools make it) was skipped as "unreadable",
    then "No readable training image left" with a traceback. The HR is mod-cropped, as ``eval`` does."""
    from difiisr_dwt.io import ImageReadError

    hr = (np.random.default_rng(0).random((66, 83)) * 255).astype(np.uint8)
    lr = hr[:64, :80].reshape(16, 4, 20, 4).mean(axis=(1, 3))
    PIL.Image.fromarray(hr).save(tmp_path / "hr.png")
    PIL.Image.fromarray(lr.astype(np.float32), mode="F").save(tmp_path / "lr.tiff")
    dataset = PairedCropDataset([tmp_path / "hr.png"], resolution=32, lr_images=[tmp_path / "lr.tiff"])
    for key in range(8):
        sample = dataset[key]
        box = sample["hr"][0].reshape(8, 4, 8, 4).mean(dim=(1, 3))
        assert np.corrcoef(box.flatten().numpy(), sample["lr"][0].flatten().numpy())[0, 1] > 0.999
    PIL.Image.fromarray(lr[:15].astype(np.float32), mode="F").save(tmp_path / "short.tiff")
    with pytest.raises(ImageReadError, match=r"none of the 1 training images can be used"):
        PairedCropDataset([tmp_path / "hr.png"], resolution=32, lr_images=[tmp_path / "short.tiff"])[0]


def test_small_images_are_padded_to_one_crop(tmp_path):
    PIL.Image.fromarray(_gradient_image(20, 24)).save(tmp_path / "small.png")
    sample = PairedCropDataset(list_image_files(tmp_path), resolution=32)[0]
    assert sample["hr"].shape == (3, 32, 32)


def test_corrupt_file_is_logged_and_skipped(tmp_path, caplog):
    PIL.Image.fromarray(_gradient_image()).save(tmp_path / "a_good.png")
    (tmp_path / "b_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = PairedCropDataset(list_image_files(tmp_path), resolution=32)
    with caplog.at_level(logging.WARNING):
        samples = [dataset[k] for k in range(4)]  # keys 1 and 3 point at the bad file
    assert all(s["hr"].shape == (3, 32, 32) for s in samples)
    warnings = [r for r in caplog.records if "b_bad.png" in r.getMessage()]
    assert len(warnings) == 1  # logged once, then remembered


def test_file_list_with_missing_file_names_it(tmp_path):
    PIL.Image.fromarray(_gradient_image()).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png\nmissing.png\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        list_image_files(tmp_path, tmp_path / "list.txt")


def test_stream_sampler_shards_epochs_and_resumes():
    n, batch = 10, 2
    ranks = [StreamSampler(n, batch, seed=3, num_replicas=2, rank=r) for r in range(2)]
    streams = [[k for _, k in zip(range(10), iter(s))] for s in ranks]  # 5 micro-batches per rank
    assert not set(streams[0]) & set(streams[1])  # ranks never share a sample
    keys = streams[0] + streams[1]
    assert sorted(k // n for k in keys) == list(range(20))  # together the ranks cover positions 0..19
    for epoch in range(2):  # and each epoch visits every image once
        assert sorted(k % n for k in keys if epoch * n <= k // n < (epoch + 1) * n) == list(range(n))
    resumed = StreamSampler(n, batch, seed=3, num_replicas=2, rank=1, start=3)
    assert [k for _, k in zip(range(4), iter(resumed))] == streams[1][6:10]


def test_build_training_dataset_from_roadscene(shared_dir):
    args = SimpleNamespace(dataset_name=None, train_data_dir=str(shared_dir / "data/ir/roadscene"),
                           train_file_list=str(shared_dir / "data/ir/roadscene_train.txt"), lr_data_dir=None,
                           resolution=64, augment="flip_rot90", intensity_augment="thermal")
    dataset = build_training_dataset(args)
    assert len(dataset) == 181
    sample = dataset[0]["hr"]
    assert sample.shape == (3, 64, 64) and torch.equal(sample[0], sample[1])  # grey PNG -> 3 equal channels


def test_datasets_imagefolder_source(tmp_path):
    pytest.importorskip("datasets", reason="the `datasets` package is an optional training dependency")
    for i in range(2):
        PIL.Image.fromarray(np.roll(_gradient_image(64, 64), 9 * i)).save(tmp_path / f"{i}.png")
    args = SimpleNamespace(dataset_name="imagefolder", dataset_config_name=None, train_data_dir=str(tmp_path),
                           cache_dir=str(tmp_path / "cache"), image_column="image", resolution=32, augment="none",
                           intensity_augment="none")
    dataset = build_training_dataset(args)
    assert len(dataset) == 2
    crops = {k: dataset[k]["hr"] for k in range(2)}
    assert all(c.shape == (3, 32, 32) for c in crops.values())
    assert not torch.equal(crops[0], crops[1])
