"""The built-in synthetic set, the transforms and the torch Dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from paanet_fast.data import SegmentationDataset, SyntheticSource, image_to_tensor, tensor_to_image
from paanet_fast.data.synthetic import generate_sample
from paanet_fast.data.transforms import PairTransform


def test_synthetic_set_is_a_function_of_seed_and_index_only():
    first = SyntheticSource(num_images=6, image_size=48, seed=11)
    second = SyntheticSource(num_images=6, image_size=48, seed=11)
    backwards = {i: second.load(i) for i in reversed(second.ids())}  # other generation order
    for sample_id in first.ids():
        image, mask = first.load(sample_id)
        np.testing.assert_array_equal(image, backwards[sample_id][0])
        np.testing.assert_array_equal(mask, backwards[sample_id][1])
    other = SyntheticSource(num_images=6, image_size=48, seed=12)
    assert not np.array_equal(first.load(first.ids()[0])[0], other.load(other.ids()[0])[0])
    assert not np.array_equal(first.load(first.ids()[0])[0], first.load(first.ids()[1])[0])


def test_synthetic_images_are_varied_and_not_trivially_thresholded():
    masks, images = [], []
    for index in range(40):
        image, mask = generate_sample(seed=0, index=index, image_size=64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and mask.shape == (64, 64)
        images.append(image)
        masks.append(mask)
    coverage = np.array([m.mean() for m in masks])
    assert coverage.min() > 0 and coverage.max() < 0.6  # every image has a target, none is all target
    assert len({m.tobytes() for m in masks}) == len(masks) and coverage.std() > 0.02
    # Objects are brighter in some images and darker in others: no global intensity threshold works.
    brighter = [img[m].mean() > img[~m].mean() for img, m in zip(images, masks)]
    assert 0 < sum(brighter) < len(brighter)
    # Sensor noise: no image has flat regions.
    assert all(np.abs(np.diff(img.astype(int), axis=1)).mean() > 1 for img in images)


def test_synthetic_rejects_too_small_sets():
    with pytest.raises(ValueError, match="num_images must be at least 3"):
        SyntheticSource(num_images=2, image_size=64, seed=0)
    with pytest.raises(ValueError, match="image_size must be at least 16"):
        SyntheticSource(num_images=9, image_size=8, seed=0)


def _checkerboard(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((yy // 9 + xx // 7) % 2 == 0) & (yy < height * 0.8)
    image = np.repeat(np.where(mask, 230, 25)[..., None], 3, axis=2).astype(np.uint8)
    return image, mask


def test_eval_transform_only_resizes():
    image, mask = _checkerboard(50, 70)
    out_image, out_mask = PairTransform(32, train=False)(image, mask, seed=123)
    assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32) and out_mask.dtype == bool
    again = PairTransform(32, train=False)(image, mask, seed=999)
    np.testing.assert_array_equal(out_image, again[0])
    np.testing.assert_array_equal(out_mask, again[1])


def test_train_transform_is_seeded_and_keeps_mask_aligned_with_image():
    image, mask = _checkerboard(64, 64)
    transform = PairTransform(64, train=True)
    results = [transform(image, mask, seed) for seed in range(12)]
    repeat = transform(image, mask, 5)
    np.testing.assert_array_equal(repeat[0], results[5][0])
    np.testing.assert_array_equal(repeat[1], results[5][1])
    assert len({r[0].tobytes() for r in results}) > 6  # the seeds give different augmentations
    for out_image, out_mask in results:
        bright = out_image.mean(axis=2) > 127
        inside = out_image.mean(axis=2) > 5  # ignore the fill where an affine warp shows no image
        assert (bright == out_mask)[inside].mean() > 0.95


def test_image_tensor_round_trip_and_normalisation():
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    tensor = image_to_tensor(image)
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor[0].numpy(), (image[..., 0] / 255 - 0.485) / 0.229, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tensor_to_image(tensor), image)


def test_dataset_items_and_per_epoch_augmentation():
    source = SyntheticSource(num_images=5, image_size=40, seed=1)
    dataset = SegmentationDataset(source, source.ids()[1:4], PairTransform(32, train=True), seed=7)
    assert len(dataset) == 3
    item = dataset[0]
    assert item["id"] == source.ids()[1]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    epoch0 = [dataset[i]["image"] for i in range(3)]
    dataset.set_epoch(1)
    epoch1 = [dataset[i]["image"] for i in range(3)]
    dataset.set_epoch(0)
    assert all(torch.equal(a, dataset[i]["image"]) for i, a in enumerate(epoch0))
    assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1))
