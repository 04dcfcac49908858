"""Small copies of the official dataset layouts, written with PIL, for the data, train and CLI tests.

Every image is noise with brighter discs where its ground truth is, so the expected mask of each
sample is known exactly (returned by the makers) and one epoch of training has something to learn.
Image sizes vary between samples, as in the real datasets.
"""
from __future__ import annotations

import contextlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@contextlib.contextmanager
def one_thread():
    """One intra-op thread for tiny training runs: on a shared 2-core machine a second OpenMP thread
    that has to wait for a core makes every small convolution several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def single_thread():
    with one_thread():
        yield


def _disc(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    cy, cx = rng.uniform(0.25, 0.75, size=2) * shape
    radius = rng.uniform(0.12, 0.25) * min(shape)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def _image(mask: np.ndarray, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    base = rng.integers(20, 90, size=(*mask.shape, channels))
    return np.where(mask[..., None], base + 150, base).astype(np.uint8)


def _shape(index: int) -> tuple[int, int]:
    return 40 + 4 * (index % 3), 48 - 4 * (index % 2)


def _save(array: np.ndarray, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def make_dsb2018(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """root/stage1_train/<id>/{images/<id>.png (RGBA), masks/*.png (one per nucleus)}; returns id -> union mask."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(count):
        sample_id = f"{i:04x}dsb{i * 7919 % 1000:03d}"
        shape = _shape(i)
        nuclei = [_disc(shape, rng) for _ in range(2)]
        union = nuclei[0] | nuclei[1]
        rgba = np.concatenate([_image(union, rng), np.full((*shape, 1), 255, np.uint8)], axis=2)
        folder = root / "stage1_train" / sample_id
        _save(rgba, folder / "images" / f"{sample_id}.png")
        for n, nucleus in enumerate(nuclei):
            _save(nucleus.astype(np.uint8) * 255, folder / "masks" / f"nucleus{n}.png")
        truth[sample_id] = union
    return truth


def make_isic2018(root: Path, count: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """ISIC2018_Task1-2_Training_Input/ISIC_<id>.jpg and the task-1 ground truth PNGs, plus the licence files."""
    rng = np.random.default_rng(seed)
    truth = {}
    for folder in ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "LICENSE.txt").write_text("licence\n")
        (root / folder / "ATTRIBUTION.txt").write_text("attribution\n")
    for i in range(count):
        sample_id = f"ISIC_{i * 37:07d}"
        mask = _disc(_shape(i), rng)
        _save(_image(mask, rng), root / "ISIC2018_Task1-2_Training_Input" / f"{sample_id}.jpg", quality=95)
        _save(mask.astype(np.uint8) * 255, root / "ISIC2018_Task1_Training_GroundTruth" / f"{sample_id}_segmentation.png")
        truth[sample_id] = mask
    return truth


def make_kvasir_instrument(root: Path, count: int = 10, test_count: int = 2, seed: int = 0,
                           archives: bool = False, nested: bool = True) -> dict[str, np.ndarray]:
    """images/<id>.jpg, masks/<id>.png, train.txt, test.txt; with `archives` only images.tar.gz and
    masks.tar.gz (members under images/ and masks/ when `nested`, else at the archive's top level)."""
    rng = np.random.default_rng(seed)
    truth = {}
    files: dict[str, dict[str, bytes]] = {"images": {}, "masks": {}}
    for i in range(count):
        sample_id = f"ck{i:03d}instrument"
        mask = _disc(_shape(i), rng)
        for folder, array, name, fmt in (("images", _image(mask, rng), f"{sample_id}.jpg", "JPEG"),
                                         ("masks", mask.astype(np.uint8) * 255, f"{sample_id}.png", "PNG")):
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format=fmt)
            files[folder][name] = buffer.getvalue()
        truth[sample_id] = mask
    root.mkdir(parents=True, exist_ok=True)
    for folder, members in files.items():
        if archives:
            with tarfile.open(root / f"{folder}.tar.gz", "w:gz") as tar:
                for name, data in members.items():
                    info = tarfile.TarInfo(f"{folder}/{name}" if nested else name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        else:
            (root / folder).mkdir(exist_ok=True)
            for name, data in members.items():
                (root / folder / name).write_bytes(data)
    ids = sorted(truth)
    (root / "train.txt").write_text("\n".join(ids[test_count:]) + "\n")
    (root / "test.txt").write_text("\n".join(ids[:test_count]) + "\n")
    return truth


MAKERS = {"dsb2018": make_dsb2018, "isic2018": make_isic2018, "kvasir-instrument": make_kvasir_instrument}
