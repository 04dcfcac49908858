"""Reading a user's mask files strictly: binary masks and integer label masks, with every value checked.

The official datasets' masks are known to be 0/255 (paanet_fast.data.common.read_mask); a folder of
someone's own masks may hold anything, so here a mask is read only when its values say what it is:

- binary: 0/1 or 0/255 (0/65535 in 16 bits); JPEG masks (Kvasir-SEG ships them) are thresholded
  at half their range, because JPEG blurs the edges into grey levels. Any other grey levels are an
  error: thresholding them would be a guess.
- labels (--classes N): integers 0 (background) to N, in a lossless format (not JPEG).

Colour masks whose channels are equal are read as grey; ones whose channels differ are an error.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import DatasetError, open_image

JPEG_SUFFIXES = (".jpg", ".jpeg")
# How each kind of binary mask was read: the words train's first lines print.
READ_AS_ZERO_ONE = "0/1"
READ_AS_ZERO_MAX = "0/255"
READ_AS_THRESHOLDED = "JPEG, thresholded at 128"
_LISTED_VALUES = 6


def _stored_values(path: Path) -> np.ndarray:
    """The mask's stored values as a 2-D integer array (palette indices for a palette image)."""
    image = open_image(path)
    if image.mode in ("1", "L", "P") or image.mode.startswith("I"):
        return np.asarray(image).astype(np.int64)
    channels = np.asarray(image.convert("RGB"))
    if (channels != channels[..., :1]).any():
        raise DatasetError(f"mask {path} is a colour image (its red, green and blue differ): masks must be grey "
                           "(binary 0/1 or 0/255, or labels 0..N)")
    return channels[..., 0].astype(np.int64)


def _value_list(values: np.ndarray) -> str:
    found = np.unique(values)
    listed = ", ".join(str(v) for v in found[:_LISTED_VALUES])
    return f"{len(found)} values ({listed}{', ...' if len(found) > _LISTED_VALUES else ''})"


def read_binary_mask(path: Path) -> tuple[np.ndarray, str]:
    """(mask (H, W) bool, how it was read: READ_AS_*) of a binary mask file; DatasetError otherwise."""
    if path.suffix.lower() in JPEG_SUFFIXES:
        grey = np.asarray(open_image(path).convert("L"))
        return grey > (0 if grey.max() <= 1 else 127), READ_AS_THRESHOLDED
    values = _stored_values(path)
    present = set(np.unique(values).tolist())
    if present <= {0, 1}:
        return values == 1, READ_AS_ZERO_ONE
    top = max(present)
    if top in (255, 65535) and present <= {0, top}:
        return values == top, READ_AS_ZERO_MAX
    raise DatasetError(f"mask {path} is neither 0/1 nor 0/255: read as grey levels it holds {_value_list(values)}; "
                       "a binary mask holds two values (label masks 0..N need --classes N)")


def read_label_mask(path: Path, classes: int) -> np.ndarray:
    """(H, W) int64 labels 0..classes of a label mask file; DatasetError for JPEG or a value above `classes`."""
    if path.suffix.lower() in JPEG_SUFFIXES:
        raise DatasetError(f"mask {path} is a JPEG: label masks must be lossless (PNG, TIFF or BMP), JPEG "
                           "changes the labels at every edge")
    labels = _stored_values(path)
    low, top = int(labels.min(initial=0)), int(labels.max(initial=0))
    if low < 0 or top > classes:
        where = f"the value {low}, below 0" if low < 0 else f"the value {top}, above --classes {classes}"
        raise DatasetError(f"mask {path} holds {where} (labels are 0 for background and 1..{classes}); "
                           f"it holds {_value_list(labels)}")
    return labels
