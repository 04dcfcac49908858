"""The torch.library registration of the four operators: opcheck (schema, fake kernels with
symbolic sizes, autograd registration, AOT dispatch) on several samples, and torch.compile with
fullgraph=True through both operators on the "cpp" backend."""
from __future__ import annotations

import functools

import pytest
import torch
from torch.library import opcheck

from ops_cases import MODEL_STRIDES, assert_close, gam_multiply_case, mini_decoder_case, with_grad
from paanet_fast import ops, reference
from paanet_fast.backends import available_backends
import paanet_fast._compiled  # noqa: E402,F401  (loads the extension: fails here if it is not built)


OPS = torch.ops.paanet_fast


def channels_last(tensors):
    return [t.contiguous(memory_format=torch.channels_last) for t in tensors]


# (dtype, strides, channels-last, requires_grad): odd shapes or model strides, every dtype.
MINI_DECODER_SPECS = [(torch.float64, None, False, True), (torch.float32, MODEL_STRIDES, False, True),
                      (torch.float32, None, True, True), (torch.float64, (4, 8), True, False),
                      (torch.bfloat16, None, False, True)]
# (dtype, strides, channels-last, reverse); the inputs require grad.
GAM_MULTIPLY_SPECS = [(torch.float64, None, False, False), (torch.float32, MODEL_STRIDES, False, True),
                      (torch.float64, None, True, True), (torch.float16, None, False, False)]


def mini_decoder_sample(index: int):
    """(features, weight, bias, size) of mini_decoder for MINI_DECODER_SPECS[index]."""
    dtype, strides, layout, grad = MINI_DECODER_SPECS[index]
    case = mini_decoder_case(100 + index, dtype, strides=strides, max_side=12)
    features = channels_last(case.features) if layout else case.features
    for t in [*features, case.weight, case.bias]:
        t.requires_grad_(grad)
    return features, case.weight, case.bias, list(case.size)


def gam_multiply_sample(index: int):
    """(features, gam, reverse) of gam_multiply for GAM_MULTIPLY_SPECS[index]."""
    dtype, strides, layout, reverse = GAM_MULTIPLY_SPECS[index]
    case = gam_multiply_case(200 + index, dtype, strides=strides, max_window=3)
    features = channels_last(case.features) if layout else case.features
    for t in [*features, case.gam]:
        t.requires_grad_(True)
    return features, case.gam, reverse


@pytest.mark.parametrize("index", range(len(MINI_DECODER_SPECS)))
def test_opcheck_mini_decoder(index):
    opcheck(OPS.mini_decoder.default, mini_decoder_sample(index))


@pytest.mark.parametrize("index", range(len(MINI_DECODER_SPECS)))
def test_opcheck_mini_decoder_backward(index):
    features, weight, bias, size = mini_decoder_sample(index)
    features = [f.detach() for f in features]
    logits, gam = OPS.mini_decoder(features, weight.detach(), bias.detach(), size)
    opcheck(OPS.mini_decoder_backward.default,
            (torch.randn_like(logits), torch.randn_like(gam), gam, features, weight.detach()))


@pytest.mark.parametrize("index", range(len(GAM_MULTIPLY_SPECS)))
def test_opcheck_gam_multiply(index):
    opcheck(OPS.gam_multiply.default, gam_multiply_sample(index))


@pytest.mark.parametrize("index", range(len(GAM_MULTIPLY_SPECS)))
def test_opcheck_gam_multiply_backward(index):
    features, gam, reverse = gam_multiply_sample(index)
    features = [f.detach() for f in features]
    opcheck(OPS.gam_multiply_backward.default,
            ([torch.randn_like(f) for f in features], features, gam.detach(), reverse))


def test_fake_kernels_match_the_real_strides():
    """torch.compile plans buffers from the fake kernels, so strides must agree, not only shapes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    features, weight, bias, size = mini_decoder_sample(3)  # channels-last, model strides
    features = [f.detach() for f in features]
    logits, gam = OPS.mini_decoder(features, weight.detach(), bias.detach(), size)
    real = [*OPS.mini_decoder_backward(logits, gam, gam, features, weight.detach())[0],
            *OPS.gam_multiply(features, gam, False)]
    with FakeTensorMode() as mode:
        fake_features = [mode.from_tensor(f) for f in features]
        fake_gam = mode.from_tensor(gam)
        fake = [*OPS.mini_decoder_backward(fake_gam, fake_gam, fake_gam, fake_features, mode.from_tensor(weight))[0],
                *OPS.gam_multiply(fake_features, fake_gam, False)]
    assert [t.stride() for t in fake] == [t.stride() for t in real]


def paad_layer(features, weight, bias, size, backend):
    """A PAAD layer's use of the two operators: the GAM, then the (reverse) attention products."""
    logits, gam = ops.mini_decoder(features, weight, bias, size, backend=backend)
    products = ops.gam_multiply(features, gam, reverse=True, backend=backend)
    return logits, products


def test_torch_compile_fullgraph_runs_both_operators():
    torch._dynamo.reset()
    compiled = torch.compile(paad_layer, fullgraph=True)
    case = mini_decoder_case(300, torch.float64, strides=(2, 4))

    def run(fn, backend):
        features = [f.detach().clone().requires_grad_(True) for f in case.features]
        weight = case.weight.detach().clone().requires_grad_(True)
        logits, products = fn(features, weight, case.bias, case.size, backend)
        (logits.square().sum() + sum(p.sin().sum() for p in products)).backward()
        return [logits.detach(), *[p.detach() for p in products], *[f.grad for f in features], weight.grad]

    expected = run(paad_layer, "reference")
    actual = run(compiled, "cpp")
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, torch.float64, f"result {i}")


@pytest.mark.parametrize("used", [0, 1])
def test_gradients_when_only_one_output_is_used(used):
    """Autograd hands the unused output a zero (or None) gradient; the result must not change."""
    case = mini_decoder_case(301, torch.float64, max_side=9)

    def grads(fn):
        features, (weight, bias) = with_grad(case.features), with_grad([case.weight, case.bias])
        output = fn(features, weight, bias, case.size)[used]
        weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(302), dtype=output.dtype)
        (output * weights).sum().backward()
        return [*[f.grad for f in features], weight.grad, bias.grad]

    expected = grads(reference.mini_decoder)
    for i, (a, e) in enumerate(zip(grads(functools.partial(ops.mini_decoder, backend="cpp")), expected)):
        assert_close(a, e, torch.float64, f"gradient {i} with only output {used} used")


# Which of mini_decoder's inputs (features 0..n-1, then weight, bias) require gradients.
SOME_INPUTS = {"one feature": {1}, "weight and bias": {"weight", "bias"}, "features": {0, 1, 2}}


@pytest.mark.parametrize("which", list(SOME_INPUTS))
def test_gradients_when_only_some_inputs_require_them(which):
    """The autograd kernels (paanet_fast.op_autograd) hand each input that requires a gradient its own,
    through lists of tensors: against the reference, both operators in turn, float64."""
    wanted = SOME_INPUTS[which]
    case = mini_decoder_case(303, torch.float64, strides=(1, 2, 4))

    def grads(backend):
        features = [f.detach().clone().requires_grad_(i in wanted) for i, f in enumerate(case.features)]
        weight = case.weight.detach().clone().requires_grad_("weight" in wanted)
        bias = case.bias.detach().clone().requires_grad_("bias" in wanted)
        logits, gam = ops.mini_decoder(features, weight, bias, case.size, backend=backend)
        products = ops.gam_multiply(features, gam, reverse=False, backend=backend)
        (logits.sin().sum() + sum((p * p.detach().cos()).sum() for p in products)).backward()
        leaves = [*features, weight, bias]
        assert [t.grad is not None for t in leaves] == [t.requires_grad for t in leaves]
        return [t.grad for t in leaves if t.grad is not None]

    expected = grads("reference")
    for i, (a, e) in enumerate(zip(grads("cpp"), expected, strict=True)):
        assert_close(a, e, torch.float64, f"gradient {i} with {which} requiring gradients")


def test_the_compiled_extension_is_built():
    """Every other test here exercises the cpp backend: without the extension they must fail, not skip."""
    from paanet_fast.backends import unavailable_reason

    assert "cpp" in available_backends(), f"the cpp backend is unavailable: {unavailable_reason('cpp')}"
