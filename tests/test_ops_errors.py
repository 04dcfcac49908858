"""Bad inputs raise clear errors naming the argument, in the Python front end (paanet_fast.ops), in
the C++ entry points (torch.ops.paanet_fast.*) and in their fake kernels (what torch.compile traces,
and what a call on meta tensors runs); backend selection errors and the auto -> portable fallback."""
from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from paanet_fast import backends, ops, portable
import paanet_fast._compiled  # noqa: E402,F401  (loads the extension: fails here if it is not built)



def features(dtype=torch.float32, batch=2):
    return [torch.rand(batch, 3, 4, 6, dtype=dtype), torch.rand(batch, 2, 2, 3, dtype=dtype)]


def weight(channels=5, dtype=torch.float32):
    return torch.rand(1, channels, 3, 3, dtype=dtype)


def bias(dtype=torch.float32):
    return torch.rand(1, dtype=dtype)


def gam(batch=2, size=(8, 12), dtype=torch.float32):
    return torch.rand(batch, 1, *size, dtype=dtype)


# (case id, features, weight, bias, size, error type, message pattern)
BAD_MINI_DECODER = [
    ("integer features", [f.long() for f in features()], weight(), bias(), (8, 8), ValueError,
     r"features\[0\] must be floating point"),
    ("mixed feature dtypes", [features()[0], features(torch.float64)[1]], weight(), bias(), (8, 8), ValueError,
     r"features\[1\] has dtype"),
    ("integer second feature", [features()[0], features()[1].long()], weight(), bias(), (8, 8), ValueError,
     r"features\[1\] must be floating point"),
    ("weight dtype", features(), weight(dtype=torch.float64), bias(), (8, 8), ValueError, r"`weight` has dtype"),
    ("bias dtype", features(), weight(), bias(torch.float64), (8, 8), ValueError, r"`bias` has dtype"),
    ("weight channels", features(), weight(channels=4), bias(), (8, 8), ValueError,
     r"`weight` must have shape \(1, 5, 3, 3\)"),
    ("weight kernel size", features(), torch.rand(1, 5, 5, 5), bias(), (8, 8), ValueError,
     r"`weight` must have shape \(1, 5, 3, 3\)"),
    ("weight outputs", features(), torch.rand(2, 5, 3, 3), bias(), (8, 8), ValueError, r"`weight` must have shape"),
    ("bias shape", features(), weight(), torch.rand(2), (8, 8), ValueError, r"`bias` must have shape \(1,\)"),
    ("3-D features", [features()[0][0], features()[1]], weight(), bias(), (8, 8), ValueError,
     r"features\[0\] must be 4-D"),
    ("batch mismatch", [features()[0], features(batch=3)[1]], weight(), bias(), (8, 8), ValueError,
     r"features\[1\] has batch 3"),
    ("empty list", [], torch.rand(1, 0, 3, 3), bias(), (8, 8), ValueError, r"non-empty list"),
    ("zero-size scale", [features()[0], torch.rand(2, 2, 0, 3)], weight(), bias(), (8, 8), ValueError,
     r"features\[1\] must have non-zero"),
    ("zero output size", features(), weight(), bias(), (0, 8), ValueError, r"`size` must be two positive"),
]

BAD_GAM_MULTIPLY = [
    ("integer features", [f.long() for f in features()], gam(), ValueError, r"features\[0\] must be floating point"),
    ("integer second feature", [features()[0], features()[1].long()], gam(), ValueError,
     r"features\[1\] must be floating point"),
    ("mixed feature dtypes", [features()[0], features(torch.float64)[1]], gam(), ValueError,
     r"features\[1\] has dtype"),
    ("gam dtype", features(), gam(dtype=torch.float64), ValueError, r"`gam` has dtype"),
    ("3-D features", [features()[0][0], features()[1]], gam(), ValueError, r"features\[0\] must be 4-D"),
    ("batch mismatch", [features()[0], features(batch=3)[1]], gam(), ValueError, r"features\[1\] has batch 3"),
    ("gam batch", features(), gam(batch=3), ValueError, r"`gam` has batch 3"),
    ("gam channels", features(), torch.rand(2, 2, 8, 12), ValueError, r"`gam` must have shape \(B, 1, H, W\)"),
    ("3-D gam", features(), torch.rand(2, 8, 12), ValueError, r"`gam` must have shape \(B, 1, H, W\)"),
    ("gam not a multiple", features(), gam(size=(8, 10)), ValueError,
     r"GAM size \(8, 10\) must be an integer multiple of features\[0\]'s size \(4, 6\)"),
    ("gam of height 0", features(), gam(size=(0, 12)), ValueError, r"`gam` must have non-zero height and width"),
    ("gam of width 0", features(), gam(size=(8, 0)), ValueError, r"`gam` must have non-zero height and width"),
    ("empty list", [], gam(), ValueError, r"non-empty list"),
]


def _ids(cases):
    return [c[0] for c in cases]


# --- Python front end -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "portable", "cpp"])
@pytest.mark.parametrize("case", BAD_MINI_DECODER, ids=_ids(BAD_MINI_DECODER))
def test_front_end_rejects_bad_mini_decoder_inputs(case, backend):
    _, feats, w, b, size, error, message = case
    with pytest.raises(error, match=message):
        ops.mini_decoder(feats, w, b, size, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "portable", "cpp"])
@pytest.mark.parametrize("case", BAD_GAM_MULTIPLY, ids=_ids(BAD_GAM_MULTIPLY))
def test_front_end_rejects_bad_gam_multiply_inputs(case, backend):
    _, feats, g, error, message = case
    with pytest.raises(error, match=message):
        ops.gam_multiply(feats, g, backend=backend)


def test_front_end_rejects_wrong_argument_types():
    with pytest.raises(TypeError, match=r"`features` must be a list of tensors"):
        ops.mini_decoder(features()[0], weight(3), bias(), (8, 8))
    with pytest.raises(TypeError, match=r"features\[1\] must be a tensor"):
        ops.gam_multiply([features()[0], "x"], gam())
    with pytest.raises(TypeError, match=r"`reverse` must be a bool"):
        ops.gam_multiply(features(), gam(), reverse=1)
    with pytest.raises(ValueError, match=r"`size` must be two positive integers"):
        ops.mini_decoder(features(), weight(), bias(), (8, 8, 8))


# --- C++ entry points (the same checks, reached without the front end) and their fake kernels --------
# "kernel": CPU tensors reach the C++ kernel. "fake": FakeTensorMode, as torch.compile and torch.export
# trace. "meta": meta tensors. The last two run the fake kernels, which must reject what the kernels do.
WHERE = ["kernel", "fake", "meta"]


@contextlib.contextmanager
def dispatched_to(where: str):
    """A function that moves an argument (a tensor or a list of them) to where the call should run."""
    def converter(convert_tensor):
        def convert(value):
            return [convert(v) for v in value] if isinstance(value, list) else convert_tensor(value)
        return convert

    if where == "fake":
        with FakeTensorMode() as mode:
            yield converter(mode.from_tensor)
    else:
        yield converter(lambda t: t.to("meta") if where == "meta" else t)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("case", BAD_MINI_DECODER, ids=_ids(BAD_MINI_DECODER))
def test_cpp_entry_rejects_bad_mini_decoder_inputs(case, where):
    _, feats, w, b, size, error, message = case
    with dispatched_to(where) as to, pytest.raises(error, match=message):
        torch.ops.paanet_fast.mini_decoder(to(feats), to(w), to(b), list(size))


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("case", BAD_GAM_MULTIPLY, ids=_ids(BAD_GAM_MULTIPLY))
def test_cpp_entry_rejects_bad_gam_multiply_inputs(case, where):
    _, feats, g, error, message = case
    with dispatched_to(where) as to, pytest.raises(error, match=message):
        torch.ops.paanet_fast.gam_multiply(to(feats), to(g), False)


@pytest.mark.parametrize("where", WHERE)
def test_cpp_entry_rejects_dtypes_without_a_kernel(where):
    float8 = getattr(torch, "float8_e4m3fn", None)
    if float8 is None:
        pytest.skip("this torch has no float8 dtype")
    feats = [f.to(float8) for f in features()]
    with dispatched_to(where) as to:
        with pytest.raises(ValueError, match=r"`features` has dtype .*which this kernel does not support"):
            torch.ops.paanet_fast.mini_decoder(to(feats), to(weight().to(float8)), to(bias().to(float8)), [8, 8])
        with pytest.raises(ValueError, match=r"`features` has dtype .*which this kernel does not support"):
            torch.ops.paanet_fast.gam_multiply(to(feats), to(gam().to(float8)), True)


@pytest.mark.parametrize("where", WHERE)
def test_cpp_backward_entries_reject_bad_inputs(where):
    feats, w, g = features(), weight(), gam()
    grad = torch.rand_like(g)
    md_backward = torch.ops.paanet_fast.mini_decoder_backward
    gm_backward = torch.ops.paanet_fast.gam_multiply_backward
    with dispatched_to(where) as to:
        feats, w, g, grad = to(feats), to(w), to(g), to(grad)
        with pytest.raises(ValueError, match=r"`grad_logits` must have shape \(2, 1, 8, 12\)"):
            md_backward(grad[:, :, :7], grad, g, feats, w)
        with pytest.raises(ValueError, match=r"`grad_gam` has dtype"):
            md_backward(grad, grad.double(), g, feats, w)
        with pytest.raises(ValueError, match=r"`gam` must have shape \(2, 1, 8, 12\)"):
            md_backward(grad, grad, to(torch.rand(2, 2, 8, 12)), feats, w)
        with pytest.raises(ValueError, match=r"`gam` must have non-zero height and width"):
            md_backward(grad[:, :, :0], grad[:, :, :0], g[:, :, :0], feats, w)
        with pytest.raises(ValueError, match=r"`weight` must have shape \(1, 5, 3, 3\)"):
            md_backward(grad, grad, g, feats, to(weight(4)))
        with pytest.raises(ValueError, match=r"got 1 grad_outputs for 2 features"):
            gm_backward(feats[:1], feats, g, False)
        with pytest.raises(ValueError, match=r"grad_outputs\[1\] must have the shape of features\[1\]"):
            gm_backward([feats[0], feats[0]], feats, g, False)
        with pytest.raises(ValueError, match=r"GAM size \(8, 10\) must be an integer multiple"):
            gm_backward(feats, feats, to(gam(size=(8, 10))), False)
        with pytest.raises(ValueError, match=r"`gam` must have non-zero height and width"):
            gm_backward(feats, feats, g[:, :, :, :0], False)


def test_a_meta_tensor_among_cpu_tensors_is_rejected():
    """The dispatcher sends such a call to the fake kernel, which must not return CPU tensors of
    uninitialised memory."""
    feats, w, b, g = features(), weight(), bias(), gam()
    grad = torch.rand_like(g)
    meta_feats = [feats[0], feats[1].to("meta")]
    ops_ = torch.ops.paanet_fast
    with pytest.raises(ValueError, match=r"`gam` is on meta but the features are on cpu"):
        ops_.gam_multiply(feats, g.to("meta"), False)
    with pytest.raises(ValueError, match=r"features\[1\] is on meta but features\[0\] is on cpu"):
        ops_.gam_multiply(meta_feats, g, True)
    with pytest.raises(ValueError, match=r"`weight` is on meta but the features are on cpu"):
        ops_.mini_decoder(feats, w.to("meta"), b, [8, 12])
    with pytest.raises(ValueError, match=r"`grad_gam` is on meta but the features are on cpu"):
        ops_.mini_decoder_backward(grad, grad.to("meta"), g, feats, w)
    with pytest.raises(ValueError, match=r"`grad_outputs` is on meta but the features are on cpu"):
        ops_.gam_multiply_backward([feats[0], feats[1].to("meta")], feats, g, False)


# --- backend selection ----------------------------------------------------------------------------

def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match=r"unknown backend 'fast'"):
        ops.mini_decoder(features(), weight(), bias(), (8, 8), backend="fast")
    with pytest.raises(ValueError, match=r"unknown backend 'fast'"):
        ops.gam_multiply(features(), gam(), backend="fast")


@pytest.fixture
def without_compiled_backends(monkeypatch):
    """The registry as it is when paanet_fast._C failed to load (the build itself is left alone)."""
    monkeypatch.setattr(backends, "_registry", {name: backends._registry[name] for name in ("reference", "portable")})
    monkeypatch.setattr(backends, "_unavailable", {"cpp": "paanet_fast._compiled could not be imported: test"})
    monkeypatch.setattr(backends, "_warned_fallback", set())


def test_explicit_unavailable_backend_raises_with_the_reason(without_compiled_backends):
    with pytest.raises(RuntimeError, match=r"backend 'cpp' is not available: .*could not be imported: test"):
        ops.mini_decoder(features(), weight(), bias(), (8, 8), backend="cpp")
    with pytest.raises(RuntimeError, match=r"backend 'cpp' is not available"):
        ops.gam_multiply(features(), gam(), backend="cpp")


def test_auto_falls_back_to_portable_with_one_warning(without_compiled_backends):
    feats, w, b, g = features(), weight(), bias(), gam()
    with pytest.warns(RuntimeWarning, match=r"no compiled backend for cpu tensors \(cpp: .*could not be imported: "
                                            r"test\); using the portable backend"):
        logits, _ = ops.mini_decoder(feats, w, b, (8, 12))
    torch.testing.assert_close(logits, portable.mini_decoder(feats, w, b, (8, 12))[0], rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        products = ops.gam_multiply(feats, g, backend="auto")
        assert backends.resolve("auto", torch.device("cpu")).name == "portable"
    for p, e in zip(products, portable.gam_multiply(feats, g, False)):
        torch.testing.assert_close(p, e, rtol=0, atol=0)


@pytest.fixture
def failing_triton_provider(monkeypatch, tmp_path):
    """The registry before triton was loaded, its provider a module that raises what triton 3.2 raises
    when a kernel is defined on a machine without a GPU."""
    (tmp_path / "failing_triton_provider.py").write_text('raise RuntimeError("0 active drivers ([]). There should only be one.")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(backends._PROVIDERS, "triton", "failing_triton_provider")
    monkeypatch.setattr(backends, "_registry", {n: b for n, b in backends._registry.items() if n != "triton"})
    monkeypatch.setattr(backends, "_unavailable", {n: r for n, r in backends._unavailable.items() if n != "triton"})


def test_a_provider_that_raises_any_exception_leaves_a_reason_not_a_crash(failing_triton_provider):
    assert "triton" not in backends.available_backends()
    assert "portable" in backends.available_backends()
    assert backends.unavailable_reason("triton") == ("failing_triton_provider could not be imported: "
                                                     "0 active drivers ([]). There should only be one.")
    with pytest.raises(RuntimeError, match=r"backend 'triton' is not available: .*0 active drivers"):
        ops.gam_multiply(features(), gam(), backend="triton")


def test_auto_uses_the_compiled_backend_on_cpu():
    assert backends.resolve(None, torch.device("cpu")).name == "cpp"
    assert backends.resolve("auto", torch.device("cpu")).name == "cpp"


def test_cuda_backend_is_registered_exactly_when_the_extension_has_cuda_kernels():
    has_kernels = torch._C._dispatch_has_kernel_for_dispatch_key("paanet_fast::mini_decoder", "CUDA")
    backends.available_backends()  # loads the providers
    assert ("cuda" in backends._registry) == has_kernels
    if not has_kernels:
        assert "without CUDA kernels" in backends.unavailable_reason("cuda")
