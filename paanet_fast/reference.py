"""The two PAANet operators written literally in PyTorch: the ground truth for every other backend.

Kept deliberately naive (it materialises the full-resolution concatenation), see design section 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mini_decoder(features: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Z = conv3x3(concat(upsample(F_v, size))) + b; returns (Z, sigmoid(Z)), each (B, 1, H, W)."""
    upsampled = [F.interpolate(f, size=tuple(size), mode="bilinear", align_corners=False) for f in features]
    x = torch.cat(upsampled, dim=1)
    # float32 parameters beside half-precision features: computed in the features' dtype, as autocast does.
    logits = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1)
    return logits, torch.sigmoid(logits)


def gam_multiply(features: list[torch.Tensor], gam: torch.Tensor, reverse: bool = False) -> list[torch.Tensor]:
    """P_v = F_v * a_v, a_v = avgpool(G) to F_v's size (1 - that when reverse)."""
    outputs = []
    for f in features:
        window = (gam.shape[-2] // f.shape[-2], gam.shape[-1] // f.shape[-1])
        pooled = F.avg_pool2d(gam, kernel_size=window)
        outputs.append(f * (1 - pooled if reverse else pooled))
    return outputs
