"""PAANetLoss against values computed by hand with the math module."""
import math

import pytest
import torch

from paanet_fast import PAANetLoss, PAANetOutput
from paanet_fast.losses import bce_iou_loss, boundary_weights


def hand_bce_iou(logits: list[float], target: list[float], weight: list[float] | None = None) -> float:
    """One image, one channel, written out from the definitions."""
    weight = weight or [1.0] * len(logits)
    bce = sum(w * (-(t * math.log(1 / (1 + math.exp(-z))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-z)))))
              for z, t, w in zip(logits, target, weight)) / sum(weight)
    p = [1 / (1 + math.exp(-z)) for z in logits]
    inter = sum(w * pi * t for pi, t, w in zip(p, target, weight))
    union = sum(w * (pi + t) for pi, t, w in zip(p, target, weight)) - inter
    return bce + 1 - (inter + 1) / (union + 1)


def as_map(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_single_term_matches_hand_computation():
    z, t = [0.0, 2.0, -1.5, 0.3], [1.0, 0.0, 0.0, 1.0]
    assert bce_iou_loss(as_map(z), as_map(t)).item() == pytest.approx(hand_bce_iou(z, t), rel=1e-6)


def test_empty_target_is_finite_and_hand_computed():
    z, t = [-3.0, 1.0, 0.5], [0.0, 0.0, 0.0]
    value = bce_iou_loss(as_map(z), as_map(t)).item()
    assert math.isfinite(value) and value == pytest.approx(hand_bce_iou(z, t), rel=1e-6)


def test_loss_sums_final_aux_and_every_gam_term_with_group_weights():
    t = [1.0, 0.0, 1.0]
    final, aux, gams = [0.2, -0.4, 1.1], [[0.5, 0.5, -2.0], [1.0, -1.0, 0.0], [3.0, 0.1, 0.2]], \
        [[0.1 * i, -0.2 * i, 0.3] for i in range(6)]
    out = PAANetOutput(as_map(final), [as_map(a) for a in aux], [as_map(g) for g in gams])
    expected = hand_bce_iou(final, t) + sum(hand_bce_iou(a, t) for a in aux) + sum(hand_bce_iou(g, t) for g in gams)
    assert PAANetLoss()(out, as_map(t)).item() == pytest.approx(expected, rel=1e-6)
    weighted = (2 * hand_bce_iou(final, t) + 0.5 * sum(hand_bce_iou(a, t) for a in aux)
                + 0 * sum(hand_bce_iou(g, t) for g in gams))
    loss = PAANetLoss(weights={"final": 2, "aux": 0.5, "gam": 0})(out, as_map(t))
    assert loss.item() == pytest.approx(weighted, rel=1e-6)
    # Plain logits and (B, H, W) targets are accepted too.
    assert PAANetLoss()(as_map(final), as_map(t)[:, 0]).item() == pytest.approx(hand_bce_iou(final, t), rel=1e-6)


def test_multiclass_gams_are_supervised_by_the_union_of_classes():
    logits = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    target = (torch.rand(2, 3, 5, 7) > 0.7).double()
    gam = torch.randn(2, 1, 5, 7, dtype=torch.float64)
    loss = PAANetLoss()(PAANetOutput(logits, [], [gam]), target)
    expected = bce_iou_loss(logits, target) + bce_iou_loss(gam, target.amax(1, keepdim=True))
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_are_safe(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(2, 1, 8, 9) * 30).to(dtype)  # far beyond where a naive sigmoid/log saturates
    target = (torch.rand(2, 1, 8, 9) > 0.5).to(dtype)
    logits.requires_grad_(True)
    loss = PAANetLoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    reference = PAANetLoss()(logits.detach().double(), target.double())
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_boundary_weighted_variant_matches_hand_computation():
    target = torch.zeros(1, 1, 1, 40, dtype=torch.float64)
    target[..., 10:25] = 1
    w = boundary_weights(target, kernel_size=31)
    # Far from any edge on an all-equal row the weight is 1; right at an edge it is larger.
    row = target[0, 0, 0].tolist()
    for x in (12, 24, 9, 25):
        lo, hi = max(0, x - 15), min(40, x + 16)
        local = sum(row[lo:hi]) / (hi - lo)
        assert w[0, 0, 0, x].item() == pytest.approx(1 + 5 * abs(local - row[x]), rel=1e-12)
    z = torch.randn(1, 1, 1, 40, dtype=torch.float64)
    value = PAANetLoss(boundary_weighted=True)(z, target).item()
    assert value == pytest.approx(hand_bce_iou(z.flatten().tolist(), row, w.flatten().tolist()), rel=1e-6)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="does not match the logits"):
        PAANetLoss()(torch.randn(1, 1, 4, 4), torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="unknown groups"):
        PAANetLoss(weights={"finals": 1.0})


class RecordingLoss:
    """A head loss that records what it was given and returns a different value for every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls.append((logits, target))
        return (logits - target).abs().mean() * len(self.calls)


def test_a_loss_of_ones_own_is_applied_to_every_head_with_its_target_and_group_weight():
    torch.manual_seed(0)
    target = (torch.rand(2, 2, 9, 11) > 0.6).float()
    out = PAANetOutput(torch.randn(2, 2, 9, 11), [torch.randn(2, 2, 9, 11) for _ in range(3)],
                       [torch.randn(2, 1, 9, 11) for _ in range(6)])
    recorder = RecordingLoss()
    weights = {"final": 2.0, "aux": 0.5, "gam": 0.25}
    loss = PAANetLoss(loss=recorder, weights=weights)(out, target)
    union = target.amax(dim=1, keepdim=True)
    expected_calls = [(out.logits, target), *((a, target) for a in out.aux_logits),
                      *((g, union) for g in out.gam_logits)]
    assert len(recorder.calls) == len(expected_calls) == 10
    for (logits, given_target), (head, head_target) in zip(recorder.calls, expected_calls):
        assert torch.equal(logits, head) and torch.equal(given_target, head_target)
    groups = ["final"] + ["aux"] * 3 + ["gam"] * 6
    terms = [(head - head_target).abs().mean() * (i + 1) for i, (head, head_target) in enumerate(expected_calls)]
    assert torch.allclose(loss, sum(weights[g] * t for g, t in zip(groups, terms)))


def test_a_loss_of_ones_own_trains_every_head():
    torch.manual_seed(1)
    target = (torch.rand(1, 1, 6, 5) > 0.5).float()
    heads = [torch.randn(1, 1, 6, 5, requires_grad=True) for _ in range(1 + 3 + 6)]
    out = PAANetOutput(heads[0], heads[1:4], heads[4:])
    PAANetLoss(loss=lambda z, t: ((torch.sigmoid(z) - t) ** 2).mean())(out, target).backward()
    for head in heads:
        expected, = torch.autograd.grad(((torch.sigmoid(head) - target) ** 2).mean(), head)
        assert torch.allclose(head.grad, expected)


def test_smp_dice_loss_on_every_head_of_a_paanet():
    smp = pytest.importorskip("segmentation_models_pytorch",
                              reason='needs the "encoders" extra (scripts/setup.sh installs it, so CI runs these)')
    from paanet_fast import PAANet

    torch.manual_seed(2)
    model = PAANet("resnet18", encoder_weights=None, growth=8, num_layers=1, backend="cpp")
    x, mask = torch.randn(2, 3, 40, 48), (torch.rand(2, 1, 40, 48) > 0.5).float()
    out = model(x, return_aux=True)
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    loss = PAANetLoss(loss=dice)(out, mask)
    expected = dice(out.logits, mask) + sum(dice(a, mask) for a in out.aux_logits) \
        + sum(dice(g, mask) for g in out.gam_logits)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in model.aux_heads.parameters())
    assert all(block.gam_convs[0].weight.grad.abs().sum() > 0 for block in model.decoder.blocks)


@pytest.mark.parametrize("kwargs", [dict(boundary_weighted=True), dict(smooth=0.5)])
def test_options_of_the_default_loss_are_refused_with_ones_own(kwargs):
    with pytest.raises(ValueError, match="configure the default BCE"):
        PAANetLoss(loss=lambda z, t: z.mean(), **kwargs)
    with pytest.raises(ValueError, match="expected a callable"):
        PAANetLoss(loss="dice")
