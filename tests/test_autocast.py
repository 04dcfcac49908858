"""CPU mixed precision: the compiled operators and the whole model under torch.autocast("cpu").

The cpp backend under autocast (bfloat16 and float16, train and eval, forward and backward) must
give what the reference backend gives under the same autocast, within the precision of the
autocast dtype. Float64 is left alone by autocast, as PyTorch's own ops leave it; dtype
combinations the model cannot compute get a message naming the input and the model's dtype.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from ops_cases import (assert_close, gam_multiply_case, gam_multiply_names, gam_multiply_outputs_and_grads,
                       mini_decoder_case, mini_decoder_names, mini_decoder_outputs_and_grads)
from paanet_fast import PAANet, PAANetLoss, ops

HALF_TYPES = [torch.bfloat16, torch.float16]
OPS = torch.ops.paanet_fast


def cpu_autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)


# --- the operators --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("seed", range(3))
def test_mini_decoder_under_autocast_matches_the_reference(dtype, seed):
    """float32 inputs (the model's parameters) under autocast: outputs in `dtype`, float32 gradients."""
    case = mini_decoder_case(seed, torch.float32)
    results = {}
    for backend in ("cpp", "reference"):
        with torch.autocast("cpu", dtype=dtype):
            results[backend] = mini_decoder_outputs_and_grads(
                lambda f, w, b, s: ops.mini_decoder(f, w, b, s, backend=backend), case, seed)
    assert results["cpp"][0].dtype == dtype
    for name, a, e in zip(mini_decoder_names(case), results["cpp"], results["reference"]):
        assert_close(a, e, dtype, f"{name} ({case.describe()})")


@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("seed", range(3))
def test_gam_multiply_under_autocast_matches_the_reference(dtype, seed):
    case = gam_multiply_case(seed, torch.float32)
    reverse = seed % 2 == 1
    results = {}
    for backend in ("cpp", "reference"):
        with torch.autocast("cpu", dtype=dtype):
            results[backend] = gam_multiply_outputs_and_grads(
                lambda f, g, r: ops.gam_multiply(f, g, r, backend=backend), case, reverse, seed)
    assert results["cpp"][0].dtype == dtype
    for name, a, e in zip(gam_multiply_names(case), results["cpp"], results["reference"]):
        assert_close(a, e, dtype, f"{name} ({case.describe()})")


def _op_results(cast: torch.dtype | None, autocast: torch.dtype | None, source: torch.dtype) -> list[torch.Tensor]:
    """Outputs and input gradients of both registered operators called directly (no front end),
    on inputs of dtype `source` first cast to `cast` (but for the mini-decoder's float32 weight and
    bias, which autocast leaves as they are), with forward AND backward inside `autocast`."""
    md, gm = mini_decoder_case(4, source, strides=(4, 8)), gam_multiply_case(4, source)
    leaves = [t.detach().clone().requires_grad_(True)
              for t in (*md.features, md.weight, md.bias, *gm.features, gm.gam)]
    n, m = len(md.features), len(gm.features)
    parameters = (n, n + 1)
    inputs = [t if cast is None or (i in parameters and t.dtype == torch.float32) else t.to(cast)
              for i, t in enumerate(leaves)]
    with cpu_autocast(autocast):
        logits, gam = OPS.mini_decoder(inputs[:n], inputs[n], inputs[n + 1], list(md.size))
        products = OPS.gam_multiply(inputs[n + 2:n + 2 + m], inputs[-1], True)
        outputs = [logits, gam, *products]
        gen = torch.Generator().manual_seed(9)
        grads = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outputs]
        torch.autograd.backward(outputs, grads)
    return [o.detach() for o in outputs] + [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_registered_operators_cast_their_inputs_like_builtin_ops(dtype):
    """Under autocast each operator, backward operators included, equals the same call on inputs cast
    to the autocast dtype beforehand, float32 parameters left float32 (the kernels' inner matmuls
    must not be autocast themselves)."""
    under_autocast = _op_results(None, dtype, torch.float32)
    cast_first = _op_results(dtype, None, torch.float32)
    for i, (a, e) in enumerate(zip(under_autocast, cast_first)):
        assert a.dtype == e.dtype and torch.equal(a, e), f"result {i}"


def test_autocast_leaves_float64_alone():
    """As PyTorch's own ops do: float64 operators under autocast compute exactly what they compute without."""
    for dtype in HALF_TYPES:
        under_autocast = _op_results(None, dtype, torch.float64)
        plain = _op_results(None, None, torch.float64)
        for i, (a, e) in enumerate(zip(under_autocast, plain)):
            assert a.dtype == torch.float64 and torch.equal(a, e), f"{dtype}: result {i}"
    case = mini_decoder_case(2, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = ops.mini_decoder(case.features, case.weight, case.bias, case.size, backend="cpp")
    assert logits.dtype == torch.float64


def test_float64_weight_with_float32_features_under_autocast_is_rejected_clearly():
    case = mini_decoder_case(1, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="`weight` has dtype "
                                                                      "torch.float64 .*autocast leaves float64"):
        ops.mini_decoder(case.features, case.weight.double(), case.bias, case.size, backend="cpp")


def _backend_for(backend: str) -> str:
    if backend == "triton":
        pytest.importorskip("triton", reason="the triton package is not installed")
        import paanet_fast.triton  # noqa: F401  (registers the backend; runs in the interpreter here)
    return backend


def _grads_of_a_float32_forward(backend: str, autocast: torch.dtype | None) -> list[torch.Tensor]:
    """Gradients of both operators, forward in float32 outside autocast, backward inside `autocast`."""
    md, gm = mini_decoder_case(5, torch.float32, strides=(2, 4), max_side=9), gam_multiply_case(5, torch.float32)
    leaves = [t.detach().clone().requires_grad_(True) for t in (*md.features, md.weight, md.bias, *gm.features, gm.gam)]
    n, m = len(md.features), len(gm.features)
    logits, gam = ops.mini_decoder(leaves[:n], leaves[n], leaves[n + 1], md.size, backend=backend)
    products = ops.gam_multiply(leaves[n + 2:n + 2 + m], leaves[-1], True, backend=backend)
    outputs = [logits, gam, *products]
    gen = torch.Generator().manual_seed(10)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outputs)
    with cpu_autocast(autocast):
        return list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_backward_inside_autocast_computes_in_the_forward_dtype(backend, dtype):
    """torch.autograd.grad under autocast, of a float32 forward: the float32 gradients, bit for bit, as
    the reference (convolution and interpolation) gives them."""
    backend = _backend_for(backend)
    plain = _grads_of_a_float32_forward(backend, None)
    for i, (a, e) in enumerate(zip(_grads_of_a_float32_forward(backend, dtype), plain)):
        assert a.dtype == torch.float32 and torch.equal(a, e), f"gradient {i}: {(a - e).abs().max().item()}"
    for i, (a, e) in enumerate(zip(plain, _grads_of_a_float32_forward("reference", dtype))):
        assert_close(a, e, torch.float32, f"gradient {i} against the reference's under autocast")


# --- the whole model ------------------------------------------------------------------------------

def _model(backend: str, state: dict | None = None) -> PAANet:
    torch.manual_seed(0)
    net = PAANet("resnet18", encoder_weights=None, backend=backend, growth=8)
    if state is not None:
        net.load_state_dict(state)
    return net


def _amp_step(net: PAANet, x: torch.Tensor, target: torch.Tensor, dtype: torch.dtype):
    """Forward and loss under autocast, backward outside it (as training does)."""
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype):
        out = net(x, return_aux=True)
        loss = PAANetLoss()(out, target)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    return [out.logits, *out.aux_logits, *out.gam_logits], grads


def _norm_relative(a: torch.Tensor, e: torch.Tensor) -> float:
    a, e = a.double(), e.double()
    return ((a - e).norm() / e.norm()).item()


@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("train, shape", [(True, (2, 3, 45, 38)), (False, (1, 3, 37, 70))], ids=["train", "eval"])
def test_cpp_model_under_autocast_matches_the_reference_model(dtype, train, shape):
    """One state dict, both backends, the same autocast. Every output within 2 eps of the autocast
    dtype (norm-relative), all parameter gradients together within 8 eps: the backward runs through
    twice as many rounded layers, and single small gradients (batch-norm scales) are mostly rounding
    noise in either backend, so they are compared as one vector."""
    reference = _model("reference").train(train)
    fast = _model("cpp", reference.state_dict()).train(train)
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen)
    target = (torch.rand(shape[0], 1, *shape[2:], generator=gen) > 0.6).float()
    ref_out, ref_grads = _amp_step(reference, x, target, dtype)
    fast_out, fast_grads = _amp_step(fast, x, target, dtype)
    eps = torch.finfo(dtype).eps
    for i, (a, e) in enumerate(zip(fast_out, ref_out)):
        assert a.dtype == e.dtype == dtype, f"output {i}: {a.dtype} vs {e.dtype}"
        assert _norm_relative(a, e) <= 2 * eps, f"output {i}: {_norm_relative(a, e):.3g} > {2 * eps:.3g}"
    assert fast_grads.dtype == torch.float32
    assert _norm_relative(fast_grads, ref_grads) <= 8 * eps


# --- dtypes the model cannot compute --------------------------------------------------------------

@pytest.mark.parametrize("model_dtype, input_dtype, autocast, message", [
    (torch.float32, torch.float64, None, "input x has dtype torch.float64 but the model's parameters are torch.float32"),
    (torch.float64, torch.float32, None, "input x has dtype torch.float32 but the model's parameters are torch.float64"),
    (torch.float32, torch.bfloat16, None, "input x has dtype torch.bfloat16 but the model's parameters are torch.float32"),
    (torch.float32, torch.float64, torch.bfloat16, "torch.float64 but the model's parameters are torch.float32, and "
                                                   "autocast to torch.bfloat16 leaves float64"),
    (torch.float64, torch.float32, torch.float16, "torch.float32 but the model's parameters are torch.float64, and "
                                                  "autocast to torch.float16 leaves float64"),
    (torch.float16, torch.float32, torch.bfloat16, "under autocast to torch.bfloat16 the model's parameters must be "
                                                   "torch.float32 or torch.bfloat16, but they are torch.float16"),
])
def test_dtype_mismatch_names_the_input_and_the_model_dtype(model_dtype, input_dtype, autocast, message):
    net = _model("cpp").to(model_dtype)
    x = torch.randn(1, 3, 33, 40).to(input_dtype)
    with cpu_autocast(autocast), pytest.raises(ValueError, match=message):
        net(x)


@pytest.mark.parametrize("model_dtype, input_dtype, autocast, expected", [
    (torch.float64, torch.float64, torch.bfloat16, torch.float64),
    (torch.float32, torch.float16, torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.float32, torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.bfloat16, None, torch.bfloat16),
])
def test_dtype_combinations_that_autocast_reconciles_run(model_dtype, input_dtype, autocast, expected):
    net = _model("cpp").to(model_dtype).eval()
    x = torch.randn(1, 3, 33, 40).to(input_dtype)
    with torch.no_grad(), cpu_autocast(autocast):
        out = net(x, return_aux=True)
    assert all(t.dtype == expected for t in (out.logits, *out.gam_logits))
    assert all(torch.isfinite(t).all() for t in (out.logits, *out.gam_logits))


def test_float64_model_under_autocast_computes_as_without_it():
    net = _model("cpp").double().eval()
    x = torch.randn(1, 3, 33, 40, dtype=torch.float64)
    with torch.no_grad():
        plain = net(x, return_aux=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = net(x, return_aux=True)
    for a, e in zip((under_autocast.logits, *under_autocast.gam_logits), (plain.logits, *plain.gam_logits)):
        assert torch.equal(a, e)
