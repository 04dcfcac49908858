"""The one rule for segmentation targets, shared by PAANetLoss and metrics.per_image_scores.

A target has the logits' shape, (B, C, H, W); for one-class logits (B, 1, H, W) a (B, H, W)
mask is accepted too. Its values lie in [0, 1]: a 0/1 mask, probabilities (soft labels) or a
bool mask. A mask stored as 0..255 is an error, not something to guess about.
"""
from __future__ import annotations

import torch


def check_target(logits: torch.Tensor, target: torch.Tensor, who: str) -> torch.Tensor:
    """`target` with the logits' shape (a channel axis added to a (B, H, W) mask of one-class logits).

    Raises ValueError naming `who` for a shape that does not fit, another device, or values outside
    [0, 1]. The range check reads two numbers back from the target's device (one synchronisation on
    a GPU, none for bool masks, which cannot be out of range).
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{who}: target must be a tensor, got {type(target).__name__}")
    if logits.dim() == 4 and logits.shape[1] == 1 and target.shape == logits.shape[:1] + logits.shape[2:]:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(f"{who}: target shape {tuple(target.shape)} does not match the logits shape "
                         f"{tuple(logits.shape)}; a target is (B, C, H, W) like the logits, or (B, H, W) for "
                         f"one-class logits")
    if target.device != logits.device:
        raise ValueError(f"{who}: target is on {target.device} but the logits are on {logits.device}")
    if target.dtype != torch.bool and target.numel() > 0:
        low, high = torch.stack(torch.aminmax(target.detach())).tolist()
        if not (0 <= low and high <= 1):  # also false for NaN
            raise ValueError(f"{who}: target values must lie in [0, 1] (a 0/1 mask or probabilities), got values "
                             f"from {low:g} to {high:g}" + ("; divide a 0..255 mask by 255" if high > 1 else ""))
    return target
