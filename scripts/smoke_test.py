"""Smoke test of an installed paanet_fast, for a fresh environment (CI installs the wheel built from
the sdist and runs this from outside the source tree, so that the installed package is imported).

It checks that the compiled CPU kernels load, that both operators on them match the reference
(outputs and gradients, fresh random odd shapes, float64 and float32), and that a small PAANet with
backend="auto" runs forward and backward on them and agrees with the reference backend. It exits
non-zero on the first failure.

    python smoke_test.py [--not-under SOURCE_TREE]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

import paanet_fast
from paanet_fast import PAANet, PAANetLoss, ops
from paanet_fast.backends import available_backends, unavailable_reason

TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}


def fail(message: str) -> None:
    sys.exit(f"smoke test FAILED: {message}")


def check_close(what: str, actual: list[torch.Tensor], expected: list[torch.Tensor], tol: float) -> None:
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if a.shape != e.shape or not torch.isfinite(a).all():
            fail(f"{what}[{i}]: shape {tuple(a.shape)} (expected {tuple(e.shape)}) or non-finite values")
        error = ((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-30)).item()
        if not error <= tol:
            fail(f"{what}[{i}]: relative error {error:.3g} > {tol:.0e}")


def outputs_and_grads(call, inputs: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    outputs = list(call(inputs))
    gen = torch.Generator().manual_seed(seed)
    torch.autograd.backward(outputs, [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outputs])
    return [o.detach() for o in outputs] + [t.grad for t in inputs]


def check_operators(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(7)
    # mini_decoder: three scales up- and downsampled by odd ratios to a 29x31 output.
    features = [torch.randn(2, c, h, w, generator=gen, dtype=dtype) for c, h, w in ((5, 7, 9), (3, 4, 5), (4, 13, 3))]
    weight, bias = torch.randn(1, 12, 3, 3, generator=gen, dtype=dtype) / 12 ** 0.5, torch.randn(1, dtype=dtype)
    results = {}
    for backend in ("cpp", "reference"):
        def mini_decoder(t, backend=backend):
            return ops.mini_decoder(t[:3], t[3], t[4], (29, 31), backend=backend)
        results[backend] = outputs_and_grads(mini_decoder, [*features, weight, bias], seed=1)
    check_close(f"mini_decoder {dtype}", results["cpp"], results["reference"], TOLERANCE[dtype])
    # gam_multiply: windows 1x1, 2x3 and 4x2 of an 8x18 GAM, both attention directions.
    features = [torch.randn(2, c, h, w, generator=gen, dtype=dtype) for c, h, w in ((3, 8, 18), (5, 4, 6), (2, 2, 9))]
    gam = torch.rand(2, 1, 8, 18, generator=gen, dtype=dtype)
    for reverse in (False, True):
        for backend in ("cpp", "reference"):
            def gam_multiply(t, backend=backend):
                return ops.gam_multiply(t[:3], t[3], reverse, backend=backend)
            results[backend] = outputs_and_grads(gam_multiply, [*features, gam], seed=2)
        check_close(f"gam_multiply {dtype} reverse={reverse}", results["cpp"], results["reference"], TOLERANCE[dtype])


def check_model() -> None:
    """A resnet18 PAANet in float64 on an odd-sized batch: auto (the compiled kernels) against reference."""
    torch.manual_seed(0)
    model = PAANet("resnet18", encoder_weights=None, backend="auto", growth=8).double()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 45, 38, generator=gen, dtype=torch.float64)
    target = (torch.rand(2, 1, 45, 38, generator=gen) > 0.6).double()
    results = {}
    for backend in ("auto", "reference"):
        model.backend = backend
        model.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # auto's fallback warning fails the test
            out = model(x, return_aux=True)
            PAANetLoss()(out, target).backward()
        results[backend] = [out.logits.detach(), *[p.grad.clone() for p in model.parameters() if p.grad is not None]]
    check_close("model (logits, parameter gradients)", results["auto"], results["reference"], 1e-8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--not-under", type=Path, help="fail if paanet_fast is imported from this folder")
    args = parser.parse_args()
    where = Path(paanet_fast.__file__).resolve()
    print(f"paanet_fast {paanet_fast.__version__} from {where.parent}, torch {torch.__version__}")
    if args.not_under is not None and where.is_relative_to(args.not_under.resolve()):
        fail(f"imported from the source tree {args.not_under}, not from the installed package")
    if "cpp" not in available_backends():
        fail(f"the compiled CPU kernels did not load: {unavailable_reason('cpp')}")
    from paanet_fast import _C
    print(f"CPU kernel loops: {_C.cpu_kernels()} (ATen: {torch.backends.cpu.get_cpu_capability()})")
    for dtype in (torch.float64, torch.float32):
        check_operators(dtype)
    check_model()
    print("smoke test passed: both operators against the reference, the model forward and backward on auto")


if __name__ == "__main__":
    main()
