"""Second (and third) derivatives through both operators on every backend against the reference's,
gradgradcheck in float64, and opcheck of the backward operators with inputs that require grad.

Before paanet_fast.double_backward, the backward operators of cpp, cuda and triton had no autograd
formula: differentiating a gradient went through PyTorch's fallback, which only warns and returns
wrong numbers. The earlier tests could not see it: gradcheck checks first derivatives only, and
opcheck of the backward operators was given inputs that did not require grad, so its autograd
registration check had nothing to check.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.testing._internal.optests.generate_tests import OpCheckError
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from ops_cases import (TOLERANCE, GamMultiplyCase, MiniDecoderCase, relative_error, tiny_gam_multiply_case,
                       tiny_mini_decoder_case, with_grad)
from paanet_fast import ops, portable
import paanet_fast._compiled  # noqa: E402,F401  (loads the extension: fails here if it is not built)
import paanet_fast.triton  # noqa: E402,F401  (registers the Triton backend and its operators)
from paanet_fast.triton._runtime import INTERPRET

OPS = torch.ops.paanet_fast
HAS_GPU = torch.cuda.is_available()
on_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
interpreted = pytest.mark.skipif(not INTERPRET, reason="Triton computes CPU tensors only under TRITON_INTERPRET=1 "
                                                       "(tests/conftest.py sets it when there is no GPU)")
# (backend, device): every backend on the CPU, and on a GPU the CUDA, Triton and portable ones.
TARGETS = [
    pytest.param("cpp", "cpu", id="cpp"),
    pytest.param("portable", "cpu", id="portable"),
    pytest.param("triton", "cpu", marks=interpreted, id="triton-interpreter"),
    pytest.param("cuda", "cuda", marks=on_gpu, id="cuda"),
    pytest.param("triton", "cuda", marks=[on_gpu, pytest.mark.skipif(INTERPRET, reason="TRITON_INTERPRET is set")],
                 id="triton-cuda"),
    pytest.param("portable", "cuda", marks=on_gpu, id="portable-cuda"),
]


def on(device: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.to(device) for t in tensors]


def derivatives(layer, inputs: list[torch.Tensor], seed: int, order: int) -> list[torch.Tensor]:
    """d^order/d(inputs)^order of a random non-linear loss of the layer's outputs, each order after
    the first contracted with a random direction: [grad] for order 1, [d<v, grad>] for order 2..."""
    leaves = with_grad(inputs)
    outputs = layer(leaves)
    gen = torch.Generator().manual_seed(seed)

    def randn_like(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t)

    # sin and square: non-linear in every output, so that every second-order term is non-zero.
    scalar = sum((o * randn_like(o)).sin().sum() + o.square().sum() for o in outputs)
    for k in range(order):
        grads = torch.autograd.grad(scalar, leaves, create_graph=k + 1 < order, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
        scalar = sum((g * randn_like(g)).sum() for g in grads)
    return grads


def tiny_paad_case(seed: int) -> MiniDecoderCase:
    """tiny_gam_multiply_case's features (GAM windows 2x1 and 3x2) with a mini-decoder weight."""
    gm = tiny_gam_multiply_case(seed)
    gen = torch.Generator().manual_seed(seed)
    channels = sum(f.shape[1] for f in gm.features)
    return MiniDecoderCase(gm.features, torch.randn(1, channels, 3, 3, generator=gen, dtype=torch.float64) / 3,
                           torch.randn(1, generator=gen, dtype=torch.float64), tuple(gm.gam.shape[-2:]))


def paad_layer(backend: str, n: int, size: tuple[int, int], reverse: bool):
    """A PAAD layer's use of both operators: the GAM, then the attention products with that GAM."""
    def layer(leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        features, weight, bias = leaves[:n], leaves[n], leaves[n + 1]
        logits, gam = ops.mini_decoder(features, weight, bias, size, backend=backend)
        return [logits, gam, *ops.gam_multiply(features, gam, reverse, backend=backend)]
    return layer


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("backend,device", TARGETS)
def test_higher_derivatives_of_a_paad_layer_match_the_reference(backend, device, order, reverse):
    """Both operators chained as in the model, so that the GAM reaches gam_multiply's backward from
    mini_decoder's graph and every cross term of the second derivative is exercised."""
    case = tiny_paad_case(10 + order)
    n, inputs = len(case.features), on(device, [*case.features, case.weight, case.bias])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "autograd kernel was not registered" fallback on the way
        actual = derivatives(paad_layer(backend, n, case.size, reverse), inputs, order, order)
    expected = derivatives(paad_layer("reference", n, case.size, reverse), inputs, order, order)
    for i, (a, e) in enumerate(zip(actual, expected)):
        err = relative_error(a, e)
        assert err <= TOLERANCE[torch.float64], f"order {order}, input {i}: relative error {err:.3g}"


def gradgradcheck_both_operators(backend: str, device: str, md: MiniDecoderCase, gm: GamMultiplyCase) -> None:
    n = len(md.features)

    def mini_decoder(*args):
        return ops.mini_decoder(list(args[:n]), args[n], args[n + 1], md.size, backend=backend)

    inputs = [t.requires_grad_() for t in on(device, [*md.features, md.weight, md.bias])]
    assert torch.autograd.gradgradcheck(mini_decoder, inputs)
    for reverse in (False, True):
        def gam_multiply(*args):
            return tuple(ops.gam_multiply(list(args[:-1]), args[-1], reverse, backend=backend))

        inputs = [t.requires_grad_() for t in on(device, [*gm.features, gm.gam])]
        assert torch.autograd.gradgradcheck(gam_multiply, inputs)


# Not the Triton interpreter: there a gradgradcheck, even of random projections of the Jacobians, took
# about 100 s of the suite, and test_higher_derivatives_of_a_paad_layer_match_the_reference already
# checks its second and third derivatives in float64 against the reference's, through both operators.
@pytest.mark.parametrize("backend,device", [t for t in TARGETS if t.id != "triton-interpreter"])
def test_gradgradcheck(backend, device):
    gradgradcheck_both_operators(backend, device, tiny_mini_decoder_case(20), tiny_gam_multiply_case(21))


# --- opcheck of the backward operators with inputs that require grad ---------------------------------

def backward_op_samples(prefix: str, device: str, dtype: torch.dtype) -> list[tuple]:
    """(backward operator, arguments) for both operators; every tensor requires grad; samples in
    reduced precision are channels-last and reverse."""
    seed = {torch.float64: 30, torch.float32: 31, torch.bfloat16: 32}[dtype]
    md = tiny_mini_decoder_case(seed, dtype)
    features = on(device, md.features)
    if dtype != torch.float64:
        features = [f.contiguous(memory_format=torch.channels_last) for f in features]
    weight, bias = on(device, [md.weight, md.bias])
    logits, gam = getattr(OPS, prefix + "mini_decoder")(features, weight, bias, list(md.size))
    grads = [torch.randn_like(logits), torch.randn_like(gam)]
    gm = tiny_gam_multiply_case(seed, dtype)
    gm_features = on(device, gm.features)
    return [(getattr(OPS, prefix + "mini_decoder_backward").default,
             (*with_grad([*grads, gam]), with_grad(features), *with_grad([weight]))),
            (getattr(OPS, prefix + "gam_multiply_backward").default,
             (with_grad([torch.randn_like(f) for f in gm_features]), with_grad(gm_features),
              *with_grad(on(device, [gm.gam])), dtype != torch.float64))]


OPERATORS = [
    pytest.param("", "cpu", id="cpp"),
    pytest.param("triton_", "cpu", marks=interpreted, id="triton-interpreter"),
    pytest.param("", "cuda", marks=on_gpu, id="cuda"),
    pytest.param("triton_", "cuda", marks=[on_gpu, pytest.mark.skipif(INTERPRET, reason="TRITON_INTERPRET is set")],
                 id="triton-cuda"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prefix,device", OPERATORS)
def test_opcheck_backward_operators_with_inputs_that_require_grad(prefix, device, dtype):
    for op, args in backward_op_samples(prefix, device, dtype):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("prefix,device", OPERATORS)
@pytest.mark.xfail(torch.__version__ < (2, 13), raises=OpCheckError, strict=True,
                   reason="torch 2.10 to 2.12's test_aot_dispatch_dynamic runs backward twice through the graph "
                          "that the inputs come from (seen with 2.10 and 2.11, any backend; 2.14 copies them first)")
def test_opcheck_backward_operators_on_their_forward_operators_outputs(prefix, device):
    """Every input requires grad, and the backward operators get the forward operators' own outputs
    still in the autograd graph: G straight from mini_decoder, gam_multiply's products as the
    incoming gradients (issue 17 saw test_aot_dispatch_dynamic fail there; it passes on torch 2.14)."""
    md, gm = tiny_mini_decoder_case(33, torch.float32), tiny_gam_multiply_case(34, torch.float32)
    features, (weight, bias) = with_grad(on(device, md.features)), with_grad(on(device, [md.weight, md.bias]))
    logits, gam = getattr(OPS, prefix + "mini_decoder")(features, weight, bias, list(md.size))
    torch.library.opcheck(getattr(OPS, prefix + "mini_decoder_backward").default,
                          (logits * 0.5, torch.randn_like(gam).requires_grad_(), gam, features, weight))
    gm_features, (gm_gam,) = with_grad(on(device, gm.features)), with_grad(on(device, [gm.gam]))
    products = getattr(OPS, prefix + "gam_multiply")(gm_features, gm_gam, True)
    torch.library.opcheck(getattr(OPS, prefix + "gam_multiply_backward").default,
                          (list(products), gm_features, gm_gam, True))


def flat_tensors(values) -> list[torch.Tensor]:
    return [t for v in values for t in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("prefix,device", OPERATORS)
def test_backward_operators_differentiate_like_their_portable_twins(prefix, device):
    """A backward operator differentiated on its own (not through a forward): the same
    vector-Jacobian product as the portable first backward's, for every input including G."""
    twins = [portable.mini_decoder_backward, portable.gam_multiply_backward]
    for (op, args), twin in zip(backward_op_samples(prefix, device, torch.float64), twins):
        results = []
        for fn in (op, twin):
            outputs = flat_tensors(fn(*args))
            gen = torch.Generator().manual_seed(40)
            weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device) for o in outputs]
            results.append(torch.autograd.grad(outputs, flat_tensors(args), weights))
        for i, (a, e) in enumerate(zip(*results)):
            assert relative_error(a, e) <= TOLERANCE[torch.float64], f"{op}: gradient of input {i}"


# --- opcheck of every operator call that a PAAD layer's forward and backward dispatch ----------------

class OperatorRecorder(TorchDispatchMode):
    """Records each paanet_fast operator call with copies of its arguments, laid out as they were:
    the gradients that .sum() hands a backward operator are expanded (stride 0), and a plain
    clone would make them contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch._ops.OpOverload, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "paanet_fast":
            self.calls.append((func, tree_map_only(torch.Tensor, copy_keeping_layout, args)))
        return func(*args, **(kwargs or {}))


def copy_keeping_layout(t: torch.Tensor) -> torch.Tensor:
    storage = t.untyped_storage().clone()
    copy = t.new_empty(0).set_(storage, t.storage_offset(), t.shape, t.stride())
    return copy.requires_grad_(t.requires_grad)


@pytest.mark.parametrize("prefix,device", OPERATORS)
def test_opcheck_the_calls_of_a_paad_layers_forward_and_backward(prefix, device):
    """Issue 22: test_aot_dispatch_dynamic failed on mini_decoder_backward (KeyError on a size symbol
    in torch's _tensorify_python_scalars). Two scales of 2 channels each make opcheck's duck-sized
    symbols meet the weight's check (4 channels = 2 x 2, and 4 is also the second scale's height),
    so that one size becomes an expression of another; portable's float scale of the resize, derived
    from those sizes, was then a SymFloat that the pass could not rebuild."""
    backend = "triton" if prefix else {"cpu": "cpp", "cuda": "cuda"}[device]
    gen = torch.Generator().manual_seed(50)
    features = [torch.randn(2, 2, 8, 12, generator=gen, dtype=torch.float64).to(device).requires_grad_(),
                torch.randn(2, 2, 4, 6, generator=gen, dtype=torch.float64).to(device).requires_grad_()]
    weight, bias = with_grad(on(device, [torch.randn(1, 4, 3, 3, generator=gen, dtype=torch.float64) / 3,
                                         torch.randn(1, generator=gen, dtype=torch.float64)]))
    with OperatorRecorder() as recorder:
        logits, gam = ops.mini_decoder(features, weight, bias, (16, 24), backend=backend)
        products = ops.gam_multiply(features, gam, False, backend=backend)
        (logits.sum() + sum(p.sum() for p in products)).backward()
    names = [func.__name__ for func, _ in recorder.calls]
    assert names == [f"{prefix}{name}.default" for name in
                     ("mini_decoder", "gam_multiply", "gam_multiply_backward", "mini_decoder_backward")]
    assert recorder.calls[-1][1][0].stride() == (0, 0, 0, 0), "the gradient of the logits should be expanded"
    for func, args in recorder.calls:
        torch.library.opcheck(func, args)
