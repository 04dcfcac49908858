"""PAANetLoss and metrics.per_image_scores take the same targets: one shape rule, values in [0, 1]."""
import pytest
import torch

from paanet_fast import PAANetLoss, metrics

gen = torch.Generator().manual_seed(7)
LOGITS = torch.randn(3, 1, 9, 13, generator=gen, dtype=torch.float64)
MASK = (torch.rand(3, 1, 9, 13, generator=gen) > 0.6).double()


def loss(logits, target):
    return PAANetLoss()(logits, target)


def scores(logits, target):
    return metrics.per_image_scores(logits, target)


BOTH = pytest.mark.parametrize("fn", [loss, scores], ids=["loss", "metrics"])


@BOTH
def test_one_class_mask_without_channel_axis_gives_the_same_result(fn):
    with_channel, without = fn(LOGITS, MASK), fn(LOGITS, MASK[:, 0])
    if isinstance(with_channel, dict):
        assert all(torch.equal(with_channel[k], without[k]) for k in with_channel)
    else:
        assert torch.equal(with_channel, without)


@BOTH
@pytest.mark.parametrize("logits_shape, target_shape", [
    ((3, 1, 9, 13), (3, 1, 9, 12)),   # a different size
    ((3, 1, 9, 13), (1, 9, 13)),      # a different batch
    ((3, 2, 9, 13), (3, 9, 13)),      # no channel axis for two classes: which class would it be?
    ((3, 1, 9, 13), (3, 9, 13, 1)),   # channels last
])
def test_shapes_that_do_not_fit_are_rejected_by_both(fn, logits_shape, target_shape):
    with pytest.raises(ValueError, match=r"target shape .* does not match the logits shape .*\(B, H, W\) for one-class"):
        fn(torch.randn(logits_shape), torch.rand(target_shape))


@BOTH
@pytest.mark.parametrize("target, values", [
    ((MASK * 255).to(torch.uint8), "from 0 to 255; divide a 0..255 mask by 255"),
    (MASK * 255, "from 0 to 255; divide a 0..255 mask by 255"),
    (MASK - 0.5, "from -0.5 to 0.5"),
    (torch.where(MASK > 0, torch.nan, 0.25), "from nan to nan"),
])
def test_values_outside_zero_one_are_rejected(fn, target, values):
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\].*" + values):
        fn(LOGITS, target)


@BOTH
def test_bool_integer_and_soft_targets_in_range_are_accepted(fn):
    fn(LOGITS, MASK > 0.5)
    fn(LOGITS, MASK.to(torch.uint8))
    fn(LOGITS, torch.rand(MASK.shape, generator=gen, dtype=torch.float64))


def test_the_loss_of_a_bool_mask_equals_that_of_the_float_mask():
    assert torch.equal(loss(LOGITS, MASK > 0.5), loss(LOGITS, MASK))


def test_a_non_tensor_target_is_named():
    with pytest.raises(TypeError, match="PAANetLoss: target must be a tensor, got list"):
        loss(LOGITS, MASK.tolist())


@BOTH
def test_a_target_on_another_device_is_named(fn):
    with pytest.raises(ValueError, match="target is on cpu but the logits are on meta"):
        fn(LOGITS.to("meta"), MASK)
