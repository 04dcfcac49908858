"""The Triton backend against paanet_fast.reference: outputs, gradients, registration, the model.

Without a GPU, tests/conftest.py sets TRITON_INTERPRET=1 and the kernels run in Triton's
interpreter on CPU tensors (slow, so the shapes are tiny and odd). On a GPU machine the same
kernels are compiled and checked on CUDA tensors, in every supported dtype, on larger shapes too.
Every Triton result is compared with the reference evaluated in float64 on the same values, with
a tolerance per dtype, relative to the largest reference value.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="the triton package is not installed")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import paanet_fast.triton  # noqa: E402,F401  (registers the backend)
from ops_cases import assert_each_close  # noqa: E402
from paanet_fast import PAANet, ops, reference  # noqa: E402
from paanet_fast.backends import resolve  # noqa: E402
from paanet_fast.triton import host  # noqa: E402
from paanet_fast.triton._math import divide  # noqa: E402
from paanet_fast.triton._runtime import INTERPRET  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes  # noqa: E402

_ALLOCATE = host.new_tensor  # the backend's own allocation, before poisoned_outputs replaces it

# The interpreter reads host memory: numpy's overflow warning is how an out-of-bounds read shows.
pytestmark = pytest.mark.filterwarnings("error:overflow encountered:RuntimeWarning")

HAS_GPU = torch.cuda.is_available() and not INTERPRET
interpreted = pytest.mark.skipif(
    not INTERPRET, reason="Triton computes CPU tensors only under TRITON_INTERPRET=1 (tests/conftest.py sets it "
                          "when there is no GPU)")
on_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU, with TRITON_INTERPRET unset")

# (device, dtype, tolerance relative to the largest reference value)
TARGETS = [
    pytest.param("cpu", torch.float64, 1e-10, marks=interpreted, id="interpreter-float64"),
    pytest.param("cpu", torch.float32, 1e-5, marks=interpreted, id="interpreter-float32"),
    pytest.param("cuda", torch.float64, 1e-10, marks=on_gpu, id="cuda-float64"),
    pytest.param("cuda", torch.float32, 1e-5, marks=on_gpu, id="cuda-float32"),
    pytest.param("cuda", torch.float16, 2e-3, marks=on_gpu, id="cuda-float16"),
    pytest.param("cuda", torch.bfloat16, 1.6e-2, marks=on_gpu, id="cuda-bfloat16"),
]
DEVICES = [pytest.param("cpu", marks=interpreted, id="interpreter"), pytest.param("cuda", marks=on_gpu, id="cuda")]

# (batch, [(C_v, h_v, w_v) per scale], output (H, W)): non-integer ratios, 1x1 scales, the model's
# strides 4..32, downscaling, and on a GPU shapes that span several tiles (the interpreter would
# take minutes over those, so without a GPU they are not part of the matrix at all).
MINI_DECODER_CASES = [
    pytest.param(1, [(3, 5, 7)], (13, 17), id="one-scale"),
    pytest.param(2, [(3, 5, 7), (2, 3, 4)], (13, 17), id="two-scales"),
    pytest.param(2, [(3, 2, 2), (2, 1, 1), (1, 6, 5)], (13, 17), id="tiny-scales"),
    pytest.param(1, [(2, 8, 6), (3, 4, 3), (1, 2, 2), (2, 1, 1)], (32, 24), id="model-strides"),
    pytest.param(1, [(3, 8, 9), (2, 2, 11)], (5, 4), id="downscale"),
] + ([
    pytest.param(2, [(16, 64, 48), (8, 32, 24), (8, 16, 12), (4, 8, 6)], (256, 192), id="large"),
    pytest.param(3, [(5, 37, 23), (7, 11, 50), (2, 101, 3)], (101, 77), id="large-odd"),
] if HAS_GPU else [])
# (batch, [(C_v, h_v, w_v)], GAM (H, W)): H, W integer multiples of every h_v, w_v.
GAM_CASES = [
    pytest.param(2, [(3, 6, 5), (2, 3, 5), (4, 1, 1), (1, 2, 5)], (12, 15), id="four-scales"),
    pytest.param(1, [(2, 3, 2)], (9, 10), id="unequal-factors"),
    pytest.param(1, [(2, 4, 5), (3, 2, 1)], (4, 5), id="factor-one"),
    # Windows of powers of two, both directions by regions (the backward in one launch): 2 x 3 regions
    # of 8 x 8 per sample, a full-resolution scale, more channels than a tile.
    pytest.param(2, [(3, 8, 24), (20, 4, 12), (4, 16, 3), (2, 2, 3)], (16, 24), id="power-of-two-windows"),
    # Powers of two, but a region (64 x 32) larger than the region kernel takes.
    pytest.param(1, [(2, 1, 2), (3, 2, 4)], (64, 64), id="large-windows"),
] + ([
    pytest.param(2, [(32, 64, 48), (64, 32, 24), (16, 8, 6), (8, 4, 3)], (256, 192), id="large"),
] if HAS_GPU else [])


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every buffer the backend allocates starts as NaN, so an element a kernel misses shows up."""
    def nan_tensor(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    monkeypatch.setattr(host, "new_tensor", nan_tensor)


def _random(gen: torch.Generator, device: str, dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def _outputs_and_grads(fn, inputs: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """fn's outputs and the gradients of sum(output * grad) with respect to every input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outputs = list(fn(leaves))
    torch.autograd.backward(outputs, grads)
    return [o.detach() for o in outputs] + [t.grad for t in leaves]


def _mini_decoder_problem(batch, scales, size, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = [_random(gen, device, dtype, batch, c, h, w) for c, h, w in scales]
    weight = _random(gen, device, dtype, 1, sum(c for c, _, _ in scales), 3, 3)
    bias = _random(gen, device, dtype, 1)
    grads = [_random(gen, device, dtype, batch, 1, *size) for _ in range(2)]
    return [*features, weight, bias], grads


def _mini_decoder_fn(n: int, size, backend: str):
    return lambda t: ops.mini_decoder(t[:n], t[n], t[n + 1], size, backend=backend)


@pytest.mark.parametrize("device,dtype,tol", TARGETS)
@pytest.mark.parametrize("batch,scales,size", MINI_DECODER_CASES)
def test_mini_decoder_matches_reference(device, dtype, tol, batch, scales, size):
    inputs, grads = _mini_decoder_problem(batch, scales, size, device, dtype)
    actual = _outputs_and_grads(_mini_decoder_fn(len(scales), size, "triton"), inputs, grads)
    expected = _outputs_and_grads(_mini_decoder_fn(len(scales), size, "reference"),
                                  [t.double() for t in inputs], [g.double() for g in grads])
    assert_each_close(actual, expected, dtype, tol)


def _gam_problem(batch, scales, size, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = [_random(gen, device, dtype, batch, c, h, w) for c, h, w in scales]
    gam = torch.rand(batch, 1, *size, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    grads = [_random(gen, device, dtype, batch, c, h, w) for c, h, w in scales]
    return [*features, gam], grads


def _gam_fn(reverse: bool, backend: str):
    return lambda t: ops.gam_multiply(t[:-1], t[-1], reverse, backend=backend)


@pytest.mark.parametrize("device,dtype,tol", TARGETS)
@pytest.mark.parametrize("batch,scales,size", GAM_CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward-attention", "reverse-attention"])
def test_gam_multiply_matches_reference(device, dtype, tol, batch, scales, size, reverse):
    inputs, grads = _gam_problem(batch, scales, size, device, dtype)
    actual = _outputs_and_grads(_gam_fn(reverse, "triton"), inputs, grads)
    expected = _outputs_and_grads(_gam_fn(reverse, "reference"), [t.double() for t in inputs],
                                  [g.double() for g in grads])
    assert_each_close(actual, expected, dtype, tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)], ids=["float16", "bfloat16"])
@interpreted
def test_half_precision_in_the_interpreter(dtype, tol):
    inputs, grads = _mini_decoder_problem(2, [(3, 5, 7), (2, 3, 4)], (13, 17), "cpu", dtype, seed=1)
    actual = _outputs_and_grads(_mini_decoder_fn(2, (13, 17), "triton"), inputs, grads)
    expected = _outputs_and_grads(_mini_decoder_fn(2, (13, 17), "reference"), [t.double() for t in inputs],
                                  [g.double() for g in grads])
    assert_each_close(actual, expected, dtype, tol)
    inputs, grads = _gam_problem(1, [(3, 4, 6), (2, 2, 3)], (8, 12), "cpu", dtype, seed=2)
    actual = _outputs_and_grads(_gam_fn(True, "triton"), inputs, grads)
    expected = _outputs_and_grads(_gam_fn(True, "reference"), [t.double() for t in inputs],
                                  [g.double() for g in grads])
    assert_each_close(actual, expected, dtype, tol)


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_on_a_card_without_bfloat16_arithmetic(device, monkeypatch):
    """On a card below compute capability 8.0 (faked) the kernels get float32 copies of bfloat16
    inputs, and the results are bfloat16 with bfloat16's accuracy, gradients included."""
    from paanet_fast import cuda_arch
    monkeypatch.setattr(cuda_arch, "computes_bfloat16", lambda device: False)
    kernel_dtypes = set()
    for name in ("mini_decoder_forward", "mini_decoder_backward", "gam_multiply_forward", "gam_multiply_backward"):
        def spy(*args, _run=getattr(host, name)):
            kernel_dtypes.update(t.dtype for a in args for t in (a if isinstance(a, list) else [a])
                                 if isinstance(t, torch.Tensor))
            return _run(*args)
        monkeypatch.setattr(host, name, spy)
    inputs, grads = _mini_decoder_problem(2, [(3, 5, 7), (2, 3, 4)], (13, 17), device, torch.bfloat16, seed=11)
    actual = _outputs_and_grads(_mini_decoder_fn(2, (13, 17), "triton"), inputs, grads)
    expected = _outputs_and_grads(_mini_decoder_fn(2, (13, 17), "reference"), [t.double() for t in inputs],
                                  [g.double() for g in grads])
    assert_each_close(actual, expected, torch.bfloat16, 1.6e-2)
    inputs, grads = _gam_problem(1, [(3, 4, 6), (2, 2, 3)], (8, 12), device, torch.bfloat16, seed=12)
    actual = _outputs_and_grads(_gam_fn(False, "triton"), inputs, grads)
    expected = _outputs_and_grads(_gam_fn(False, "reference"), [t.double() for t in inputs],
                                  [g.double() for g in grads])
    assert_each_close(actual, expected, torch.bfloat16, 1.6e-2)
    assert kernel_dtypes == {torch.float32}


@pytest.fixture
def small_tiles(monkeypatch):
    """Blocks far smaller than the problem, as on a GPU (the interpreter's own blocks cover the test
    shapes whole)."""
    from paanet_fast.triton import _runtime, gam_kernels, mini_decoder_kernels
    small = {mini_decoder_kernels.reduce_kernel: {"BLOCK": 16},
             mini_decoder_kernels.forward_kernel: {"BLOCK_H": 8, "BLOCK_W": 8},
             mini_decoder_kernels.rows_kernel: {"BLOCK_I": 4, "BLOCK_M": 8},
             mini_decoder_kernels.columns_kernel: {"BLOCK_P": 8, "BLOCK_C": 2},
             mini_decoder_kernels.sum_kernel: {"BLOCK_R": 2},
             gam_kernels.forward_kernel: {"BLOCK": 16}, gam_kernels.backward_kernel: {"BLOCK": 16},
             gam_kernels.gam_grad_kernel: {"BLOCK": 8}}
    for kernel, meta in small.items():
        monkeypatch.setitem(_runtime._interpreter_meta, id(kernel), meta)


@interpreted
def test_small_tiles_in_the_interpreter(small_tiles):
    """Many programs, partial tiles at every edge, GAM blocks that do not divide a scale's pixels, a
    channel reduction and a sum of shares that loop more than once over their unrolled steps."""
    inputs, grads = _mini_decoder_problem(2, [(11, 5, 7), (2, 3, 4), (1, 9, 2)], (13, 17), "cpu", torch.float64,
                                          seed=9)
    actual = _outputs_and_grads(_mini_decoder_fn(3, (13, 17), "triton"), inputs, grads)
    expected = _outputs_and_grads(_mini_decoder_fn(3, (13, 17), "reference"), inputs, grads)
    assert_each_close(actual, expected, torch.float64, 1e-10)
    inputs, grads = _gam_problem(2, [(3, 6, 5), (2, 3, 5), (4, 1, 1), (1, 2, 5)], (12, 15), "cpu", torch.float64,
                                 seed=10)
    for reverse in (False, True):
        actual = _outputs_and_grads(_gam_fn(reverse, "triton"), inputs, grads)
        expected = _outputs_and_grads(_gam_fn(reverse, "reference"), inputs, grads)
        assert_each_close(actual, expected, torch.float64, 1e-10)


@triton.jit
def _divide_kernel(n_ptr, out_ptr, magic, shift, N, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + i, divide(tl.load(n_ptr + i, mask=i < N, other=0), magic, shift), mask=i < N)


# Divisors of every kind: 1, powers of two, their neighbours, odd, large, the largest supported.
DIVISORS = [1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 100, 255, 4097, 65535, 2**20 + 1, 2**30 + 3, 2**31 - 1, 2**31]


@pytest.mark.parametrize("device", DEVICES)
def test_divide_matches_integer_division(device):
    """_math.divide with host.divider's constants is n // d for every int32 n >= 0: each divisor's
    multiples and their neighbours, random n, and the int32 limit."""
    gen = torch.Generator().manual_seed(12)
    for d in DIVISORS:
        near = [q * d + e for q in (0, 1, 2, 3, 1000, (2**31 - 1) // d) for e in (-1, 0, 1)]
        n = torch.tensor([0, 1, 2**31 - 1] + near, dtype=torch.int64)
        n = torch.cat([n, torch.randint(0, 2**31, (200,), generator=gen)])
        n = n[(n >= 0) & (n < 2**31)].to(torch.int32).to(device)
        out = torch.full_like(n, -7)  # poison
        magic, shift = host.divider(d)
        _divide_kernel[(triton.cdiv(n.numel(), 64),)](n, out, magic, shift, n.numel(), BLOCK=64)
        assert torch.equal(out.cpu().long(), n.cpu().long() // d), f"d = {d}"


@interpreted
def test_results_do_not_depend_on_the_tuned_configs(monkeypatch):
    """Whatever configuration autotuning picks (or picks again after a re-tuning), every output and
    gradient is bitwise the same: the tuned kernels (and the channel reduction) sum each element in an
    order fixed by their loops. The kernels whose sums follow their tile layout have one configuration."""
    from paanet_fast.triton import _runtime, mini_decoder_kernels
    inputs, grads = _mini_decoder_problem(2, [(3, 5, 7), (2, 3, 4), (1, 9, 2)], (13, 17), "cpu", torch.float32, seed=14)
    first = _outputs_and_grads(_mini_decoder_fn(3, (13, 17), "triton"), inputs, grads)
    other_configs = {mini_decoder_kernels.forward_kernel: {"BLOCK_H": 4, "BLOCK_W": 16},
                     mini_decoder_kernels.rows_kernel: {"BLOCK_I": 2, "BLOCK_M": 4},
                     mini_decoder_kernels.reduce_kernel: {"BLOCK": 8}}
    for kernel, meta in other_configs.items():
        assert _runtime._interpreter_meta[id(kernel)] != meta
        monkeypatch.setitem(_runtime._interpreter_meta, id(kernel), meta)
    second = _outputs_and_grads(_mini_decoder_fn(3, (13, 17), "triton"), inputs, grads)
    assert len(first) == len(second)
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"result {i} differs between configurations"


# aten ops that run nothing on a device: allocation without initialisation, views, metadata
_FREE_OPS = {"empty", "empty_strided", "view", "_unsafe_view", "t", "split", "split_with_sizes", "detach", "alias",
             "as_strided", "expand", "slice", "select", "unsqueeze", "squeeze", "transpose", "permute", "reshape",
             "_reshape_alias"}
# Device work per call of each host function at PAANet's strides (gam_multiply by regions, its
# windows being powers of two: the backward in one launch), and the training step's budget (6 PAAD
# layers, each one mini_decoder and one gam_multiply, forward and backward).
_LAUNCHES = {"mini_decoder_forward": 2, "mini_decoder_backward": 3, "gam_multiply_forward": 1,
             "gam_multiply_backward": 1}
_STEP_BUDGET = 50


class _DeviceWork(TorchDispatchMode):
    """Records the torch ops that run a kernel."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in _FREE_OPS:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@interpreted
def test_launches_per_call_and_per_training_step(dtype, monkeypatch):
    """Kernel launches plus torch ops that run a kernel, per host call: casts are folded into the
    kernels (bfloat16 counts as float32 does), and gradients of any strides (here an expanded one, as
    `logits.sum().backward()` hands it) are read in place."""
    monkeypatch.setattr(host, "new_tensor", _ALLOCATE)
    launches = []

    def counted_launch(kernel, *args, _launch=host.launch, **constexprs):
        launches.append(kernel)
        with _disable_current_modes():  # the interpreter's own tensor work is the kernel's
            _launch(kernel, *args, **constexprs)
    monkeypatch.setattr(host, "launch", counted_launch)
    counts = {}

    def call(name, *args):
        launches.clear()
        with _DeviceWork() as work:
            result = getattr(host, name)(*args)
        counts[name] = len(launches) + len(work.ops)
        assert not work.ops, f"{name} ran torch ops on the device: {work.ops}"
        return result

    gen = torch.Generator().manual_seed(15)
    features = [_random(gen, "cpu", dtype, 2, 4, s, s) for s in (8, 4, 2, 1)]
    weight, bias = _random(gen, "cpu", dtype, 1, 16, 3, 3), _random(gen, "cpu", dtype, 1)
    logits, gam = call("mini_decoder_forward", features, weight, bias, [32, 32])
    expanded = torch.ones((), dtype=dtype).expand_as(logits)
    call("mini_decoder_backward", expanded, _random(gen, "cpu", dtype, 2, 1, 32, 32), gam, features, weight)
    outputs = call("gam_multiply_forward", features, gam, True)
    call("gam_multiply_backward", [_random(gen, "cpu", dtype, *o.shape) for o in outputs], features, gam, True)
    for name, expected in _LAUNCHES.items():
        assert counts[name] == expected, f"{name}: {counts[name]} launches, expected {expected}"
    assert 6 * sum(counts.values()) <= _STEP_BUDGET
    # Windows of 3 x 3 and 1 x 1: the backward's two launches.
    odd = [_random(gen, "cpu", dtype, 2, 4, 4, 4), _random(gen, "cpu", dtype, 2, 4, 12, 12)]
    call("gam_multiply_backward", [_random(gen, "cpu", dtype, *f.shape) for f in odd], odd,
         torch.rand(2, 1, 12, 12, generator=gen).to(dtype), False)
    assert counts["gam_multiply_backward"] == 2


@pytest.mark.parametrize("device", DEVICES)
def test_any_layout_and_unused_outputs(device):
    """channels_last and transposed inputs; gradients reaching only one output of each op."""
    gen = torch.Generator().manual_seed(3)
    base = [_random(gen, device, torch.float64, 2, 3, 5, 7), _random(gen, device, torch.float64, 2, 4, 2, 3)]
    features = [base[0].contiguous(memory_format=torch.channels_last),
                base[1].transpose(2, 3).contiguous().transpose(2, 3)]
    assert not features[0].is_contiguous() and not features[1].is_contiguous()
    weight = _random(gen, device, torch.float64, 1, 7, 3, 3)
    bias = _random(gen, device, torch.float64, 1)
    gam = torch.rand(2, 1, 10, 21, generator=gen, dtype=torch.float64).to(device)

    def run(backend):
        leaves = [t.detach().clone().requires_grad_() for t in (*features, weight, bias, gam)]
        logits, _ = ops.mini_decoder(leaves[:2], leaves[2], leaves[3], (10, 21), backend=backend)
        attended = ops.gam_multiply(leaves[:2], leaves[4].transpose(2, 3).contiguous().transpose(2, 3), False,
                                    backend=backend)
        (logits.square().sum() + attended[1].sum()).backward()
        return [logits.detach(), attended[1].detach()] + [t.grad for t in leaves]

    assert_each_close(run("triton"), run("reference"), torch.float64, 1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_expanded_incoming_gradients(device):
    """`logits.sum()` and `gam.mean()` hand the backward gradients of stride 0, read in place."""
    inputs, _ = _mini_decoder_problem(2, [(3, 5, 7), (2, 3, 4)], (13, 17), device, torch.float64, seed=16)

    def run(backend):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        logits, gam = ops.mini_decoder(leaves[:2], leaves[2], leaves[3], (13, 17), backend=backend)
        (logits.sum() + gam.mean()).backward()
        return [t.grad for t in leaves]

    assert_each_close(run("triton"), run("reference"), torch.float64, 1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device):
    gen = torch.Generator().manual_seed(4)
    features = [_random(gen, device, torch.float64, 1, 2, 3, 2).requires_grad_(),
                _random(gen, device, torch.float64, 1, 1, 2, 1).requires_grad_()]
    weight = _random(gen, device, torch.float64, 1, 3, 3, 3).requires_grad_()
    bias = _random(gen, device, torch.float64, 1).requires_grad_()
    gam = torch.rand(1, 1, 6, 4, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: ops.mini_decoder(t[:2], t[2], t[3], (7, 5), backend="triton"),
                                    (*features, weight, bias), fast_mode=True)
    for reverse in (False, True):
        assert torch.autograd.gradcheck(lambda *t: tuple(ops.gam_multiply(t[:2], t[2], reverse, backend="triton")),
                                        (*features, gam), fast_mode=True)


def _op_samples(device: str) -> list[tuple]:
    gen = torch.Generator().manual_seed(5)
    features = [_random(gen, device, torch.float32, 2, 2, 3, 4), _random(gen, device, torch.float32, 2, 1, 2, 2)]
    weight = _random(gen, device, torch.float32, 1, 3, 3, 3)
    bias = _random(gen, device, torch.float32, 1)
    gam = torch.rand(2, 1, 6, 8, generator=gen).to(device)
    grad = _random(gen, device, torch.float32, 2, 1, 6, 8)
    with_grad = [t.clone().requires_grad_() for t in features]
    lib = torch.ops.paanet_fast
    return [
        (lib.triton_mini_decoder.default, (with_grad, weight.clone().requires_grad_(), bias, [6, 8])),
        (lib.triton_gam_multiply.default, (with_grad, gam.clone().requires_grad_(), True)),
        (lib.triton_mini_decoder_backward.default, (grad, grad.flip(-1), gam, features, weight)),
        (lib.triton_gam_multiply_backward.default, ([f.flip(-1) for f in features], features, gam, False)),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for op, args in _op_samples(device):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    """torch.compile traces through the front end and both ops without a graph break.

    Under the interpreter the ops are opaque and aot_eager checks the tracing; on a GPU Inductor
    compiles the Triton kernels into the graph.
    """
    compile_backend = "inductor" if device == "cuda" else "aot_eager"
    inputs, grads = _mini_decoder_problem(2, [(3, 5, 7), (2, 3, 4)], (15, 28), device, torch.float32, seed=6)

    def layer(t):
        logits, gam = ops.mini_decoder(t[:2], t[2], t[3], (15, 28), backend="triton")
        attended = ops.gam_multiply(t[:2], gam, True, backend="triton")
        return logits, attended[0].sum() + attended[1].sum()

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend=compile_backend)
    grads = [grads[0], torch.ones((), device=device)]
    assert_each_close(_outputs_and_grads(compiled, inputs, grads), _outputs_and_grads(layer, inputs, grads),
                    torch.float32, 1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_model_matches_reference_backend(device):
    """PAANet with the Triton backend against the reference backend, one state dict, training mode.

    Both blocks (attention and reverse attention); one layer each in the interpreter, for time.
    """
    torch.manual_seed(7)
    model = PAANet(encoder_name="resnet18", encoder_weights=None, growth=8, num_layers=1 if device == "cpu" else 3,
                   backend="reference")
    model = model.to(device=device, dtype=torch.float64).train()
    x = torch.randn(2, 3, 27, 30, dtype=torch.float64, device=device)

    state = {k: v.clone() for k, v in model.state_dict().items()}

    def run(backend):
        model.load_state_dict(state)  # identical parameters and batch-norm statistics for both runs
        model.backend = backend
        model.zero_grad()
        out = model(x, return_aux=True)
        loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype, device=device).view_as(t)).sum()
                   for t in [out.logits, *out.aux_logits, *out.gam_logits])
        loss.backward()
        return [out.logits, *out.aux_logits, *out.gam_logits] + [p.grad for p in model.parameters()]

    expected = run("reference")
    actual = run("triton")
    assert len(actual) == len(expected) and all(a is not None for a in actual)
    # A gradient that is zero in exact arithmetic (a bias before a training-mode batch norm) is roundoff
    # of sums of the network's gradients: its tolerance is relative to the largest of them.
    expected = [e.detach() for e in expected]
    assert_each_close([a.detach() for a in actual], expected, torch.float64, 1e-8,
                    floor=max(e.abs().max().item() for e in expected))


@pytest.mark.parametrize("device", DEVICES)
def test_more_than_four_scales_is_a_clear_error(device):
    features = [torch.randn(1, 1, 2, 2, device=device) for _ in range(5)]
    weight, bias = torch.randn(1, 5, 3, 3, device=device), torch.randn(1, device=device)
    gam = torch.rand(1, 1, 4, 4, device=device)
    with pytest.raises(ValueError, match="1 to 4 scales in `features`"):
        ops.mini_decoder(features, weight, bias, (4, 4), backend="triton")
    with pytest.raises(ValueError, match="1 to 4 scales in `features`"):
        ops.gam_multiply(features, gam, backend="triton")


@interpreted
def test_operators_check_their_arguments_on_fake_and_meta_tensors():
    """The Triton operators' fake kernels reject what a run would (torch.compile traces them on fake
    tensors), and a call mixing meta and CPU tensors, which reaches the fake kernel, is an error."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    triton_ops = torch.ops.paanet_fast
    features, weight = [torch.rand(2, 3, 4, 6), torch.rand(2, 2, 2, 3)], torch.rand(1, 5, 3, 3)
    gam = torch.rand(2, 1, 8, 12)
    with pytest.raises(ValueError, match=r"`gam` is on meta but the features are on cpu"):
        triton_ops.triton_gam_multiply(features, gam.to("meta"), False)
    with pytest.raises(ValueError, match=r"`weight` is on meta but the features are on cpu"):
        triton_ops.triton_mini_decoder(features, weight.to("meta"), torch.rand(1), [8, 12])
    with FakeTensorMode() as mode:
        features, weight, gam = [mode.from_tensor(f) for f in features], mode.from_tensor(weight), mode.from_tensor(gam)
        with pytest.raises(ValueError, match=r"GAM size \(8, 10\) must be an integer multiple"):
            triton_ops.triton_gam_multiply(features, gam[..., :10], True)
        with pytest.raises(ValueError, match=r"`weight` must have shape \(1, 5, 3, 3\)"):
            triton_ops.triton_mini_decoder(features, weight[:, :4], mode.from_tensor(torch.rand(1)), [8, 12])
        with pytest.raises(ValueError, match=r"`grad_gam` has dtype"):
            triton_ops.triton_mini_decoder_backward(gam, gam.double(), gam, features, weight)
        with pytest.raises(ValueError, match=r"grad_outputs\[1\] must have the shape of features\[1\]"):
            triton_ops.triton_gam_multiply_backward([features[0], features[0]], features, gam, False)


@interpreted
def test_more_than_two_to_the_31_elements_a_sample_is_a_clear_error():
    """The kernels index within a sample in int32: the host refuses a sample of 2^31 elements or more,
    naming the tensor (fake tensors: shapes without memory)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    triton_ops = torch.ops.paanet_fast
    with FakeTensorMode():
        big = torch.empty(1, 2**15, 256, 256)  # 2^31 elements a sample
        with pytest.raises(ValueError, match=r"fewer than 2\^31 elements per sample in `features\[1\]`, "
                                             r"got a sample of shape \(32768, 256, 256\)"):
            triton_ops.triton_mini_decoder([torch.empty(1, 1, 512, 512), big], torch.empty(1, 2**15 + 1, 3, 3),
                                           torch.empty(1), [1024, 1024])
        gam = torch.empty(1, 1, 2**16, 2**15)
        with pytest.raises(ValueError, match=r"fewer than 2\^31 elements per sample in the GAM, "
                                             r"got a sample of shape \(65536, 32768\)"):
            triton_ops.triton_gam_multiply([torch.empty(1, 1, 2**14, 2**13)], gam, False)
        just_below = torch.empty(1, 1, 46340, 46338)  # 2^31 - 180,728 elements a sample: allowed
        products = triton_ops.triton_gam_multiply([torch.empty(1, 3, 2, 3)], just_below, False)
        assert products[0].shape == (1, 3, 2, 3)


def test_backend_devices():
    """CPU tensors only under the interpreter; otherwise asking for Triton on the CPU says why not."""
    assert ("cpu" in resolve("triton", torch.device("cuda")).device_types) == INTERPRET
    if not INTERPRET:
        with pytest.raises(ValueError, match="'triton' computes"):
            ops.gam_multiply([torch.randn(1, 1, 2, 2)], torch.rand(1, 1, 4, 4), backend="triton")


def _run_without_interpreter(script: str) -> subprocess.CompletedProcess:
    """Run tests/`script`, which compiles kernels for sm_90 without a GPU, in a process without TRITON_INTERPRET."""
    pytest.importorskip("triton.backends.nvidia", reason="this triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(root / "tests" / script)], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)


def test_kernels_compile_for_cuda():
    """Every kernel in every dtype compiles to a CUDA binary (the interpreter would not notice if not)."""
    result = _run_without_interpreter("triton_compile_check.py")
    assert result.returncode == 0, result.stdout + result.stderr
    # 16 kernel variants (mini_decoder's forward kernel separable and per pixel; gam_multiply's forward
    # and backward kernels and the region kernel's two directions, each with and without REVERSE;
    # gam_grad_kernel with an int32 and an int64 divider) in 4 dtypes, again with ones in float32, and
    # with one scale in float32
    assert result.stdout.count("ok ") == 96


def test_no_launch_passes_a_written_tensor_twice():
    """torch.compile copies each argument its analysis finds written back to its tensor: a tensor passed
    twice (a scale's output and an unused scale's filler) would get the unwritten copy (NaN on a GPU)."""
    result = _run_without_interpreter("triton_written_arguments_check.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout and result.stdout.count("ok ") >= 4 * 9, result.stdout


@on_gpu
def test_autocast_runs_the_kernels_in_half_precision():
    """Under autocast the front end casts the features to float16 (the float32 weight and bias are read
    as they are), and the low-resolution matmuls stay in float32."""
    inputs, grads = _mini_decoder_problem(2, [(8, 16, 12), (4, 8, 6)], (64, 48), "cuda", torch.float32, seed=8)
    with torch.autocast("cuda", dtype=torch.float16):
        logits, gam = ops.mini_decoder(inputs[:2], inputs[2], inputs[3], (64, 48), backend="triton")
    assert logits.dtype == gam.dtype == torch.float16
    expected = reference.mini_decoder([f.half().double() for f in inputs[:2]], inputs[2].double(),
                                      inputs[3].double(), (64, 48))
    assert_each_close([logits, gam], list(expected), torch.float16, 2e-3)
