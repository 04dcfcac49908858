"""Datasets: the built-in synthetic set, DSB 2018, ISIC 2018 and Kvasir-Instrument read from their
official layouts, and a folder of one's own images and masks; splits; and the torch Dataset.
Augmentation lives in `transforms` (albumentations), imported only where it is used.
"""
from __future__ import annotations

from pathlib import Path

from ..options import DATASET_NAMES
from .common import DatasetError
from .dataset import SegmentationDataset, Source, image_to_tensor, tensor_to_image
from .dsb2018 import open_dsb2018
from .folder import FolderSource
from .isic2018 import open_isic2018
from .kvasir_instrument import open_kvasir_instrument
from .splits import SPLIT_NAMES, Split, carve_validation, check_split, random_split, read_split, write_split
from .synthetic import SyntheticSource

_FILE_DATASETS = {"dsb2018": open_dsb2018, "isic2018": open_isic2018, "kvasir-instrument": open_kvasir_instrument}

__all__ = ["DATASET_NAMES", "SPLIT_NAMES", "DatasetError", "FolderSource", "SegmentationDataset", "Source", "Split",
           "SyntheticSource", "default_split", "image_to_tensor", "open_source", "read_split", "tensor_to_image",
           "write_split"]


def open_source(name: str, data_root: str | Path | None, *, image_size: int, num_images: int, seed: int,
                classes: int = 1, images: str = "images", masks: str = "masks") -> Source:
    """The dataset `name`: files under `data_root`, or for "synthetic" `num_images` generated images.

    `classes`: mask channels (folder and synthetic only; the official datasets are binary);
    `images`, `masks`: the folder dataset's folder names.
    """
    if name == "synthetic":
        return SyntheticSource(num_images=num_images, image_size=image_size, seed=seed, classes=classes)
    if name not in (*_FILE_DATASETS, "folder"):
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if data_root is None:
        raise DatasetError(f"dataset {name} needs --data-root (the folder holding its files)")
    if name == "folder":
        return FolderSource(Path(data_root), classes=classes, images=images, masks=masks)
    if classes != 1:
        raise DatasetError(f"dataset {name} is binary: --classes {classes} needs --dataset folder or synthetic")
    if (images, masks) != ("images", "masks"):
        raise DatasetError(f"--images and --masks name the folders of --dataset folder, not of {name}")
    return _FILE_DATASETS[name](Path(data_root))


def default_split(source: Source, seed: int) -> Split:
    """The dataset's own lists (validation carved from train when they have none), else a seeded 80/10/10 split."""
    if source.official_split is not None:
        if "val" in source.official_split:
            return check_split(source.official_split, source.ids(), f"the split lists of {source.root}")
        return carve_validation(source.official_split["train"], source.official_split["test"], seed)
    return random_split(source.ids(), seed)
