"""Random inputs for the two fused operators and the comparisons the op tests share.

Shapes are drawn fresh from a seeded generator: odd sizes, 1 to 4 scales, 1 to 32 channels,
batch 1 to 3, output sizes that are multiples of nothing in particular.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from paanet_fast.compare import TOLERANCE, relative_error  # noqa: F401  (re-exported to the op tests)

# TOLERANCE: the max-norm relative error (relative_error) allowed between a compiled kernel and the
# reference, per dtype; the bound `auto`'s first-use check and `paanet-fast doctor` apply too.
MODEL_STRIDES = (4, 8, 16, 32)


@dataclass
class MiniDecoderCase:
    features: list[torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor
    size: tuple[int, int]

    def describe(self) -> str:
        return f"features {[tuple(f.shape) for f in self.features]} -> size {self.size}"


@dataclass
class GamMultiplyCase:
    features: list[torch.Tensor]
    gam: torch.Tensor

    def describe(self) -> str:
        return f"features {[tuple(f.shape) for f in self.features]}, gam {tuple(self.gam.shape)}"


def mini_decoder_case(seed: int, dtype: torch.dtype = torch.float64, *, strides: tuple[int, ...] | None = None,
                      max_side: int = 40) -> MiniDecoderCase:
    """Random features and output size; with `strides`, the model's layout (size = stride x feature)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = rng.randint(1, 3)
    if strides is None:
        scales = rng.randint(1, 4)
        size = (rng.randint(1, max_side), rng.randint(1, max_side))
        # Feature sides from 1 to a little above the output side: up- and downsampling, any ratio.
        sides = [(rng.randint(1, size[0] + 3), rng.randint(1, size[1] + 3)) for _ in range(scales)]
    else:
        coarse = (rng.randint(1, 3), rng.randint(1, 3))
        size = (coarse[0] * max(strides), coarse[1] * max(strides))
        sides = [(size[0] // s, size[1] // s) for s in strides]
    channels = [rng.randint(1, 32) for _ in sides]
    features = [torch.randn(batch, c, h, w, generator=gen, dtype=dtype) for c, (h, w) in zip(channels, sides)]
    weight = torch.randn(1, sum(channels), 3, 3, generator=gen, dtype=dtype) / sum(channels) ** 0.5
    bias = torch.randn(1, generator=gen, dtype=dtype)
    return MiniDecoderCase(features, weight, bias, size)


def gam_multiply_case(seed: int, dtype: torch.dtype = torch.float64, *, strides: tuple[int, ...] | None = None,
                      max_window: int = 6) -> GamMultiplyCase:
    """Random features and a GAM whose size is an integer multiple (per axis, per scale) of each."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = rng.randint(1, 3)
    if strides is None:
        scales = rng.randint(1, 4)
        windows = [(rng.randint(1, max_window), rng.randint(1, max_window)) for _ in range(scales)]
        # One GAM size divisible by every window: the least common multiple times a random factor.
        lcm_y, lcm_x = math.lcm(*(w[0] for w in windows)), math.lcm(*(w[1] for w in windows))
        size = (lcm_y * rng.randint(1, max(1, 24 // lcm_y)), lcm_x * rng.randint(1, max(1, 24 // lcm_x)))
    else:
        size = (max(strides) * rng.randint(1, 2), max(strides) * rng.randint(1, 2))
        windows = [(s, s) for s in strides]
    features = [torch.randn(batch, rng.randint(1, 32), size[0] // wy, size[1] // wx, generator=gen, dtype=dtype)
                for wy, wx in windows]
    gam = torch.rand(batch, 1, *size, generator=gen, dtype=dtype)
    return GamMultiplyCase(features, gam)


def tiny_mini_decoder_case(seed: int, dtype: torch.dtype = torch.float64) -> MiniDecoderCase:
    """Few enough elements for gradgradcheck's full Jacobians: two odd scales, one up- and one
    downsampled along an axis, batch 2 (so that a mix-up between samples shows)."""
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, 2, 3, 2, generator=gen, dtype=dtype),
                torch.randn(2, 1, 2, 7, generator=gen, dtype=dtype)]
    return MiniDecoderCase(features, torch.randn(1, 3, 3, 3, generator=gen, dtype=dtype) / 3,
                           torch.randn(1, generator=gen, dtype=dtype), (5, 4))


def tiny_gam_multiply_case(seed: int, dtype: torch.dtype = torch.float64) -> GamMultiplyCase:
    """The gam_multiply twin of tiny_mini_decoder_case: windows 2x1 and 3x2, a G of 6x4."""
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, 2, 3, 4, generator=gen, dtype=dtype),
                torch.randn(2, 1, 2, 2, generator=gen, dtype=dtype)]
    return GamMultiplyCase(features, torch.rand(2, 1, 6, 4, generator=gen, dtype=dtype))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (an element the kernel did not write?)"
    err = relative_error(actual, expected)
    assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.3g} > {TOLERANCE[dtype]:.0e}"


def assert_each_close(actual: list[torch.Tensor], expected: list[torch.Tensor], dtype: torch.dtype, tol: float,
                      floor: float = 0.0) -> None:
    """Each result of `dtype` within `tol` of its expected values, elementwise, the absolute part
    relative to its largest expected value (or to `floor`, if larger)."""
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == dtype and a.shape == e.shape, f"result {i}: {a.dtype} {tuple(a.shape)}"
        torch.testing.assert_close(a.double(), e.double(), rtol=tol, atol=tol * max(e.abs().max().item(), floor),
                                   msg=lambda m: f"result {i}: {m}")


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def transposed(t: torch.Tensor) -> torch.Tensor:
    """The same values, stored with height and width swapped (a non-contiguous view)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as every other element of a twice-as-wide buffer (a non-dense view)."""
    wide = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


LAYOUTS = {"channels_last": channels_last, "transposed": transposed, "strided": strided}


def with_grad(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def mini_decoder_outputs_and_grads(fn, case: MiniDecoderCase, seed: int) -> list[torch.Tensor]:
    """logits, gam, then the gradients of features, weight and bias for random output gradients."""
    features = with_grad(case.features)
    weight, bias = with_grad([case.weight, case.bias])
    logits, gam = fn(features, weight, bias, case.size)
    gen = torch.Generator().manual_seed(seed + 1)
    grads = [torch.randn(logits.shape, generator=gen, dtype=torch.float64).to(logits.dtype) for _ in range(2)]
    torch.autograd.backward([logits, gam], grads)
    return [logits.detach(), gam.detach(), *[f.grad for f in features], weight.grad, bias.grad]


def gam_multiply_outputs_and_grads(fn, case: GamMultiplyCase, reverse: bool, seed: int) -> list[torch.Tensor]:
    """The products, then the gradients of the features and of the GAM for random output gradients."""
    features = with_grad(case.features)
    (gam,) = with_grad([case.gam])
    outputs = fn(features, gam, reverse)
    gen = torch.Generator().manual_seed(seed + 1)
    grads = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outputs]
    torch.autograd.backward(outputs, grads)
    return [*[o.detach() for o in outputs], *[f.grad for f in features], gam.grad]


def mini_decoder_names(case: MiniDecoderCase) -> list[str]:
    n = len(case.features)
    return ["logits", "gam", *[f"grad features[{i}]" for i in range(n)], "grad weight", "grad bias"]


def gam_multiply_names(case: GamMultiplyCase) -> list[str]:
    n = len(case.features)
    return [*[f"output[{i}]" for i in range(n)], *[f"grad features[{i}]" for i in range(n)], "grad gam"]

