"""ResNet encoders from torchvision, returning the outputs of layer1..layer4 (strides 4, 8, 16, 32)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torchvision.models as tvm

_ENCODERS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V2),
}
ENCODER_NAMES = tuple(_ENCODERS)


def imagenet_weights_url(encoder_name: str) -> str:
    """Where torchvision downloads the ImageNet weights used for `encoder_name`."""
    return _ENCODERS[encoder_name][1].url


def _imagenet_state_dict(encoder_name: str) -> dict[str, torch.Tensor]:
    weights = _ENCODERS[encoder_name][1]
    try:
        return weights.get_state_dict(progress=True)
    except OSError as exc:  # URLError, socket errors, unreadable cache all land here
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise RuntimeError(
            f"could not load the ImageNet weights of {encoder_name} ({exc}). They are downloaded once from "
            f"{weights.url} and cached at {cache}. Offline, either copy that file there (or set TORCH_HOME to a "
            "folder that has hub/checkpoints/ with it), pass encoder_weights=<path to a state-dict file>, or "
            "pass encoder_weights=None to start from random weights.") from exc


def _file_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder_weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files: name the file
        raise RuntimeError(f"could not read encoder weights from {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Pretrained RGB filters for another channel count: summed for 1 channel, else cycled and rescaled."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


class ResNetEncoder(nn.Module):
    """torchvision ResNet trunk; forward returns [E1, E2, E3, E4] at strides 4, 8, 16, 32."""

    def __init__(self, name: str = "resnet50", weights: str | os.PathLike | None = "imagenet",
                 in_channels: int = 3) -> None:
        super().__init__()
        if name not in _ENCODERS:
            raise ValueError(f"encoder_name must be one of {ENCODER_NAMES}, got {name!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        net = _ENCODERS[name][0](weights=None)
        net.fc = nn.Identity()  # the classifier is never used
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if weights is not None:
            state = _imagenet_state_dict(name) if weights == "imagenet" else _file_state_dict(weights)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            if in_channels != 3 and "conv1.weight" in state:
                state["conv1.weight"] = _adapt_first_conv(state["conv1.weight"], in_channels)
            source = "ImageNet" if weights == "imagenet" else str(weights)
            try:
                missing, unexpected = net.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                raise RuntimeError(f"encoder weights from {source} do not fit {name}: {exc}") from exc
            if missing or unexpected:
                raise RuntimeError(f"encoder weights from {source} do not fit {name}: missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]}")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = tuple(_width(layer) for layer in self.layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


def _width(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
