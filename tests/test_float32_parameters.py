"""float32 parameters beside half-precision features (issue 22: no casts under autocast).

A mixed-precision model keeps its parameters in float32 and computes in float16 or bfloat16. The
mini-decoder's weight and bias may stay float32 beside half features: every backend reads them as
they are (the kernels compute in float32), returns outputs in the features' dtype and the
parameters' gradients in float32, and under autocast the front end no longer casts them, which
saved a cast launch per parameter and its gradient's cast back. Other mixes are still rejected.
"""
from __future__ import annotations

import pytest
import torch

from ops_cases import TOLERANCE, assert_close, mini_decoder_case, mini_decoder_names
from paanet_fast import ops
from paanet_fast.triton._runtime import INTERPRET

HALF_TYPES = [torch.bfloat16, torch.float16]
OPS = torch.ops.paanet_fast
on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
interpreted = pytest.mark.skipif(not INTERPRET, reason="Triton computes CPU tensors only under TRITON_INTERPRET=1 "
                                                       "(tests/conftest.py sets it when there is no GPU)")
compiled_triton = pytest.mark.skipif(INTERPRET, reason="TRITON_INTERPRET is set")
# (backend, device) of the fused backends.
FUSED = [pytest.param("cpp", "cpu", id="cpp"),
         pytest.param("triton", "cpu", marks=interpreted, id="triton-interpreter"),
         pytest.param("cuda", "cuda", marks=on_gpu, id="cuda"),
         pytest.param("triton", "cuda", marks=[on_gpu, compiled_triton], id="triton-cuda")]
CPP_NAMES = {torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float", torch.float64: "Double"}


def _backend(name: str) -> str:
    if name == "triton":
        pytest.importorskip("triton", reason="the triton package is not installed")
        import paanet_fast.triton  # noqa: F401  (registers the backend; runs in the interpreter here)
    return name


def _mixed_case(seed: int, dtype: torch.dtype):
    """Half features; a float32 weight and bias with values no half type holds (so that a backend
    rounding them to half would show)."""
    case = mini_decoder_case(seed, dtype)
    gen = torch.Generator().manual_seed(100 + seed)
    case.weight = torch.randn(case.weight.shape, generator=gen) / case.weight.shape[1] ** 0.5
    case.bias = torch.randn(1, generator=gen)
    assert not torch.equal(case.weight, case.weight.to(dtype).float())
    return case


def _output_grads(shape: torch.Size, case, seed: int) -> list[torch.Tensor]:
    """The gradients of logits and gam: values of the features' dtype, so that every cast sees the same ones."""
    gen = torch.Generator().manual_seed(seed + 1)
    return [torch.randn(shape, generator=gen).to(case.features[0].dtype) for _ in range(2)]


def _outputs_and_grads(backend: str, device: str, case, cast: torch.dtype | None, seed: int) -> list[torch.Tensor]:
    """logits, gam, then the gradients of the features, weight and bias (all on the CPU), for random
    output gradients; every input cast to `cast` first if given."""
    leaves = [(t if cast is None else t.to(cast)).detach().to(device).requires_grad_(True)
              for t in (*case.features, case.weight, case.bias)]
    n = len(case.features)
    logits, gam = ops.mini_decoder(leaves[:n], leaves[n], leaves[n + 1], case.size, backend=backend)
    grads = [g.to(device=device, dtype=logits.dtype) for g in _output_grads(logits.shape, case, seed)]
    torch.autograd.backward([logits, gam], grads)
    return [t.detach().cpu() for t in (logits, gam, *(leaf.grad for leaf in leaves))]


@pytest.mark.parametrize("backend,device", [pytest.param("reference", "cpu", id="reference"),
                                            pytest.param("portable", "cpu", id="portable"), *FUSED])
@pytest.mark.parametrize("dtype", HALF_TYPES, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("seed", range(2))
def test_outputs_and_gradients_match_float64(backend, device, dtype, seed):
    """Outputs and features' gradients in the features' dtype, the weight's and bias's in float32, all
    within the half type's tolerance of the float64 computation on the same values."""
    backend = _backend(backend)
    case = _mixed_case(seed, dtype)
    actual = _outputs_and_grads(backend, device, case, None, seed)
    expected = _outputs_and_grads("reference", "cpu", case, torch.float64, seed)
    n = len(case.features)
    dtypes = [dtype, dtype, *[dtype] * n, torch.float32, torch.float32]
    for name, a, e, expected_dtype in zip(mini_decoder_names(case), actual, expected, dtypes, strict=True):
        assert a.dtype == expected_dtype, f"{name}: {a.dtype}"
        if name == "grad bias" and backend in ("reference", "portable"):
            # The bias's gradient sums dZ = dlogits + dgam G (1 - G) over every pixel, and the random
            # gradients cancel. ATen's half-precision arithmetic rounds each term (the fused kernels
            # compute in float32), so its error is bounded by the terms' sizes, not the sum's: 2.3% of
            # the sum on a Xeon (AVX-512), 0.1% on an AMD EPYC (AVX2).
            grad_logits, grad_gam = (g.double() for g in _output_grads(expected[0].shape, case, seed))
            terms = (grad_logits + grad_gam * expected[1] * (1 - expected[1])).abs().sum()
            assert (a.double() - e).abs().item() <= TOLERANCE[dtype] * terms.item(), f"{backend} {name}"
            continue
        assert_close(a.double(), e, dtype, f"{backend} {name} ({case.describe()})")


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=["bfloat16", "float16"])
def test_cpp_reads_the_float32_parameters_unrounded(dtype):
    """The CPU kernels compute half inputs in float32: with float32 parameters the results are, bit for
    bit, those of the float32 kernels on the same values, rounded once to the output dtypes."""
    case = _mixed_case(3, dtype)
    size = list(case.size)
    logits, gam = OPS.mini_decoder(case.features, case.weight, case.bias, size)
    expected = OPS.mini_decoder([f.float() for f in case.features], case.weight, case.bias, size)
    assert torch.equal(logits, expected[0].to(dtype)) and torch.equal(gam, expected[1].to(dtype))
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(logits.shape, generator=gen).to(dtype) for _ in range(2)]
    dfeatures, dweight, dbias = OPS.mini_decoder_backward(*grads, gam, case.features, case.weight)
    expected = OPS.mini_decoder_backward(*[g.float() for g in grads], gam.float(),
                                         [f.float() for f in case.features], case.weight)
    for i, (a, e) in enumerate(zip(dfeatures, expected[0], strict=True)):
        assert torch.equal(a, e.to(dtype)), f"grad features[{i}]"
    assert dweight.dtype == dbias.dtype == torch.float32
    assert torch.equal(dweight, expected[1]) and torch.equal(dbias, expected[2])


@pytest.mark.parametrize("backend,device", FUSED)
def test_autocast_leaves_float32_parameters_uncast(backend, device, monkeypatch):
    """Under autocast the operator receives the float32 weight and bias themselves (no cast op, no copy),
    and their gradients are float32 without a cast back."""
    backend = _backend(backend)
    seen = []
    real = torch.Tensor.to

    def spy(self, *args, **kwargs):
        seen.append(self.shape)
        return real(self, *args, **kwargs)
    case = mini_decoder_case(4, torch.float32)
    weight, bias = (t.to(device).requires_grad_(True) for t in (case.weight, case.bias))
    features = [f.to(device).requires_grad_(True) for f in case.features]
    with torch.autocast(device, dtype=torch.bfloat16):
        monkeypatch.setattr(torch.Tensor, "to", spy)
        logits, gam = ops.mini_decoder(features, weight, bias, case.size, backend=backend)
        monkeypatch.setattr(torch.Tensor, "to", real)
    assert logits.dtype == gam.dtype == torch.bfloat16
    assert weight.shape not in seen and bias.shape not in seen, seen
    (logits.float().sum() + gam.float().square().sum()).backward()
    assert weight.grad.dtype == bias.grad.dtype == torch.float32
    assert all(f.grad.dtype == torch.float32 for f in features)  # autocast's cast of the features, undone


@pytest.mark.parametrize("weight_dtype,feature_dtype", [
    (torch.float32, torch.float64), (torch.float16, torch.float32), (torch.bfloat16, torch.float16),
    (torch.float64, torch.bfloat16)])
@pytest.mark.parametrize("backend", ["front end", "cpp", pytest.param("triton", marks=interpreted)])
def test_other_parameter_dtypes_are_rejected(weight_dtype, feature_dtype, backend):
    case = mini_decoder_case(5, feature_dtype)
    call = {"front end": lambda f, w, b: ops.mini_decoder(f, w, b, case.size, backend="cpp"),
            "cpp": lambda f, w, b: OPS.mini_decoder(f, w, b, list(case.size)),
            "triton": lambda f, w, b: (_backend("triton"), OPS.triton_mini_decoder(f, w, b, list(case.size)))}[backend]
    spelled = (lambda d: str(d)) if backend != "cpp" else CPP_NAMES.get  # the C++ checks print ScalarType names
    message = (rf"`weight` has dtype {spelled(weight_dtype)} but the features have {spelled(feature_dtype)} "
               r"\(parameters may be float32 beside float16 or bfloat16 features\)")
    with pytest.raises(ValueError, match=message):
        call(case.features, case.weight.to(weight_dtype), case.bias)
    with pytest.raises(ValueError, match=message.replace("weight", "bias")):
        call(case.features, case.weight, case.bias.to(weight_dtype))


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck_with_float32_parameters(backend, device):
    _backend(backend)
    case = _mixed_case(6, torch.bfloat16)
    case.features, case.weight, case.bias = ([f.to(device) for f in case.features], case.weight.to(device),
                                             case.bias.to(device))
    name = "triton_mini_decoder" if backend == "triton" else "mini_decoder"
    forward = getattr(OPS, name).default
    backward = getattr(OPS, f"{name}_backward").default
    weight, bias = case.weight.requires_grad_(True), case.bias.requires_grad_(True)
    torch.library.opcheck(forward, (case.features, weight, bias, list(case.size)))
    logits, gam = forward(case.features, case.weight.detach(), case.bias.detach(), list(case.size))
    gen = torch.Generator().manual_seed(6)
    grads = [torch.randn(logits.shape, generator=gen).bfloat16().to(device) for _ in range(2)]
    torch.library.opcheck(backward, (*grads, gam, case.features, case.weight.detach()))


def test_torch_compile_traces_autocast_with_float32_parameters():
    """torch.compile(fullgraph=True) of a mini-decoder call under CPU bf16 autocast: the traced graph (fake
    kernels, the autocast kernel's casts) gives eager's outputs and float32 parameter gradients."""
    case = mini_decoder_case(7, torch.float32)

    def layer(features, weight, bias):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, gam = ops.mini_decoder(features, weight, bias, case.size, backend="cpp")
        return logits, gam

    def run(fn):
        leaves = [t.detach().clone().requires_grad_(True) for t in (*case.features, case.weight, case.bias)]
        n = len(case.features)
        logits, gam = fn(leaves[:n], leaves[n], leaves[n + 1])
        (logits.float().sum() + gam.float().square().sum()).backward()
        return [logits.detach(), gam.detach(), *(leaf.grad for leaf in leaves)]
    eager = run(layer)
    compiled = run(torch.compile(layer, fullgraph=True, backend="aot_eager"))
    assert compiled[-1].dtype == compiled[-2].dtype == torch.float32 and compiled[0].dtype == torch.bfloat16
    for i, (a, e) in enumerate(zip(compiled, eager, strict=True)):
        assert a.dtype == e.dtype and torch.equal(a, e), f"result {i}"
