"""One backend's operators against another's on random inputs: forward and backward of both.

Shared by `auto`'s first-use check (paanet_fast.first_use, against portable) and by
`paanet-fast doctor` (against reference). The inputs are drawn in float32 from a private generator
(the caller's random state is left alone) and rounded to the dtype under test; the baseline
computes in float64 on those same values, so only the candidate's own error is measured: the
largest absolute difference relative to the largest baseline value, per output and per gradient.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch

if TYPE_CHECKING:  # backends imports first_use, which imports this module
    from .backends import Backend

# Largest relative error a backend may have, per dtype (half types compute in float32 and round).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


@dataclass(frozen=True)
class OpShapes:
    """Inputs of both operators: features (batch, C_v, h_v, w_v) for each (C_v, h_v, w_v) in
    `features`, the mini-decoder's output `size` (H, W), and the G of gam_multiply, (batch, 1,
    *gam_size), gam_size a multiple of every (h_v, w_v)."""

    batch: int
    features: tuple[tuple[int, int, int], ...]
    size: tuple[int, int]
    gam_size: tuple[int, int]

    def describe(self) -> str:
        return f"features {[(self.batch, *f) for f in self.features]}, size {self.size}, gam {self.gam_size}"


# Odd sides, non-integer up- and downsampling ratios, a 1x1 scale, batch above one (so that a mix-up
# between samples shows): small enough for the Triton interpreter.
TINY = OpShapes(2, ((3, 3, 2), (2, 1, 3)), size=(5, 7), gam_size=(3, 6))
SMALL = (TINY, OpShapes(1, ((4, 9, 7), (3, 3, 7), (2, 1, 1)), size=(7, 19), gam_size=(9, 14)))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (computed in float64)."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def mismatch(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, tolerance: float) -> str | None:
    """Why `actual` (should be `dtype`) is not `expected` within `tolerance` (relative_error), or None."""
    if actual.shape != expected.shape or actual.dtype != dtype:
        return f"is {actual.dtype} {tuple(actual.shape)}, expected {dtype} {tuple(expected.shape)}"
    if not torch.isfinite(actual).all():  # NaN compares false with any bound: test it first
        return "has non-finite values"
    err = relative_error(actual, expected)
    return f"relative error {err:.3g} > {tolerance:.0e}" if err > tolerance else None


def _inputs(shapes: OpShapes, seed: int) -> dict[str, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    channels = sum(c for c, _, _ in shapes.features)
    features = [torch.randn(shapes.batch, c, h, w, generator=gen) for c, h, w in shapes.features]
    return {
        "features": features,
        "weight_bias": [torch.randn(1, channels, 3, 3, generator=gen) / channels ** 0.5, torch.randn(1, generator=gen)],
        "gam": [torch.rand(shapes.batch, 1, *shapes.gam_size, generator=gen)],
        "grad_decoder": [torch.randn(shapes.batch, 1, *shapes.size, generator=gen) for _ in range(2)],
        "grad_products": [torch.randn(f.shape, generator=gen) for f in features],
    }


def _mini_decoder(backend: Backend, t: dict[str, list[torch.Tensor]], shapes: OpShapes) -> dict[str, torch.Tensor]:
    features = [f.requires_grad_() for f in t["features"]]
    weight, bias = (p.requires_grad_() for p in t["weight_bias"])
    logits, gam = backend.mini_decoder(features, weight, bias, shapes.size)
    grads = torch.autograd.grad([logits, gam], [*features, weight, bias], t["grad_decoder"])
    names = [f"grad features[{i}]" for i in range(len(features))] + ["grad weight", "grad bias"]
    return {"logits": logits, "gam": gam, **dict(zip(names, grads))}


def _gam_multiply(reverse: bool) -> Callable[..., dict[str, torch.Tensor]]:
    def run(backend: Backend, t: dict[str, list[torch.Tensor]], shapes: OpShapes) -> dict[str, torch.Tensor]:
        features = [f.requires_grad_() for f in t["features"]]
        gam = t["gam"][0].requires_grad_()
        products = backend.gam_multiply(features, gam, reverse)
        grads = torch.autograd.grad(products, [*features, gam], t["grad_products"])
        n = len(features)
        names = [f"output[{i}]" for i in range(n)] + [f"grad features[{i}]" for i in range(n)] + ["grad gam"]
        return dict(zip(names, [*products, *grads]))
    return run


OPERATORS = {"mini_decoder": _mini_decoder, "gam_multiply": _gam_multiply(False),
             "gam_multiply(reverse)": _gam_multiply(True)}


def _on(t: dict[str, list[torch.Tensor]], device: torch.device, dtype: torch.dtype) -> dict[str, list[torch.Tensor]]:
    return {k: [v.to(device=device, dtype=dtype, copy=True) for v in vs] for k, vs in t.items()}


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """float32 convolutions and matmuls in float32, not TF32 (cuDNN's default on Ampere and newer,
    whose 1e-4 errors in the reference's and the portable backend's convolutions would pass for the
    backend's own)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _eager_autograd(device: torch.device) -> contextlib.ExitStack:
    """Gradients on; inference mode, autocast and TF32 off: the caller may have set any of those."""
    stack = contextlib.ExitStack()
    stack.enter_context(no_tf32())
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    if torch.amp.is_autocast_available(device.type):
        stack.enter_context(torch.autocast(device.type, enabled=False))
    return stack


def compare_backends(candidate: Backend, baseline: Backend, device: torch.device, dtype: torch.dtype,
                     shapes: Sequence[OpShapes] = (TINY,), seed: int = 0) -> list[str]:
    """What `candidate` gets wrong on `device` in `dtype`, one line per problem (empty: it agrees).

    Every operator (mini_decoder, gam_multiply and its reverse) on every entry of `shapes`, forward
    and backward for random output gradients, against `baseline` in float64 on the same rounded
    inputs, within TOLERANCE[dtype]. An exception raised by the candidate (a kernel that does not
    launch, an unsupported dtype) is a problem, reported with its first line.
    """
    problems = []
    with _eager_autograd(device):
        for i, case in enumerate(shapes):
            rounded = {k: [v.to(dtype) for v in vs] for k, vs in _inputs(case, seed + i).items()}
            for op, run in OPERATORS.items():
                where = f"{op} on {case.describe()}"
                expected = run(baseline, _on(rounded, device, torch.float64), case)
                try:
                    actual = run(candidate, _on(rounded, device, dtype), case)
                    problems += [f"{where}: {name} {why}" for name, value in expected.items()
                                 if (why := mismatch(actual[name], value, dtype, TOLERANCE[dtype]))]
                except Exception as exc:  # noqa: BLE001  (any failure of the candidate is the finding)
                    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                    problems.append(f"{where}: {type(exc).__name__}: {message}")
    return problems
