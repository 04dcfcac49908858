"""PAANet's deep-supervision loss: BCE-with-logits + soft IoU, or the user's own loss, on every output (design 1.6)."""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import PAANetOutput
from .targets import check_target

GROUPS = ("final", "aux", "gam")
DEFAULT_SMOOTH = 1.0
# (logits (B, C, H, W), target (B, C, H, W) float in [0, 1]) -> scalar tensor
HeadLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def boundary_weights(target: torch.Tensor, kernel_size: int = 31, strength: float = 5.0) -> torch.Tensor:
    """PraNet-style pixel weights 1 + strength * |local mean of the mask - mask|: heavy near edges."""
    local = F.avg_pool2d(target, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)
    return 1 + strength * (local - target).abs()


def bce_iou_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                 smooth: float = 1.0) -> torch.Tensor:
    """Mean over images and channels of BCE-with-logits + (1 - soft IoU), optionally pixel-weighted.

    logits, target (and weight): (B, C, H, W). Computed in float32 from logits, so fp16/bf16 logits
    neither overflow nor saturate the sigmoid.
    """
    logits = logits.float()
    target = target.float()
    weight = None if weight is None else weight.float()

    def pixel_sum(values: torch.Tensor) -> torch.Tensor:
        # Unweighted, no map of ones: each weighting multiply would keep a full-resolution map for backward.
        return (values if weight is None else weight * values).sum(dim=(2, 3))

    pixels = logits.shape[2] * logits.shape[3] if weight is None else weight.sum(dim=(2, 3))
    bce = pixel_sum(F.binary_cross_entropy_with_logits(logits, target, reduction="none")) / pixels
    prob = torch.sigmoid(logits)
    inter = pixel_sum(prob * target)
    union = pixel_sum(prob + target) - inter
    iou = 1 - (inter + smooth) / (union + smooth)
    return (bce + iou).mean()


class PAANetLoss(nn.Module):
    """Sum of one loss over the final logits, the 3 aux logits and every GAM's logits.

    Args:
        loss: the loss of every head, any callable (logits, target) -> scalar tensor, e.g.
            segmentation_models_pytorch's DiceLoss("binary"); it gets float32 logits
            (B, C, H, W) and the float target (B, C, H, W). Default: bce_iou_loss (BCE-with-logits
            + soft IoU, as in the paper).
        weights: optional per-group weights {"final": w, "aux": w, "gam": w} (default 1 each:
            every term equally weighted, as in the paper).
        boundary_weighted: weight pixels near mask edges more (PraNet's structure loss, computed
            correctly from logits); for the default loss only.
        smooth: additive smoothing of the soft IoU; for the default loss only.

    forward(output, target): output is a PAANetOutput (or plain logits (B, C, H, W)); target is
    (B, C, H, W), or (B, H, W) when C is 1, with values in [0, 1] (paanet_fast.targets: the rule the
    metrics share; other shapes or values raise ValueError). GAMs have one channel: their logits
    (B, 1, H, W) are supervised by the union of the classes, so `loss` must take one-channel
    binary inputs too. Returns a scalar.
    """

    def __init__(self, loss: HeadLoss | None = None, weights: Mapping[str, float] | None = None,
                 boundary_weighted: bool = False, smooth: float = DEFAULT_SMOOTH) -> None:
        super().__init__()
        if loss is not None and not callable(loss):
            raise ValueError(f"PAANetLoss loss: expected a callable (logits, target) -> scalar, "
                             f"got {type(loss).__name__}")
        if loss is not None and (boundary_weighted or smooth != DEFAULT_SMOOTH):
            raise ValueError("PAANetLoss: boundary_weighted and smooth configure the default BCE + soft IoU loss; "
                             "with your own `loss`, configure that instead")
        weights = dict(weights or {})
        unknown = set(weights) - set(GROUPS)
        if unknown:
            raise ValueError(f"PAANetLoss weights: unknown groups {sorted(unknown)}; expected {GROUPS}")
        self.loss = loss  # an nn.Module loss becomes a submodule: .to() and state_dict() reach it
        self.weights = {g: float(weights.get(g, 1.0)) for g in GROUPS}
        self.boundary_weighted = boundary_weighted
        self.smooth = smooth

    def _term(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss is not None:
            return self.loss(logits.float(), target)
        weight = boundary_weights(target) if self.boundary_weighted else None
        return bce_iou_loss(logits, target, weight, self.smooth)

    def forward(self, output: PAANetOutput | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            output = PAANetOutput(output, [], [])
        target = check_target(output.logits, target, "PAANetLoss").float()
        gam_target = target.amax(dim=1, keepdim=True)
        loss = self.weights["final"] * self._term(output.logits, target)
        for aux in output.aux_logits:
            loss = loss + self.weights["aux"] * self._term(aux, target)
        for z in output.gam_logits:
            loss = loss + self.weights["gam"] * self._term(z, gam_target)
        return loss
