"""2018 Data Science Bowl, stage 1 training set, in its official layout.

    <root>/stage1_train/<id>/images/<id>.png     the image (RGBA: the alpha channel is dropped)
    <root>/stage1_train/<id>/masks/*.png         one mask per nucleus; the ground truth is their union

`root` may also be the stage1_train folder itself.
"""
from __future__ import annotations

from pathlib import Path

from .common import DatasetError, FileSample, FileSource, require_folder, summarize_problems, visible_entries

NAME = "dsb2018"


def open_dsb2018(root: Path) -> FileSource:
    """The DSB 2018 stage-1 training set under `root`."""
    root = require_folder(Path(root), f"{NAME} data root")
    train = root if root.name == "stage1_train" else root / "stage1_train"
    require_folder(train, f"{NAME}: expected the unzipped stage1_train folder")
    samples: dict[str, FileSample] = {}
    problems = []
    for entry in visible_entries(train):
        if not entry.is_dir():
            problems.append(f"unexpected file {entry} (expected one folder per image id)")
            continue
        sample_id = entry.name
        image = entry / "images" / f"{sample_id}.png"
        masks_dir = entry / "masks"
        if not image.is_file():
            problems.append(f"missing image {image}")
            continue
        masks = [p for p in visible_entries(masks_dir) if p.suffix.lower() == ".png"] if masks_dir.is_dir() else []
        if not masks:
            problems.append(f"no mask PNGs in {masks_dir}")
            continue
        samples[sample_id] = FileSample(image, tuple(masks))
    if problems:
        raise DatasetError(summarize_problems(f"{NAME} folder {train}", problems))
    return FileSource(NAME, train, samples)
