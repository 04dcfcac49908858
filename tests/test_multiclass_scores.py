"""Multi-class scoring and label masks (issue 25): each class scored on its own, labels from probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from paanet_fast.evaluate import format_table
from paanet_fast.metrics import per_class_scores, per_image_scores
from paanet_fast.predict import label_mask


def test_each_class_scores_as_a_one_class_problem_of_its_own():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 7, 5, generator=generator, dtype=torch.float64)
    target = (torch.rand(3, 4, 7, 5, generator=generator) > 0.6).double()
    target[1, 2] = 0  # a class absent from an image: the paper's 0/0 rule applies per class
    logits[1, 2] = -5.0
    scores = per_class_scores(logits, target)
    for c in range(4):
        alone = per_image_scores(logits[:, c:c + 1], target[:, c:c + 1])
        for name, values in scores.items():
            assert values.shape == (3, 4) and values.dtype == torch.float64
            torch.testing.assert_close(values[:, c], alone[name], rtol=0, atol=0)
    assert scores["dsc"][1, 2].item() == 1.0


def test_one_class_per_class_scores_are_the_per_image_scores():
    logits = torch.randn(5, 1, 9, 11, generator=torch.Generator().manual_seed(0))
    target = torch.rand(5, 9, 11, generator=torch.Generator().manual_seed(1)) > 0.5
    pooled = per_image_scores(logits, target)
    for name, values in per_class_scores(logits, target).items():
        torch.testing.assert_close(values[:, 0], pooled[name], rtol=0, atol=0)


def test_label_mask_is_the_most_probable_class_above_the_threshold():
    probabilities = torch.tensor([[[0.9, 0.2, 0.3]], [[0.6, 0.7, 0.1]], [[0.1, 0.65, 0.45]]])  # (C=3, H=1, W=3)
    np.testing.assert_array_equal(label_mask(probabilities, 0.5), [[1, 2, 0]])
    np.testing.assert_array_equal(label_mask(probabilities, 0.68), [[1, 2, 0]])
    np.testing.assert_array_equal(label_mask(probabilities, 0.95), [[0, 0, 0]])
    assert label_mask(probabilities, 0.5).dtype == np.uint8


def test_the_multi_class_table_has_a_column_per_class_and_their_mean():
    summary = {k: v for key in ("dsc", "miou", "recall", "precision") for k, v in ((key, 0.5), (key + "_std", 0.25))}
    first = {**summary, "dsc": 0.75}
    table = format_table({**summary, "dsc": 0.625}, "title", {"polyp": first, "tool": summary}).splitlines()
    assert table[1].split() == ["metric", "polyp", "tool", "mean", "of", "classes"]
    assert table[2].split() == ["DSC", "0.7500", "±", "0.2500", "0.5000", "±", "0.2500", "0.6250", "±", "0.2500"]
    assert format_table(summary, "title").splitlines()[1].split() == ["metric", "mean", "std"]


def test_a_target_without_every_class_channel_is_refused():
    with pytest.raises(ValueError, match="per_class_scores: target shape"):
        per_class_scores(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3))
