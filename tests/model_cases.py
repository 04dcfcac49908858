"""Helpers shared by the whole-model tests: one training step's outputs and gradients, and their comparison."""
from __future__ import annotations

import torch

from paanet_fast import PAANet, PAANetLoss

TOLERANCES = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def outputs_and_grads(net: PAANet, x: torch.Tensor, target: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
    """Logits, deep-supervision and GAM logits, and every parameter's gradient of PAANetLoss."""
    net.zero_grad(set_to_none=True)
    out = net(x, return_aux=True)
    PAANetLoss()(out, target).backward()
    tensors = [out.logits, *out.aux_logits, *out.gam_logits]
    return [t.detach() for t in tensors], {n: p.grad for n, p in net.named_parameters()}


def assert_same_step(actual: tuple[list[torch.Tensor], dict], expected: tuple[list[torch.Tensor], dict],
                     dtype: torch.dtype) -> None:
    """Outputs within TOLERANCES[dtype]; gradients too, the absolute part scaled by the gradient's size.

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
        torch.testing.assert_close(grads[name], g, rtol=TOLERANCES[dtype]["rtol"],
                                   atol=TOLERANCES[dtype]["atol"] + TOLERANCES[dtype]["rtol"] * scale,
                                   msg=lambda m: f"grad of {name}: {m}")
