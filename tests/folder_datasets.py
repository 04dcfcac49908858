"""Small folders of images and masks in each form `--dataset folder` reads, for the data and CLI tests.

Each maker writes `count` pairs under `root` and returns id -> the expected mask: (H, W) bool, or
(H, W, classes) bool for the multi-class forms. Images are noise with brighter discs where the
ground truth is (fake_datasets' recipe), so one epoch has something to learn.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from fake_datasets import _disc, _image, _shape

CLASSES = 3
FORMS = ("png", "jpeg-masks", "tiff16", "cvc", "split-lists", "labels", "class-folders")
# The CLI flags each form needs besides --dataset folder --data-root.
FORM_FLAGS = {"cvc": ["--images", "Original", "--masks", "Ground Truth"],
              "labels": ["--classes", str(CLASSES)], "class-folders": ["--classes", str(CLASSES)]}


def save(array: np.ndarray, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def _binary(root: Path, count: int, seed: int, image_name, mask_name, mask_of=lambda m: m.astype(np.uint8) * 255,
            image_of=lambda m, rng: _image(m, rng)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(count):
        sample_id = f"case{i:02d}"
        mask = _disc(_shape(i), rng)
        save(image_of(mask, rng), root / image_name(sample_id, i))
        save(mask_of(mask), root / mask_name(sample_id, i))
        truth[Path(image_name(sample_id, i)).stem] = mask
    return truth


def _mixed_png_image(mask: np.ndarray, rng: np.random.Generator, index: int) -> np.ndarray:
    """RGB, RGBA (alpha dropped when read) or grey by index: every kind of 8-bit image."""
    if index % 3 == 1:
        return np.concatenate([_image(mask, rng), np.full((*mask.shape, 1), 200, np.uint8)], axis=2)
    return _image(mask, rng)[..., 0] if index % 3 == 2 else _image(mask, rng)


def make_png(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """images/<id>.png (RGB, RGBA or grey; every fourth a BMP) and masks/<id>.png, 0/255 or 0/1."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(count):
        sample_id = f"case{i:02d}"
        mask = _disc(_shape(i), rng)
        suffix = ".bmp" if i % 4 == 3 else ".png"
        save(_mixed_png_image(mask, rng, i), root / "images" / f"{sample_id}{suffix}")
        save(mask.astype(np.uint8) * (1 if i % 2 else 255), root / "masks" / f"{sample_id}.png")
        truth[sample_id] = mask
    return truth


def make_jpeg_masks(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Kvasir-SEG's form: images/<id>.jpg and masks/<id>.jpg (0/255 before the JPEG blurred it, RGB)."""
    return _binary(root, count, seed, lambda s, i: f"images/{s}.jpg", lambda s, i: f"masks/{s}.jpg",
                   mask_of=lambda m: np.repeat(m.astype(np.uint8)[..., None] * 255, 3, axis=2))


def sixteen_bit_image(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint16 grey using the whole 16-bit range."""
    base = rng.integers(5000, 20000, size=mask.shape)
    return np.where(mask, base + 40000, base).astype(np.uint16)


def make_tiff16(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """images/<id>.tif 16-bit grey and masks/<id>.tif 16-bit 0/65535 (a microscope's export)."""
    return _binary(root, count, seed, lambda s, i: f"images/{s}.tif", lambda s, i: f"masks/{s}.tif",
                   mask_of=lambda m: m.astype(np.uint16) * 65535, image_of=sixteen_bit_image)


def make_cvc(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """CVC-ClinicDB's form: Original/<n>.tif and "Ground Truth"/<n>.tif, ids 1, 2, ..."""
    return _binary(root, count, seed, lambda s, i: f"Original/{i + 1}.tif", lambda s, i: f"Ground Truth/{i + 1}.tif")


def write_split_lists(root: Path, ids: list[str]) -> dict[str, list[str]]:
    """train.txt (ids with their .png suffix, which lists may carry), val.txt, test.txt; returns the split."""
    split = {"train": ids[3:], "val": ids[:2], "test": ids[2:3]}
    for name, names in split.items():
        (root / f"{name}.txt").write_text("".join(f"{i}.png\n" if name == "train" else f"{i}\n" for i in names))
    return split


def make_split_lists(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """The PNG form with train.txt, val.txt and test.txt."""
    truth = _binary(root, count, seed, lambda s, i: f"images/{s}.png", lambda s, i: f"masks/{s}.png")
    write_split_lists(root, sorted(truth))
    return truth


def _classes(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) labels 0..CLASSES: one disc per class, later ones on top."""
    labels = np.zeros(shape, dtype=np.uint8)
    for label in range(1, CLASSES + 1):
        labels[_disc(shape, rng)] = label
    return labels


def _class_image(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(20, 60, size=(*labels.shape, 3))
    return (base + 60 * labels[..., None]).astype(np.uint8)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == k for k in range(1, CLASSES + 1)], axis=-1)


def make_labels(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """images/<id>.png and masks/<id>.png holding labels 0..CLASSES."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(count):
        sample_id = f"case{i:02d}"
        labels = _classes(_shape(i), rng)
        save(_class_image(labels, rng), root / "images" / f"{sample_id}.png")
        save(labels, root / "masks" / f"{sample_id}.png")
        truth[sample_id] = _one_hot(labels)
    return truth


CLASS_FOLDERS = ("polyp", "instrument", "bubble")  # sorted order is the class order: bubble, instrument, polyp


def make_class_folders(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """images/<id>.png and masks/<class>/<id>.png, binary 0/255; a class absent from an image has no file."""
    rng = np.random.default_rng(seed)
    order = sorted(CLASS_FOLDERS)
    truth = {}
    for i in range(count):
        sample_id = f"case{i:02d}"
        labels = _classes(_shape(i), rng)
        save(_class_image(labels, rng), root / "images" / f"{sample_id}.png")
        one_hot = _one_hot(labels)
        if i % 3 == 0:
            one_hot[..., 2] = False  # the last class is absent here: no file for it
        for k, name in enumerate(order):
            if one_hot[..., k].any():
                save(one_hot[..., k].astype(np.uint8) * 255, root / "masks" / name / f"{sample_id}.png")
        truth[sample_id] = one_hot
    return truth


MAKERS = {"png": make_png, "jpeg-masks": make_jpeg_masks, "tiff16": make_tiff16, "cvc": make_cvc,
          "split-lists": make_split_lists, "labels": make_labels, "class-folders": make_class_folders}


def write_rgb16_tiff(path: Path, rgb: np.ndarray) -> None:
    """An uncompressed little-endian TIFF of (H, W, 3) uint16 RGB, which Pillow cannot write."""
    height, width, _ = rgb.shape
    pixels = rgb.astype("<u2").tobytes()
    bits_offset = 8 + len(pixels)  # header, pixels, then the three BitsPerSample values, then the IFD
    short, long = 3, 4
    entries = [(256, short, 1, width), (257, short, 1, height), (258, short, 3, bits_offset), (259, short, 1, 1),
               (262, short, 1, 2), (273, long, 1, 8), (277, short, 1, 3), (278, short, 1, height),
               (279, long, 1, len(pixels)), (284, short, 1, 1)]
    data = b"II*\x00" + struct.pack("<I", bits_offset + 6) + pixels + struct.pack("<3H", 16, 16, 16)
    data += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        inline = struct.pack("<HH", value, 0) if kind == short and count == 1 else struct.pack("<I", value)
        data += struct.pack("<HHI", tag, kind, count) + inline
    path.write_bytes(data + struct.pack("<I", 0))
