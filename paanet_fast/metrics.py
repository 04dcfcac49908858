"""The paper's evaluation protocol: per image at threshold 0.5, DSC, IoU, recall and precision,
then mean and standard deviation over images.

Empty masks: every score is a ratio whose denominator can be zero (no foreground in the target
and/or the prediction). A 0/0 ratio counts as 1 when the prediction has no error at all (both
masks empty) and as 0 otherwise; e.g. an empty target with a non-empty prediction scores 0 on
every metric, and an empty target with an empty prediction scores 1 on every metric.
"""
from __future__ import annotations

import torch

from .targets import check_target

SCORES = ("dsc", "iou", "recall", "precision")
SUMMARY_KEYS = {"dsc": "dsc", "iou": "miou", "recall": "recall", "precision": "precision"}


def _ratio(num: torch.Tensor, den: torch.Tensor, perfect: torch.Tensor) -> torch.Tensor:
    undefined = den == 0
    value = num / torch.where(undefined, torch.ones_like(den), den)
    return torch.where(undefined, perfect.to(value.dtype), value)


def _scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four scores from bool prediction and truth, counting over their last axis."""
    tp = (pred & truth).sum(-1).double()
    fp = (pred & ~truth).sum(-1).double()
    fn = (~pred & truth).sum(-1).double()
    perfect = (fp + fn) == 0
    return {
        "dsc": _ratio(2 * tp, 2 * tp + fp + fn, perfect),
        "iou": _ratio(tp, tp + fp + fn, perfect),
        "recall": _ratio(tp, tp + fn, perfect),
        "precision": _ratio(tp, tp + fp, perfect),
    }


def per_image_scores(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """Scores of each image. logits (B, C, H, W); target the same shape, or (B, H, W) when C is 1,
    with values in [0, 1] (the rule PAANetLoss shares, paanet_fast.targets); foreground is > 0.5.

    The prediction is sigmoid(logits) > threshold; counts are taken over all classes of an image.
    Returns {"dsc", "iou", "recall", "precision"}, each a float64 tensor of shape (B,).
    """
    target = check_target(logits, target, "per_image_scores")
    return _scores((torch.sigmoid(logits.double()) > threshold).flatten(1), (target > 0.5).flatten(1))


def per_class_scores(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """Scores of each image and class, each class scored on its own (multi-label: a pixel may be in several).

    Same inputs as per_image_scores; returns the same keys, each float64 of shape (B, C). With C = 1
    it equals per_image_scores with a class axis added.
    """
    target = check_target(logits, target, "per_class_scores")
    return _scores((torch.sigmoid(logits.double()) > threshold).flatten(2), (target > 0.5).flatten(2))


def summarize(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean and population standard deviation over images of per-image scores (N,) (possibly concatenated
    over batches). Keys: dsc, miou, recall, precision and the same with a "_std" suffix.

    For per-class scores (N, C), summarize each column (`scores[name][:, c]`) for one class, and
    their mean over classes per image (`.mean(1)`) for the mean of the classes."""
    summary: dict[str, float] = {}
    for name, key in SUMMARY_KEYS.items():
        values = scores[name].double()
        if values.numel() == 0:
            raise ValueError("summarize: no images were scored")
        summary[key] = values.mean().item()
        summary[f"{key}_std"] = values.std(unbiased=False).item()
    return summary
