"""ISIC 2018 task 1 (lesion boundary segmentation) training data, in its official layout.

    <root>/ISIC2018_Task1-2_Training_Input/ISIC_<id>.jpg
    <root>/ISIC2018_Task1_Training_GroundTruth/ISIC_<id>_segmentation.png

The LICENSE.txt and ATTRIBUTION.txt files the archives ship are ignored; any other stray file is an
error, as is an image without a mask or a mask without an image.
"""
from __future__ import annotations

from pathlib import Path

from .common import DatasetError, FileSample, FileSource, require_folder, summarize_problems, visible_entries

NAME = "isic2018"
IMAGE_FOLDER = "ISIC2018_Task1-2_Training_Input"
MASK_FOLDER = "ISIC2018_Task1_Training_GroundTruth"
_MASK_SUFFIX = "_segmentation.png"


def _files(folder: Path, problems: list[str], keep) -> dict[str, Path]:
    """id -> file for the entries of `folder` that `keep` maps to an id; other non-.txt files are problems."""
    found = {}
    for entry in visible_entries(folder):
        sample_id = keep(entry.name) if entry.is_file() else None
        if sample_id is not None:
            found[sample_id] = entry
        elif entry.suffix.lower() != ".txt":
            problems.append(f"unexpected entry {entry}")
    return found


def _image_id(name: str) -> str | None:
    return name[:-4] if name.startswith("ISIC_") and name.lower().endswith(".jpg") else None


def _mask_id(name: str) -> str | None:
    return name[:-len(_MASK_SUFFIX)] if name.startswith("ISIC_") and name.endswith(_MASK_SUFFIX) else None


def open_isic2018(root: Path) -> FileSource:
    """The ISIC 2018 task-1 training set under `root`."""
    root = require_folder(Path(root), f"{NAME} data root")
    image_dir = require_folder(root / IMAGE_FOLDER, f"{NAME}: expected the training input folder")
    mask_dir = require_folder(root / MASK_FOLDER, f"{NAME}: expected the task-1 ground-truth folder")
    problems: list[str] = []
    images = _files(image_dir, problems, _image_id)
    masks = _files(mask_dir, problems, _mask_id)
    problems += [f"missing mask {mask_dir / (i + _MASK_SUFFIX)} for image {images[i]}"
                 for i in sorted(images.keys() - masks.keys())]
    problems += [f"mask {masks[i]} has no image {image_dir / (i + '.jpg')}" for i in sorted(masks.keys() - images.keys())]
    if problems:
        raise DatasetError(summarize_problems(f"{NAME} under {root}", problems))
    return FileSource(NAME, root, {i: FileSample(images[i], (masks[i],)) for i in images})
