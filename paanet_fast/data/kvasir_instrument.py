"""Kvasir-Instrument in its official layout, with its official train/test lists.

    <root>/images/<id>.jpg     (or only <root>/images.tar.gz: unpacked here on first use)
    <root>/masks/<id>.png      (or only <root>/masks.tar.gz)
    <root>/train.txt, <root>/test.txt   ids, one a line

Every image must be listed in exactly one of the two lists and every listed id must have an
image and a mask.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .common import DatasetError, FileSample, FileSource, require_folder, summarize_problems, visible_entries

NAME = "kvasir-instrument"
LISTS = ("train", "test")


def unpack_archive(root: Path, folder: str) -> None:
    """Create `root/folder` from `root/folder.tar.gz` when only the archive is there.

    The archive may hold `folder/<files>` or the files at its top level. Extraction goes to a
    temporary folder first and is moved into place at the end, so an interrupted unpack leaves
    no half-filled folder behind.
    """
    target = root / folder
    archive = root / f"{folder}.tar.gz"
    if target.exists() or not archive.is_file():
        return
    try:
        with tempfile.TemporaryDirectory(prefix=f".unpack-{folder}-", dir=root) as tmp:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
            top = visible_entries(Path(tmp))
            nested = [p for p in top if p.is_dir() and p.name == folder]
            if nested:
                source = nested[0]
            else:  # the files sit at the archive's top level
                source = Path(tmp) / folder
                source.mkdir()
                for entry in top:
                    shutil.move(str(entry), source / entry.name)
            os.replace(source, target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{NAME}: cannot unpack {archive} into {target}: {exc}") from exc


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{NAME}: missing split list {path}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{NAME}: split list {path} is empty")
    return [i[:-4] if i.lower().endswith(".jpg") else i for i in ids]


def open_kvasir_instrument(root: Path) -> FileSource:
    """Kvasir-Instrument under `root`, with `official_split` = {"train": [...], "test": [...]}."""
    root = require_folder(Path(root), f"{NAME} data root")
    for folder in ("images", "masks"):
        unpack_archive(root, folder)
    image_dir = require_folder(root / "images", f"{NAME}: expected the images folder (or images.tar.gz)")
    mask_dir = require_folder(root / "masks", f"{NAME}: expected the masks folder (or masks.tar.gz)")
    lists = {name: _read_list(root / f"{name}.txt") for name in LISTS}
    problems = [f"id {i} is listed in both train.txt and test.txt" for i in sorted(set(lists["train"]) & set(lists["test"]))]
    images = {}
    for entry in visible_entries(image_dir):
        if entry.is_file() and entry.suffix.lower() == ".jpg":
            images[entry.stem] = entry
        else:
            problems.append(f"unexpected entry {entry} (expected <id>.jpg files)")
    listed = set(lists["train"]) | set(lists["test"])
    problems += [f"image {images[i]} is listed in neither train.txt nor test.txt" for i in sorted(images.keys() - listed)]
    problems += [f"id {i} from the split lists has no image {image_dir / (i + '.jpg')}" for i in sorted(listed - images.keys())]
    samples = {}
    for sample_id, image in images.items():
        mask = mask_dir / f"{sample_id}.png"
        if mask.is_file():
            samples[sample_id] = FileSample(image, (mask,))
        else:
            problems.append(f"missing mask {mask} for image {image}")
    if problems:
        raise DatasetError(summarize_problems(f"{NAME} under {root}", problems))
    return FileSource(NAME, root, samples, official_split={name: sorted(ids) for name, ids in lists.items()})
