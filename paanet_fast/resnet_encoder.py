"""torchvision ResNet encoders (the paper's, and the default): no dependency beyond torchvision."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torchvision.models as tvm

from .encoder_weights import EncoderWeights, load_weights, read_state_dict, weights_file

_RESNETS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V2),
}
RESNET_NAMES = tuple(_RESNETS)


def imagenet_weights_url(encoder_name: str) -> str:
    """Where torchvision downloads the ImageNet weights used for `encoder_name`."""
    return _RESNETS[encoder_name][1].url


def _imagenet_state_dict(encoder_name: str) -> dict[str, torch.Tensor]:
    weights = _RESNETS[encoder_name][1]
    try:
        return weights.get_state_dict(progress=True)
    except OSError as exc:  # URLError, socket errors, unreadable cache all land here
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise RuntimeError(
            f"could not load the ImageNet weights of {encoder_name} ({exc}). They are downloaded once from "
            f"{weights.url} and cached at {cache}. Offline, either copy that file there (or set TORCH_HOME to a "
            "folder that has hub/checkpoints/ with it), pass encoder_weights=<path to a state-dict file>, or "
            "pass encoder_weights=None to start from random weights.") from exc


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Pretrained RGB filters for another channel count: summed for 1 channel, else cycled and rescaled."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


class ResNetEncoder(nn.Module):
    """torchvision ResNet trunk with smp's encoder interface.

    forward(x: (B, in_channels, H, W)) returns smp's feature list: [x, stem, layer1, layer2, layer3,
    layer4] at strides 1, 2, 4, 8, 16, 32; `out_channels` gives their channel counts.
    `weights`: "imagenet" (torchvision download, cached), a path to a torchvision state-dict file
    (3-channel filters are adapted to `in_channels`), or None for random weights.
    """

    def __init__(self, name: str = "resnet50", weights: EncoderWeights = "imagenet", in_channels: int = 3) -> None:
        super().__init__()
        path = weights_file(weights, ("imagenet",), name)
        net = _RESNETS[name][0](weights=None)
        net.fc = nn.Identity()  # the classifier is never used
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if weights is not None:
            state = _imagenet_state_dict(name) if path is None else read_state_dict(path)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            if in_channels != 3 and "conv1.weight" in state:
                state["conv1.weight"] = _adapt_first_conv(state["conv1.weight"], in_channels)
            load_weights(net, state, "ImageNet" if path is None else str(path), name)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = (in_channels, net.conv1.out_channels, *(_width(layer) for layer in self.layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x, self.stem(x)]
        x = self.pool(features[-1])
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


def _width(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
