"""Reading dataset images and masks from disk, with errors that name the file or folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# How many problems one error message lists before it only counts the rest.
_MAX_LISTED_PROBLEMS = 10


class DatasetError(ValueError):
    """A dataset file or folder that cannot be used; the message names it."""


def require_folder(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a DatasetError that says what was expected there."""
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"{what}: {path} {state}")
    return path


def visible_entries(folder: Path) -> list[Path]:
    """The entries of `folder`, sorted, without hidden ones (.DS_Store, ._ resource forks)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _open_error(path: Path, exc: Exception) -> DatasetError:
    if isinstance(exc, FileNotFoundError):
        return DatasetError(f"missing file: {path}")
    return DatasetError(f"cannot read image {path}: {exc}")


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise _open_error(path, exc) from exc
    return height, width


def open_image(path: Path) -> Image.Image:
    """The decoded image file (its pixels loaded), or a DatasetError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return image  # loaded: usable after the file is closed
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise _open_error(path, exc) from exc


def _decode(path: Path, mode: str) -> np.ndarray:
    return np.asarray(open_image(path).convert(mode))


# Pillow's single-channel 16-bit modes ("I": 16-bit PNGs in some Pillow versions). Its RGB(A)
# 16-bit TIFFs already open as 8-bit "RGB"/"RGBA", keeping the high byte of each sample.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; an alpha channel is dropped, grey is replicated.

    A 16-bit grey image is scaled from its full range 0..65535 to 0..255 (Pillow's own conversion
    would clip every value above 255).
    """
    image = open_image(path)
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image, dtype=np.float64) / 257, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """A mask file as (H, W) bool. Masks stored as {0, 1} and as {0, 255} (even JPEG-blurred) both work."""
    grey = _decode(path, "L")
    threshold = 0 if grey.max() <= 1 else 127
    return grey > threshold


@dataclass(frozen=True)
class FileSample:
    """One image and the mask files whose union is its ground truth."""

    image: Path
    masks: tuple[Path, ...]


class FileSource:
    """A dataset read from files: ids, loading, and an up-front check of every pair's sizes."""

    classes = 1  # the official datasets are binary
    class_names = ["foreground"]

    def __init__(self, name: str, root: Path, samples: dict[str, FileSample],
                 official_split: dict[str, list[str]] | None = None) -> None:
        if not samples:
            raise DatasetError(f"{name}: no samples found under {root}")
        self.name = name
        self.root = root
        self.samples = dict(sorted(samples.items()))
        self.official_split = official_split
        self._check_sizes()

    def ids(self) -> list[str]:
        """Sample ids, sorted."""
        return list(self.samples)

    def load(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, mask (H, W) bool) of one sample."""
        sample = self.samples[sample_id]
        image = read_rgb(sample.image)
        mask = np.zeros(image.shape[:2], dtype=bool)
        for mask_path in sample.masks:
            part = read_mask(mask_path)
            if part.shape != mask.shape:
                raise DatasetError(f"{self.name}: mask {mask_path} is {part.shape[0]}x{part.shape[1]} but "
                                   f"image {sample.image} is {mask.shape[0]}x{mask.shape[1]}")
            mask |= part
        return image, mask

    def _check_sizes(self) -> None:
        """Every image and mask opens and each mask matches its image's size (headers only: fast)."""
        problems = []
        for sample in self.samples.values():
            try:
                expected = image_size(sample.image)
                for mask_path in sample.masks:
                    size = image_size(mask_path)
                    if size != expected:
                        problems.append(f"mask {mask_path} is {size[0]}x{size[1]} but image {sample.image} "
                                        f"is {expected[0]}x{expected[1]}")
            except DatasetError as exc:
                problems.append(str(exc))
        if problems:
            raise DatasetError(summarize_problems(f"{self.name} under {self.root}", problems))


def summarize_problems(where: str, problems: list[str]) -> str:
    """One message listing the first problems found in `where` and counting the rest."""
    listed = "\n  ".join(problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{len(problems)} problem(s) in {where}:\n  {listed}{tail}"
