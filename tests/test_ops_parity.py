"""The "cpp" backend (compiled CPU kernels) against paanet_fast.reference: outputs and every
gradient on fresh random odd shapes, all dtypes, any memory layout, gradcheck and a shape fuzz."""
from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ops_cases import (LAYOUTS, MODEL_STRIDES, TOLERANCE, GamMultiplyCase, MiniDecoderCase, assert_close,
                       channels_last, gam_multiply_case, gam_multiply_names, gam_multiply_outputs_and_grads,
                       mini_decoder_case, mini_decoder_names, mini_decoder_outputs_and_grads, relative_error,
                       transposed)
from paanet_fast import ops, reference
import paanet_fast._compiled  # noqa: E402,F401  (loads the extension: fails here if it is not built)


cpp_mini_decoder = functools.partial(ops.mini_decoder, backend="cpp")
cpp_gam_multiply = functools.partial(ops.gam_multiply, backend="cpp")


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """The kernels fill what they allocate with NaN first, so an unwritten element cannot pass."""
    monkeypatch.setenv("PAANET_FAST_POISON", "1")


def check_mini_decoder(case: MiniDecoderCase, seed: int, dtype: torch.dtype) -> None:
    actual = mini_decoder_outputs_and_grads(cpp_mini_decoder, case, seed)
    expected = mini_decoder_outputs_and_grads(reference.mini_decoder, case, seed)
    for name, a, e in zip(mini_decoder_names(case), actual, expected):
        assert_close(a, e, dtype, f"{name} ({case.describe()})")


def check_gam_multiply(case: GamMultiplyCase, reverse: bool, seed: int, dtype: torch.dtype) -> None:
    actual = gam_multiply_outputs_and_grads(cpp_gam_multiply, case, reverse, seed)
    expected = gam_multiply_outputs_and_grads(reference.gam_multiply, case, reverse, seed)
    for name, a, e in zip(gam_multiply_names(case), actual, expected):
        assert_close(a, e, dtype, f"{name} ({case.describe()}, reverse={reverse})")


# --- random odd shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(8))
def test_mini_decoder_matches_reference_on_random_shapes(seed, dtype):
    check_mini_decoder(mini_decoder_case(seed, dtype), seed, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(3))
def test_mini_decoder_matches_reference_at_model_strides(seed, dtype):
    """Strides 4/8/16/32 as in the model, and a single scale of each stride."""
    check_mini_decoder(mini_decoder_case(seed, dtype, strides=MODEL_STRIDES), seed, dtype)
    check_mini_decoder(mini_decoder_case(seed, dtype, strides=(MODEL_STRIDES[seed],)), seed, dtype)


def test_mini_decoder_matches_reference_on_a_large_sample():
    """Big enough for every parallel loop to split its work between threads."""
    gen = torch.Generator().manual_seed(99)
    features = [torch.randn(2, c, h, w, generator=gen, dtype=torch.float64)
                for c, h, w in [(7, 37, 41), (5, 75, 67), (3, 19, 17)]]
    case = MiniDecoderCase(features, torch.randn(1, 15, 3, 3, generator=gen, dtype=torch.float64),
                           torch.randn(1, generator=gen, dtype=torch.float64), (150, 133))
    check_mini_decoder(case, 99, torch.float64)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(6))
def test_gam_multiply_matches_reference_on_random_shapes(seed, dtype, reverse):
    check_gam_multiply(gam_multiply_case(seed, dtype), reverse, seed, dtype)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gam_multiply_matches_reference_on_tall_maps(layout):
    """Maps of more than 4096 elements per channel are split into blocks of rows (the last one
    partial), the unit of work of the CPU kernel."""
    gen = torch.Generator().manual_seed(7)
    features = [torch.randn(2, 3, 130, 40, generator=gen, dtype=torch.float64),
                torch.randn(2, 5, 65, 20, generator=gen, dtype=torch.float64)]
    if layout == "channels_last":
        features = [f.contiguous(memory_format=torch.channels_last) for f in features]
    gam = torch.rand(2, 1, 130, 80, generator=gen, dtype=torch.float64)
    check_gam_multiply(GamMultiplyCase(features, gam), True, 7, torch.float64)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", range(2))
def test_gam_multiply_matches_reference_at_model_strides(seed, reverse):
    check_gam_multiply(gam_multiply_case(seed, torch.float64, strides=MODEL_STRIDES), reverse, seed, torch.float64)


# --- reduced precision: computed in float32, returned in the input dtype --------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_is_computed_in_float32(dtype):
    """The expected values are the float32 reference on the same (rounded) inputs, cast back."""
    md_case = mini_decoder_case(5, dtype)
    up = MiniDecoderCase([f.float() for f in md_case.features], md_case.weight.float(), md_case.bias.float(),
                         md_case.size)
    actual = mini_decoder_outputs_and_grads(cpp_mini_decoder, md_case, 5)
    expected = mini_decoder_outputs_and_grads(reference.mini_decoder, up, 5)
    for name, a, e in zip(mini_decoder_names(md_case), actual, expected):
        assert_close(a, e.to(dtype), dtype, name)

    gm_case = gam_multiply_case(5, dtype)
    up = GamMultiplyCase([f.float() for f in gm_case.features], gm_case.gam.float())
    actual = gam_multiply_outputs_and_grads(cpp_gam_multiply, gm_case, True, 5)
    expected = gam_multiply_outputs_and_grads(reference.gam_multiply, up, True, 5)
    for name, a, e in zip(gam_multiply_names(gm_case), actual, expected):
        assert_close(a, e.to(dtype), dtype, name)


# --- memory layouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_mini_decoder_accepts_any_layout(layout):
    relayout = LAYOUTS[layout]
    case = mini_decoder_case(11, torch.float64, strides=(4, 8))
    for i, f in enumerate(case.features):  # a mix: some scales relaid out, some not
        if i % 2 == 0:
            case.features[i] = relayout(f)
    case.weight = transposed(case.weight)
    check_mini_decoder(case, 11, torch.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gam_multiply_accepts_any_layout(layout):
    relayout = LAYOUTS[layout]
    case = gam_multiply_case(12, torch.float64)
    case.features = [relayout(f) for f in case.features]
    case.gam = relayout(case.gam)
    check_gam_multiply(case, True, 12, torch.float64)


def test_layout_of_results_follows_the_inputs():
    """Products and feature gradients keep the features' layout (what the fake kernels promise)."""
    case = mini_decoder_case(13, torch.float32, strides=(4, 8))
    case.features = [channels_last(f) for f in case.features]
    outputs = ops.gam_multiply(case.features, torch.rand(case.features[0].shape[0], 1, *case.size), backend="cpp")
    assert all(o.stride() == f.stride() for o, f in zip(outputs, case.features))
    grads = mini_decoder_outputs_and_grads(cpp_mini_decoder, case, 13)[2:-2]
    assert all(g.is_contiguous(memory_format=torch.channels_last) for g in grads)


# --- gradcheck, determinism, fuzz -------------------------------------------------------------------

def test_mini_decoder_gradcheck():
    case = mini_decoder_case(21, torch.float64, max_side=7)
    inputs = [*case.features, case.weight, case.bias]
    n = len(case.features)

    def fn(*args):
        return cpp_mini_decoder(list(args[:n]), args[n], args[n + 1], case.size)

    assert torch.autograd.gradcheck(fn, [t.requires_grad_() for t in inputs])


@pytest.mark.parametrize("reverse", [False, True])
def test_gam_multiply_gradcheck(reverse):
    case = gam_multiply_case(22, torch.float64, max_window=3)
    n = len(case.features)

    def fn(*args):
        return tuple(cpp_gam_multiply(list(args[:n]), args[n], reverse))

    assert torch.autograd.gradcheck(fn, [t.requires_grad_() for t in [*case.features, case.gam]])


def test_results_do_not_depend_on_the_thread_count():
    """The kernels' own reductions have a fixed split: 1 and 2 threads agree bitwise. The mini-decoder's
    low-resolution products go through BLAS, which promises no such thing (its forward's logits, and
    the feature and weight gradients, can differ in the last bit), so its backward is given the
    same inputs at both thread counts and only its bias gradient, summed by the kernel, is compared."""
    md = mini_decoder_case(31, torch.float32, strides=MODEL_STRIDES)
    gm = gam_multiply_case(31, torch.float32, strides=MODEL_STRIDES)
    logits, gam = cpp_mini_decoder(md.features, md.weight, md.bias, md.size)
    gen = torch.Generator().manual_seed(32)
    grad_logits, grad_gam = (torch.randn(logits.shape, generator=gen) for _ in range(2))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            dbias = torch.ops.paanet_fast.mini_decoder_backward(grad_logits, grad_gam, gam, md.features, md.weight)[2]
            results.append([dbias, *gam_multiply_outputs_and_grads(cpp_gam_multiply, gm, False, 31)])
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(["grad bias", *gam_multiply_names(gm)], *results):
        assert torch.equal(a, b), name


sides = st.integers(min_value=1, max_value=24)


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 3), size=st.tuples(sides, sides),
       scales=st.lists(st.tuples(st.integers(1, 6), sides, sides), min_size=1, max_size=4),
       seed=st.integers(0, 2**31 - 1))
def test_mini_decoder_shape_fuzz(batch, size, scales, seed):
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(batch, c, h, w, generator=gen, dtype=torch.float64) for c, h, w in scales]
    channels = sum(c for c, _, _ in scales)
    case = MiniDecoderCase(features, torch.randn(1, channels, 3, 3, generator=gen, dtype=torch.float64),
                           torch.randn(1, generator=gen, dtype=torch.float64), size)
    check_mini_decoder(case, seed, torch.float64)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 3), size=st.tuples(sides, sides), reverse=st.booleans(),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_gam_multiply_shape_fuzz(batch, size, reverse, seed, data):
    """Each scale's size divides the GAM's along each axis, by its own factors."""
    scale = st.tuples(st.sampled_from(divisors(size[0])), st.sampled_from(divisors(size[1])), st.integers(1, 6))
    scales = data.draw(st.lists(scale, min_size=1, max_size=4))
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(batch, c, h, w, generator=gen, dtype=torch.float64) for h, w, c in scales]
    gam = torch.rand(batch, 1, *size, generator=gen, dtype=torch.float64)
    check_gam_multiply(GamMultiplyCase(features, gam), reverse, seed, torch.float64)


def test_float64_agreement_is_far_tighter_than_the_tolerance():
    """Guards the tolerance itself: the kernels are exact up to rounding, not merely close."""
    case = mini_decoder_case(41, torch.float64, strides=MODEL_STRIDES)
    actual = mini_decoder_outputs_and_grads(cpp_mini_decoder, case, 41)
    expected = mini_decoder_outputs_and_grads(reference.mini_decoder, case, 41)
    worst = max(relative_error(a, e) for a, e in zip(actual, expected))
    assert worst < TOLERANCE[torch.float64] / 1000
