"""Predicting masks for image files: a mask PNG and an overlay PNG per image, at the image's own size."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import atomic_path
from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import DatasetError, image_to_tensor
from .data.common import IMAGE_SUFFIXES, read_rgb, visible_entries
from .runtime import autocast, pick_device
from .visualize import overlay


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively) in named folders; names must be unique."""
    files: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = [p for p in visible_entries(entry) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise DatasetError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {entry}")
            files += found
        elif entry.is_file():
            files.append(entry)
        else:
            raise DatasetError(f"input {entry} does not exist")
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise DatasetError(f"inputs {by_stem[path.stem]} and {path} would both be written as {path.stem}.png")
        by_stem[path.stem] = path
    return files


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@torch.no_grad()
def predict(checkpoint: str | Path, inputs: Sequence[str | Path], out: str | Path, backend: str = "auto",
            device: str = "auto", amp: str = "none", threshold: float = 0.5) -> list[Path]:
    """Write out/masks/<name>.png (0 or 255) and out/overlays/<name>.png for every input image.

    Each image is resized to the training size for the model, and the logits are resized back
    (bilinear) to the image's size before thresholding sigmoid(logits) at `threshold`.
    Returns the mask paths.
    """
    files = collect_images(inputs)
    state = load_checkpoint(Path(checkpoint))
    size = state["config"]["image_size"]
    torch_device = pick_device(device)
    model = model_from_checkpoint(state, backend).to(torch_device)
    from .data.transforms import PairTransform  # albumentations: only imported where used

    resize = PairTransform(size, train=False)
    out = Path(out)
    for folder in ("masks", "overlays"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        image = read_rgb(path)
        resized, _ = resize(image, np.zeros(image.shape[:2], dtype=bool), seed=0)
        with autocast(torch_device, amp):
            logits = model(image_to_tensor(resized)[None].to(torch_device))
        logits = F.interpolate(logits.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
        mask = (torch.sigmoid(logits[0, 0]) > threshold).cpu().numpy()
        _save_png(mask.astype(np.uint8) * 255, out / "masks" / f"{path.stem}.png")
        _save_png(overlay(image, mask), out / "overlays" / f"{path.stem}.png")
        written.append(out / "masks" / f"{path.stem}.png")
    print(f"wrote {len(written)} masks to {out / 'masks'} and overlays to {out / 'overlays'}")
    return written
