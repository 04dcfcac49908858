"""NaN and Inf in the inputs: what the fast backends give where the reference gives non-finite values
(README, "How this implementation differs from the paper").

mini_decoder reduces the channels before the resize (design section 2.1), so a non-finite feature
or weight meets the zero weights of the bilinear resize, the zero padding and the other taps of the
3x3 kernel in another order than in the reference: 0 * Inf and Inf - Inf give NaN where the
reference may keep +-Inf, and the outputs that the value reaches only through a zero (which the
reference turns into NaN) may come out NaN or finite. What is pinned here, for every backend: every
logit the value contributes to (a non-zero derivative) is non-finite, and every finite logit is
exact, that is, what the reference gives with the value replaced by 0. gam_multiply, an average and
a product, matches the reference exactly, Inf and NaN included.
"""
from __future__ import annotations

import random

import pytest
import torch

from ops_cases import TOLERANCE, assert_close, gam_multiply_case, mini_decoder_case
from paanet_fast import ops, reference

INF = float("inf")
BACKENDS = ["cpp", "portable", "triton"]


def _backend(name: str) -> str:
    if name == "triton":
        pytest.importorskip("triton", reason="the triton package is not installed")
        import paanet_fast.triton  # noqa: F401  (registers the backend; runs in the interpreter here)
    return name


def _plant(tensors: list[torch.Tensor], value: float, seed: int) -> tuple[list[torch.Tensor], int, int]:
    """Copies of `tensors` with `value` at one random element of one of them; which tensor, which element."""
    rng = random.Random(seed)
    tensors = [t.clone() for t in tensors]
    which = rng.randrange(len(tensors))
    element = rng.randrange(tensors[which].numel())
    tensors[which].view(-1)[element] = value
    return tensors, which, element


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["feature", "weight"])
@pytest.mark.parametrize("value", [float("nan"), INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("seed", range(4))
def test_mini_decoder_with_a_non_finite_input(backend, where, value, seed):
    backend = _backend(backend)
    case = mini_decoder_case(seed, torch.float64, max_side=9)
    n = len(case.features)
    if where == "feature":
        features, which, element = _plant(case.features, value, seed)
        inputs = [*features, case.weight]
    else:
        [weight], _, element = _plant([case.weight], value, seed)
        inputs, which = [*case.features, weight], n
    logits, gam = ops.mini_decoder(inputs[:n], inputs[n], case.bias, case.size, backend=backend)

    # The logits the planted element reaches, and the exact logits without it: Z is linear in it.
    without = [t.clone() for t in inputs]
    without[which].view(-1)[element] = 0
    tangents = [torch.zeros_like(t) for t in inputs]
    tangents[which].view(-1)[element] = 1
    exact, derivative = torch.func.jvp(lambda *t: reference.mini_decoder(list(t[:n]), t[n], case.bias, case.size)[0],
                                       tuple(without), tuple(tangents))
    what = f"{value} in {where} ({case.describe()})"
    # (A weight tap may read the zero padding only: it reaches nothing, and the reference's
    # 0 * value makes every logit NaN where the exact logits are all finite.)
    reached = derivative != 0
    assert not logits[reached].isfinite().any(), f"{what}: a logit it contributes to is finite"
    finite = logits.isfinite()
    if finite.any():
        assert_close(logits[finite], exact[finite], torch.float64, f"{what}: the finite logits")
    assert torch.equal(gam.isnan(), logits.isnan()), f"{what}: G is NaN where the logits are"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["feature", "gam"])
@pytest.mark.parametrize("value", [float("nan"), INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("reverse", [False, True], ids=["attention", "reverse"])
def test_gam_multiply_with_a_non_finite_input_matches_the_reference(backend, where, value, reverse):
    backend = _backend(backend)
    case = gam_multiply_case(7, torch.float64, max_window=3)
    features, gam = case.features, case.gam
    if where == "feature":
        features, _, _ = _plant(features, value, 7)
    else:
        [gam], _, _ = _plant([gam], value, 7)
    actual = ops.gam_multiply(features, gam, reverse, backend=backend)
    expected = ops.gam_multiply(features, gam, reverse, backend="reference")
    assert not all(e.isfinite().all() for e in expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        tol = TOLERANCE[torch.float64]
        torch.testing.assert_close(a, e, rtol=tol, atol=tol, equal_nan=True,
                                   msg=lambda m: f"product {i}, {value} in the {where}: {m}")
