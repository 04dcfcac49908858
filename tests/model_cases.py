"""Helpers shared by the whole-model tests: one training step's outputs and gradients, and their comparison."""
from __future__ import annotations

import torch

from paanet_fast import PAANet, PAANetLoss

TOLERANCES = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}

# In float32, two correct implementations of a training step can disagree by more than rounding at a
# few gradient elements: where a ReLU's input (or a max-pool's near-tie) lies within float32's
# rounding of its kink, one of them goes the other way, and the gradient through it changes by a
# finite amount. Measured on tu-resnet18 with test_model_encoders' float32 problem (2026-12-04, an
# AVX2 CPU): perturbing the input by one part in a million moves the float64 reference's gradient of
# decoder.blocks.1.convs.2.2.0.weight by 8e-4 of its largest element at 5 of its 10368 elements, and
# the float32 steps land on either side by thread count and instruction set (one thread: the cpp and
# portable backends off the float64 value by that much, the reference not; two threads: cpp alone; on
# the AVX-512 machines of earlier runs the tests passed). So in float32 a tensor may hold a few such
# elements (at most KINK_FRACTION of it, at least one), each within KINK_BOUND of the tensor's largest
# gradient; float64 allows none.
KINK_FRACTION = 1e-3
KINK_BOUND = 1e-2


def assert_close_but_kinks(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float,
                           name: str) -> None:
    """Elementwise within atol + rtol |expected|, except at most KINK_FRACTION of the elements (one at
    least), which stay within KINK_BOUND of expected's largest magnitude."""
    error = (actual - expected).abs()
    outside = ~(error <= atol + rtol * expected.abs())  # NaN counts as outside
    if not outside.any():
        return
    allowed = max(1, int(KINK_FRACTION * expected.numel()))
    bound = KINK_BOUND * expected.abs().max().item()
    worst = error[outside].max().item()
    assert outside.sum().item() <= allowed and worst <= bound, (
        f"grad of {name}: {outside.sum().item()} of {expected.numel()} elements outside the float32 tolerance "
        f"(at most {allowed} allowed, as flips at a kink), the largest error {worst:.3g} (at most {bound:.3g})")


def outputs_and_grads(net: PAANet, x: torch.Tensor, target: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
    """Logits, deep-supervision and GAM logits, and every parameter's gradient of PAANetLoss."""
    net.zero_grad(set_to_none=True)
    out = net(x, return_aux=True)
    PAANetLoss()(out, target).backward()
    tensors = [out.logits, *out.aux_logits, *out.gam_logits]
    return [t.detach() for t in tensors], {n: p.grad for n, p in net.named_parameters()}


def assert_same_step(actual: tuple[list[torch.Tensor], dict], expected: tuple[list[torch.Tensor], dict],
                     dtype: torch.dtype) -> None:
    """Outputs within TOLERANCES[dtype]; gradients too, the absolute part scaled by the gradient's size,
    and in float32 but for a few elements flipped at a kink (KINK_FRACTION).

    A parameter the reference leaves without a gradient (some smp encoders keep modules their
    forward never reaches) must have none in `actual` either.
    """
    (out, grads), (ref_out, ref_grads) = actual, expected
    assert len(out) == len(ref_out)
    for i, (a, b) in enumerate(zip(out, ref_out)):
        torch.testing.assert_close(a, b, **TOLERANCES[dtype], msg=lambda m: f"output {i}: {m}")
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        if g is None:
            assert grads[name] is None, f"{name} has a gradient where the reference has none"
            continue
        scale = g.abs().max().item()
        rtol, atol = TOLERANCES[dtype]["rtol"], TOLERANCES[dtype]["atol"] + TOLERANCES[dtype]["rtol"] * scale
        if dtype == torch.float32:
            assert grads[name] is not None and grads[name].dtype == g.dtype and grads[name].shape == g.shape, name
            assert_close_but_kinks(grads[name], g, rtol, atol, name)
        else:
            torch.testing.assert_close(grads[name], g, rtol=rtol, atol=atol, msg=lambda m: f"grad of {name}: {m}")
