"""Resizing and augmentation with albumentations (the only module that imports it).

Randomness comes from an explicit per-call seed, so a sample's augmentation depends only on
(run seed, epoch, sample index): the same in any worker process, and the same after a resume.
"""
from __future__ import annotations

import albumentations as A
import numpy as np


class PairTransform:
    """Resize an (image, mask) pair to a square size, augmenting it when `train`."""

    def __init__(self, image_size: int, train: bool) -> None:
        steps = [A.Resize(image_size, image_size)]
        if train:
            steps += [
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.RandomRotate90(p=0.5),
                A.Affine(scale=(0.85, 1.15), translate_percent=(-0.05, 0.05), rotate=(-20, 20), p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.3),
            ]
        self.train = train
        self._pipeline = A.Compose(steps, seed=0)

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, mask (H, W) bool) -> the same at (image_size, image_size)."""
        self._pipeline.set_random_seed(seed)
        out = self._pipeline(image=image, mask=mask.astype(np.uint8))
        return out["image"], out["mask"].astype(bool)
