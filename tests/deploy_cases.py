"""A small checkpoint and image files for the predict and export tests (no training run needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from paanet_fast import PAANet
from paanet_fast.checkpoint import save_checkpoint

IMAGE_SIZE = 64
# Both operators, in a forward and a reverse block, at a fraction of the default's export time.
SMALL_CONFIG = dict(encoder_name="resnet18", num_blocks=2, num_layers=1, growth=8)


def small_model(seed: int = 0) -> PAANet:
    """A PAANet in eval mode with batch-norm statistics from random images, and a head bias that puts
    the logits of random images around 0, so that its masks have both values."""
    torch.manual_seed(seed)
    model = PAANet(**SMALL_CONFIG, encoder_weights=None, backend="cpp")
    images = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        model.train()(images)
        model.eval()
        model.segmentation_head.bias -= model(images).median()
    return model


def write_checkpoint(path: Path, model: PAANet) -> Path:
    """A best.pt-like checkpoint of `model` for images of IMAGE_SIZE."""
    save_checkpoint(path, {"model": model.state_dict(), "model_config": {**model.config, "backend": "auto"},
                           "config": {"image_size": IMAGE_SIZE, "dataset": "synthetic"}, "epoch": 1})
    return path


def write_images(folder: Path, shapes: dict[str, tuple[int, int]], seed: int = 0, suffix: str = ".png") -> list[Path]:
    """Smooth random RGB images (blobs, not noise: the resize to IMAGE_SIZE keeps their structure)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (height, width) in shapes.items():
        coarse = rng.integers(0, 256, size=(max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
        paths.append(folder / f"{name}{suffix}")
        image.save(paths[-1])
    return paths

