"""The torch Dataset that turns a source's samples into normalised tensors."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np
import torch

# ImageNet statistics: the encoders are torchvision ResNets, possibly ImageNet-pretrained.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Source(Protocol):
    """What a dataset module provides: sorted ids and a loader for one sample."""

    name: str
    official_split: dict[str, list[str]] | None  # {"train", "test"} lists, or all three
    classes: int
    class_names: list[str]  # one per mask channel

    def ids(self) -> list[str]: ...

    def load(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, mask (H, W) bool, or (H, W, classes) bool for classes > 1)."""


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, normalised with the ImageNet mean and std."""
    tensor = torch.tensor(image).permute(2, 0, 1).float().div_(255)  # a copy: `image` may be read-only
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of image_to_tensor: (3, H, W) normalised -> (H, W, 3) uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    image = (tensor.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round()
    return image.permute(1, 2, 0).to(torch.uint8).numpy()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch (independent of worker and batch layout)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SegmentationDataset(torch.utils.data.Dataset):
    """Samples `ids` of `source`, transformed; items are dicts:

    image (3, S, S) float32 normalised, mask (classes, S, S) float32 in {0, 1}, id str.
    """

    def __init__(self, source: Source, ids: Sequence[str],
                 transform: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                 seed: int = 0) -> None:
        self.source = source
        self.ids = list(ids)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentations of `epoch` (call before creating the epoch's DataLoader iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        sample_id = self.ids[index]
        image, mask = self.source.load(sample_id)
        image, mask = self.transform(image, mask, sample_seed(self.seed, self.epoch, index))
        channels = mask[None] if mask.ndim == 2 else mask.transpose(2, 0, 1)
        return {"image": image_to_tensor(image), "mask": torch.from_numpy(channels).float(), "id": sample_id}
