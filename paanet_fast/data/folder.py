"""A folder of one's own images and masks (Kvasir-SEG, CVC-ClinicDB, a lab's annotations): --dataset folder.

    <root>/images/<id>.<ext>            PNG, JPEG, TIFF or BMP; 8- or 16-bit, grey, RGB or RGBA
    <root>/masks/<id>.<ext>             binary masks (0/1, 0/255, or JPEG), or label masks 0..N (--classes N)
    <root>/masks/<class>/<id>.<ext>     or one folder of binary masks per class (--classes N, N folders,
                                        classes in the folders' sorted order; a missing file: class absent)
    <root>/train.txt, val.txt, test.txt optional split lists, one id a line (val.txt missing: carved
                                        from train; test.txt missing: no test split)

`images` and `masks` are the default folder names (CVC-ClinicDB: "Original" and "Ground Truth").
Images and masks pair by file stem. Every problem is found before training, with the files named:
unpaired files, sizes that differ, unreadable files, mask values that are not what --classes says,
split lists naming ids that are not there. Each mask is decoded once for this check.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import IMAGE_SUFFIXES, DatasetError, image_size, read_rgb, require_folder, visible_entries
from .mask_files import read_binary_mask, read_label_mask
from .splits import SPLIT_NAMES

NAME = "folder"
_LISTED = 5  # names one message lists before it only counts the rest


def listed(names: Sequence[str]) -> str:
    """The first names, then how many more: 'a, b, c and 7 more'."""
    head = ", ".join(names[:_LISTED])
    return head + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


@dataclass(frozen=True)
class FolderSample:
    """One image and its mask: one file (binary or labels), or one per class (None: the class is absent)."""

    image: Path
    masks: tuple[Path | None, ...]


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    """stem -> file for the image files of `folder`; DatasetError for other entries, repeated stems, none at all."""
    found: dict[str, Path] = {}
    strays, repeated = [], []
    for entry in visible_entries(folder):
        if not (entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES):
            strays.append(entry.name + ("/" if entry.is_dir() else ""))
        elif entry.stem in found:
            repeated.append(f"{found[entry.stem].name} and {entry.name}")
        else:
            found[entry.stem] = entry
    if strays:
        raise DatasetError(f"{what} {folder} holds {len(strays)} entries that are not image files "
                           f"({', '.join(IMAGE_SUFFIXES)}): {listed(strays)}")
    if repeated:
        raise DatasetError(f"{what} {folder} holds {len(repeated)} pairs of files with the same name (stem): "
                           f"{listed(repeated)}; images and masks pair by stem")
    if not found:
        raise DatasetError(f"{what} {folder} is empty: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _unpaired(images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path) -> None:
    lonely_images = [images[i].name for i in sorted(images.keys() - masks.keys())]
    lonely_masks = [masks[i].name for i in sorted(masks.keys() - images.keys())]
    parts = []
    if lonely_images:
        parts.append(f"{len(lonely_images)} images in {image_dir} have no mask in {mask_dir}: {listed(lonely_images)}")
    if lonely_masks:
        parts.append(f"{len(lonely_masks)} masks in {mask_dir} have no image in {image_dir}: {listed(lonely_masks)}")
    if parts:
        raise DatasetError(f"{NAME}: {'; '.join(parts)} (images and masks pair by file stem)")


def _read_list(path: Path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines():
        name = line.strip()
        if name:
            ids.append(name[:-len(Path(name).suffix)] if Path(name).suffix.lower() in IMAGE_SUFFIXES else name)
    if not ids:
        raise DatasetError(f"{NAME}: split list {path} is empty")
    return ids


def _split_lists(root: Path, ids: set[str], image_dir: Path) -> dict[str, list[str]] | None:
    """The split from root/{train,val,test}.txt, or None when there are none; checked against `ids`."""
    paths = {name: root / f"{name}.txt" for name in SPLIT_NAMES if (root / f"{name}.txt").is_file()}
    if not paths:
        return None
    if "train" not in paths:
        raise DatasetError(f"{NAME}: {root} has {', '.join(p.name for p in paths.values())} but no train.txt")
    lists = {name: _read_list(path) for name, path in paths.items()}
    seen: dict[str, str] = {}
    for name, names in lists.items():
        absent = [i for i in names if i not in ids]
        if absent:
            raise DatasetError(f"{NAME}: split list {paths[name]} names {len(absent)} ids with no image/mask pair "
                               f"in {image_dir}: {listed(absent)}")
        twice = [i for i in names if i in seen]
        if twice:
            raise DatasetError(f"{NAME}: {len(twice)} ids of {paths[name]} are also in {seen[twice[0]]}.txt: "
                               f"{listed(twice)}")
        seen.update((i, name) for i in names)
    return {"train": lists["train"], **({"val": lists["val"]} if "val" in lists else {}),
            "test": lists.get("test", [])}


class FolderSource:
    """Image/mask pairs from a folder, binary or with `classes` classes; see the module docstring.

    load() gives (image (H, W, 3) uint8, mask (H, W) bool), or for classes > 1 a mask (H, W, classes) bool.
    `summary` is what training prints first: the pairs found and how their masks were read.
    """

    name = NAME

    def __init__(self, root: Path, classes: int = 1, images: str = "images", masks: str = "masks") -> None:
        if classes < 1:
            raise DatasetError(f"--classes must be at least 1, got {classes}")
        self.root = require_folder(Path(root), f"{NAME} data root")
        self.classes = classes
        image_dir = require_folder(self.root / images, f"{NAME}: expected the images folder (--images)")
        mask_dir = require_folder(self.root / masks, f"{NAME}: expected the masks folder (--masks)")
        image_files = _image_files(image_dir, "images folder")
        class_dirs = [p for p in visible_entries(mask_dir) if p.is_dir()]
        self.per_class_folders = bool(class_dirs)
        if class_dirs:
            self.class_names = [p.name for p in class_dirs]
            if len(class_dirs) != classes:
                raise DatasetError(f"{NAME}: {mask_dir} holds {len(class_dirs)} class folders "
                                   f"({listed(self.class_names)}) but {classes} classes were given: train with "
                                   f"--classes {len(class_dirs)} (evaluate takes the classes of the checkpoint's model)")
            stray = [p.name for p in visible_entries(mask_dir) if not p.is_dir()]
            if stray:
                raise DatasetError(f"{NAME}: {mask_dir} holds class folders and also files: {listed(stray)}")
            by_class = [_image_files(folder, "class mask folder") for folder in class_dirs]
            any_mask = {stem: files[stem] for files in reversed(by_class) for stem in files}
            _unpaired(image_files, any_mask, image_dir, mask_dir)
            self.samples = {stem: FolderSample(image, tuple(files.get(stem) for files in by_class))
                            for stem, image in sorted(image_files.items())}
        else:
            self.class_names = ["foreground"] if classes == 1 else [str(k) for k in range(1, classes + 1)]
            mask_files = _image_files(mask_dir, "masks folder")
            _unpaired(image_files, mask_files, image_dir, mask_dir)
            self.samples = {stem: FolderSample(image, (mask_files[stem],))
                            for stem, image in sorted(image_files.items())}
        self.official_split = _split_lists(self.root, set(self.samples), image_dir)
        read_as = self._check_files()
        self.summary = self._describe(images, masks, read_as)

    def ids(self) -> list[str]:
        """Sample ids (file stems), sorted."""
        return list(self.samples)

    def load(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, mask (H, W) bool, or (H, W, classes) bool for classes > 1)."""
        sample = self.samples[sample_id]
        image = read_rgb(sample.image)
        return image, self._mask(sample, image.shape[:2], Counter())

    def _mask(self, sample: FolderSample, size: tuple[int, int], read_as: Counter) -> np.ndarray:
        """The sample's mask, checked against the image's (height, width); counts how each file was read."""
        if self.classes > 1 and not self.per_class_folders:
            labels = read_label_mask(sample.masks[0], self.classes)
            read_as[f"labels 0..{self.classes}"] += 1
            parts = [labels == k for k in range(1, self.classes + 1)]
            paths = sample.masks * self.classes
        else:
            parts, paths = [], []
            for path in sample.masks:
                if path is None:
                    parts.append(np.zeros(size, dtype=bool))
                    continue
                part, how = read_binary_mask(path)
                read_as[how] += 1
                parts.append(part)
                paths.append(path)
        for path, part in zip(paths, parts):
            if part.shape != size:
                raise DatasetError(f"mask {path} is {part.shape[0]}x{part.shape[1]} but its image {sample.image} is "
                                   f"{size[0]}x{size[1]}")
        return parts[0] if self.classes == 1 else np.stack(parts, axis=-1)

    def _check_files(self) -> Counter:
        """Open every image (its header) and decode every mask, so that no problem waits for training."""
        problems: list[str] = []
        read_as: Counter = Counter()
        for sample in self.samples.values():
            try:
                self._mask(sample, image_size(sample.image), read_as)
            except DatasetError as exc:
                problems.append(str(exc))
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise DatasetError(f"{NAME}: {len(problems)} of {len(self.samples)} pairs under {self.root} cannot be "
                               f"used: {problems[0]}{more}")
        return read_as

    def _describe(self, images: str, masks: str, read_as: Counter) -> str:
        kinds = ", ".join(f"{count} {how}" for how, count in sorted(read_as.items()))
        classes = (f"{self.classes} classes ({', '.join(self.class_names)})" if self.classes > 1 else "binary")
        layout = f"{masks}/<class>/" if self.per_class_folders else f"{masks}/"
        lists = (", split from " + ", ".join(f"{n}.txt" for n in SPLIT_NAMES if (self.root / f"{n}.txt").is_file())
                 if self.official_split is not None else "")
        unlisted = ""
        if self.official_split is not None:
            used = sum(len(ids) for ids in self.official_split.values())
            if used < len(self.samples):
                unlisted = f" ({len(self.samples) - used} pairs are in no list and are not used)"
        return (f"found {len(self.samples)} image/mask pairs in {self.root} ({images}/, {layout}), {classes}; "
                f"masks read as: {kinds}{lists}{unlisted}")
