"""The paper's metrics against hand counts, including every empty-mask case."""
import math

import pytest
import torch

from paanet_fast.metrics import per_image_scores, summarize


def logits_of(mask: list[list[int]]) -> torch.Tensor:
    """Logits whose sigmoid is above 0.5 exactly where mask is 1 (values near the threshold included)."""
    m = torch.tensor(mask, dtype=torch.float32)
    return torch.where(m > 0, torch.full_like(m, 0.01), torch.full_like(m, -0.01))[None, None]


def target_of(mask: list[list[int]]) -> torch.Tensor:
    return torch.tensor(mask, dtype=torch.float32)[None, None]


def test_scores_equal_hand_counts():
    pred = [[1, 1, 0], [1, 0, 0]]
    truth = [[1, 1, 0], [0, 1, 0]]  # TP = 2, FP = 1, FN = 1
    s = per_image_scores(logits_of(pred), target_of(truth))
    assert s["dsc"].item() == pytest.approx(4 / 6)
    assert s["iou"].item() == pytest.approx(2 / 4)
    assert s["recall"].item() == pytest.approx(2 / 3)
    assert s["precision"].item() == pytest.approx(2 / 3)


def test_threshold_is_applied_to_probabilities():
    logits = torch.tensor([[[[math.log(0.7 / 0.3) - 1e-3, math.log(0.7 / 0.3) + 1e-3]]]])
    truth = torch.tensor([[[[1.0, 1.0]]]])
    assert per_image_scores(logits, truth, threshold=0.7)["recall"].item() == pytest.approx(0.5)
    assert per_image_scores(logits, truth)["recall"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("pred,truth,expected", [
    ([[0, 0]], [[0, 0]], {"dsc": 1, "iou": 1, "recall": 1, "precision": 1}),  # both empty: no error
    ([[1, 0]], [[0, 0]], {"dsc": 0, "iou": 0, "recall": 0, "precision": 0}),  # false alarm only
    ([[0, 0]], [[0, 1]], {"dsc": 0, "iou": 0, "recall": 0, "precision": 0}),  # missed everything
    ([[1, 1]], [[1, 1]], {"dsc": 1, "iou": 1, "recall": 1, "precision": 1}),
])
def test_empty_mask_conventions(pred, truth, expected):
    s = per_image_scores(logits_of(pred), target_of(truth))
    assert {k: v.item() for k, v in s.items()} == pytest.approx(expected)


def test_per_image_then_mean_and_std_over_images():
    pred = torch.cat([logits_of([[1, 1, 0, 0]]), logits_of([[1, 0, 0, 0]]), logits_of([[0, 0, 0, 0]])])
    truth = torch.cat([target_of([[1, 0, 0, 0]]), target_of([[1, 0, 0, 0]]), target_of([[0, 0, 0, 1]])])
    s = per_image_scores(pred, truth)
    dsc = [2 / 3, 1.0, 0.0]
    iou = [1 / 2, 1.0, 0.0]
    assert s["dsc"].tolist() == pytest.approx(dsc)
    summary = summarize(s)
    mean = sum(dsc) / 3
    assert summary["dsc"] == pytest.approx(mean)
    assert summary["dsc_std"] == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in dsc) / 3))
    assert summary["miou"] == pytest.approx(sum(iou) / 3)
    assert set(summary) == {"dsc", "miou", "recall", "precision", "dsc_std", "miou_std", "recall_std",
                            "precision_std"}


def test_multichannel_counts_pool_the_classes():
    pred = torch.cat([logits_of([[1, 0]]), logits_of([[1, 1]])], dim=1)
    truth = torch.cat([target_of([[1, 0]]), target_of([[0, 1]])], dim=1)  # TP 2, FP 1, FN 0
    assert per_image_scores(pred, truth)["dsc"].item() == pytest.approx(4 / 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="logits shape"):
        per_image_scores(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="no images"):
        summarize({k: torch.zeros(0) for k in ("dsc", "iou", "recall", "precision")})
