"""The CUDA kernel sources (kernels/*.cu) run on the CPU, against paanet_fast.reference.

This machine has no GPU, so the kernels are compiled as C++ against tests/cuda_emulation/
cuda_emulation.h: each launch runs one thread per CUDA thread of a block with real barriers, and
the blocks one after another. The kernel sources are used unchanged but for three mechanical
rewrites (tests/cuda_emulation/build.py), so the indexing, tiling, staging,
chunking over scales and every layout path of the GPU code are checked here; only what the
hardware adds (memory alignment faults, warp scheduling) is left to tests/test_cuda.py on a GPU.
The build is cached by torch.utils.cpp_extension; a rebuild takes a minute or two.
"""
from __future__ import annotations

import pytest
import torch

from cuda_emulation.build import load_emulated_kernels
from paanet_fast import reference

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [pytest.param(dtype, id=str(dtype).removeprefix("torch.")) for dtype in TOLERANCE]


@pytest.fixture(scope="module")
def emulated():
    """torch.ops.paanet_cuda_emulated: the CUDA kernels, registered for CPU tensors."""
    return load_emulated_kernels()


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    monkeypatch.setenv("PAANET_FAST_POISON", "1")  # outputs start as NaN: a skipped element shows


def _random(gen: torch.Generator, dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def _assert_close(actual, expected, dtype: torch.dtype, dtypes: list[torch.dtype] | None = None) -> None:
    """Within dtype's tolerance; each result of dtype, or of its entry in dtypes."""
    tol = TOLERANCE[dtype]
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        expected_dtype = dtype if dtypes is None else dtypes[i]
        assert a.dtype == expected_dtype and a.shape == e.shape, f"result {i}: {a.dtype} {tuple(a.shape)}"
        torch.testing.assert_close(a.double(), e.double(), rtol=tol, atol=tol * e.abs().max().item(),
                                   msg=lambda m: f"result {i}: {m}")


def _reference_with_grads(fn, inputs, grads):
    leaves = [t.detach().double().requires_grad_() for t in inputs]
    outputs = list(fn(leaves))
    torch.autograd.backward(outputs, [g.double() for g in grads])
    return outputs, [leaf.grad for leaf in leaves]


def _check_mini_decoder(ops, features, weight, bias, size, grad_logits, grad_gam, dtype):
    n = len(features)
    expected, expected_grads = _reference_with_grads(
        lambda t: reference.mini_decoder(t[:n], t[n], t[n + 1], size), [*features, weight, bias],
        [grad_logits, grad_gam])
    logits, gam = ops.mini_decoder(features, weight, bias, list(size))
    _assert_close([logits, gam], expected, dtype)
    # The backward is given the reference's G, so that only its own rounding is measured.
    dfeatures, dweight, dbias = ops.mini_decoder_backward(grad_logits, grad_gam, expected[1].detach().to(dtype),
                                                          features, weight)
    _assert_close([*dfeatures, dweight, dbias], expected_grads, dtype,
                  [*(f.dtype for f in features), weight.dtype, bias.dtype])
    assert [d.stride() for d in dfeatures] == [torch.empty_like(f).stride() for f in features]


def _check_gam_multiply(ops, features, gam, reverse, grads, dtype):
    expected, expected_grads = _reference_with_grads(
        lambda t: reference.gam_multiply(t[:-1], t[-1], reverse), [*features, gam], grads)
    outputs = ops.gam_multiply(features, gam, reverse)
    _assert_close(outputs, expected, dtype)
    assert [o.stride() for o in outputs] == [torch.empty_like(f).stride() for f in features]
    dfeatures, dgam = ops.gam_multiply_backward(grads, features, gam, reverse)
    _assert_close([*dfeatures, dgam], expected_grads, dtype)


MINI_DECODER_CASES = [
    pytest.param(1, [(3, 5, 7)], (21, 35), id="one-scale"),
    pytest.param(2, [(4, 9, 9), (2, 5, 5), (1, 3, 3)], (37, 40), id="odd"),
    # Resized down: a tile's source rows as a range, and (too many for one) row by row.
    pytest.param(1, [(2, 30, 50), (3, 4, 4)], (16, 23), id="downscale-rows-in-range"),
    pytest.param(1, [(2, 40, 50), (3, 4, 4)], (17, 23), id="downscale-rows-one-by-one"),
    # A 1x1 map, one resized down 20-fold, and an output one pixel high.
    pytest.param(2, [(2, 1, 1), (3, 64, 70)], (3, 5), id="extreme-ratios"),
    pytest.param(1, [(2, 3, 4), (1, 1, 9)], (1, 40), id="one-row"),
    pytest.param(1, [(1, 2, 2)] * 18, (9, 11), id="18-scales"),
    # More channels than one staged chunk of weights; blocks whose gather spans over 256 rows or columns.
    pytest.param(1, [(70, 2, 3), (3, 5, 4)], (260, 300), id="chunked-weights-and-gathers"),
    # 268 columns blocks in one scale: the last block sums each part's shares in two loads of up to 32.
    pytest.param(4, [(2, 130, 130)], (130, 130), id="shares-in-two-batches"),
    # PAANet's strides 4 to 32: the columns pass splits a pixel's gather over 2, 4, 8 and 16 threads.
    pytest.param(2, [(3, 16, 16), (2, 8, 8), (4, 4, 4), (2, 2, 2)], (64, 64), id="paanet-strides"),
]
GAM_CASES = [
    pytest.param(2, [(5, 8, 12), (3, 4, 6), (2, 1, 3)], (16, 24), id="three-scales"),
    pytest.param(1, [(16, 8, 16), (8, 4, 8)], (32, 64), id="packed"),
    pytest.param(1, [(3, 2, 300), (2, 1, 600)], (40, 600), id="tall-windows-and-tiles"),
    pytest.param(1, [(2, 1, 8)], (2, 8192), id="column-sum-rounds"),
    pytest.param(1, [(3, 2, 2)] * 18, (8, 8), id="18-scales"),
    # Each window divides the largest (the one-launch backward): PAANet's strides over 2 x 3 regions
    # of 32 x 32, each thread looping over channels; regions of 6 x 4 (windows 3 x 2, 6 x 4, 1 x 1).
    pytest.param(1, [(40, 16, 24), (8, 8, 12), (4, 4, 6), (3, 2, 3)], (64, 96), id="regions"),
    pytest.param(2, [(3, 4, 6), (2, 2, 3), (5, 12, 12)], (12, 12), id="regions-not-powers-of-two"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,scales,size", MINI_DECODER_CASES)
def test_mini_decoder(emulated, dtype, batch, scales, size):
    gen = torch.Generator().manual_seed(0)
    features = [_random(gen, dtype, batch, c, h, w) for c, h, w in scales]
    weight = _random(gen, dtype, 1, sum(c for c, _, _ in scales), 3, 3)
    bias = _random(gen, dtype, 1)
    grads = [_random(gen, dtype, batch, 1, *size) for _ in range(2)]
    _check_mini_decoder(emulated, features, weight, bias, size, *grads, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("batch,scales,size", [MINI_DECODER_CASES[1], MINI_DECODER_CASES[-1]])
def test_mini_decoder_with_float32_parameters(emulated, dtype, batch, scales, size):
    """Half features, float32 weight and bias (a mixed-precision model's, uncast): read as they are;
    their gradients in float32."""
    gen = torch.Generator().manual_seed(5)
    features = [_random(gen, dtype, batch, c, h, w) for c, h, w in scales]
    weight = _random(gen, torch.float32, 1, sum(c for c, _, _ in scales), 3, 3)
    bias = _random(gen, torch.float32, 1)
    grads = [_random(gen, dtype, batch, 1, *size) for _ in range(2)]
    _check_mini_decoder(emulated, features, weight, bias, size, *grads, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_mini_decoder_with_more_samples_than_the_grid_holds(emulated, dtype):
    """The mini-decoder's kernels lay the samples out along the grid's y or z (at most 65535 on a
    GPU, 2 here) and loop over those beyond; the blocks' shares of dW add up over them. Three scales:
    a sample's last scale and the next's first use the same buffer of the forward's resized rows."""
    gen = torch.Generator().manual_seed(6)
    scales = [(3, 9, 7), (34, 4, 5), (2, 3, 2)]
    features = [_random(gen, dtype, 5, c, h, w) for c, h, w in scales]
    weight, bias = _random(gen, dtype, 1, 39, 3, 3), _random(gen, dtype, 1)
    grads = [_random(gen, dtype, 5, 1, 19, 21) for _ in range(2)]
    emulated.emulation_limit_grid(2)
    try:
        _check_mini_decoder(emulated, features, weight, bias, (19, 21), *grads, dtype)
    finally:
        emulated.emulation_limit_grid(65535)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,scales,size", GAM_CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["attention", "reverse-attention"])
def test_gam_multiply(emulated, dtype, batch, scales, size, reverse):
    gen = torch.Generator().manual_seed(1)
    features = [_random(gen, dtype, batch, c, h, w) for c, h, w in scales]
    gam = torch.rand(batch, 1, *size, generator=gen, dtype=torch.float64).to(dtype)
    grads = [_random(gen, dtype, *f.shape) for f in features]
    _check_gam_multiply(emulated, features, gam, reverse, grads, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["float64", "float16"])
def test_any_layout(emulated, dtype):
    """channels_last (packed), sliced and transposed features; expanded and transposed gradients and GAM."""
    gen = torch.Generator().manual_seed(2)
    wide = _random(gen, dtype, 2, 16, 8, 24)
    features = [wide.contiguous(memory_format=torch.channels_last), wide[:, 1::2, :, :12],
                _random(gen, dtype, 2, 3, 16, 4).transpose(2, 3)]
    weight, bias = _random(gen, dtype, 1, 27, 3, 3), _random(gen, dtype, 1)
    grad_logits = torch.full((), 0.5, dtype=dtype).expand(2, 1, 32, 48)
    grad_gam = _random(gen, dtype, 2, 1, 48, 32).transpose(2, 3)
    _check_mini_decoder(emulated, features, weight, bias, (32, 48), grad_logits, grad_gam, dtype)
    gam = torch.rand(2, 1, 48, 32, generator=gen, dtype=torch.float64).to(dtype).transpose(2, 3)
    grads = [torch.full((), -1.5, dtype=dtype).expand_as(features[0]),
             _random(gen, dtype, *features[1].shape).contiguous(memory_format=torch.channels_last),
             _random(gen, dtype, *features[2].shape)]
    _check_gam_multiply(emulated, features, gam, True, grads, dtype)
    # The same layouts where each window divides the largest (the one-launch backward).
    features[2] = _random(gen, dtype, 2, 3, 12, 16).transpose(2, 3)
    grads[2] = _random(gen, dtype, *features[2].shape)
    _check_gam_multiply(emulated, features, gam, False, grads, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("second", [(1, 24, 4, 8), (1, 24, 4, 10)], ids=["two-launch-backward", "regions"])
def test_gam_multiply_channels_last(emulated, dtype, second):
    """More channel packs than a block has threads, and rows split into several blocks by the
    partial channel sums' budget; with a second scale whose window divides the first's (4 x 2 and
    2 x 4 in regions of 4 x 4), the one-launch backward with more channels than threads."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(1, 2048, 2, 20), second]
    features = [_random(gen, dtype, *shape).contiguous(memory_format=torch.channels_last) for shape in shapes]
    gam = torch.rand(1, 1, 8, 40, generator=gen, dtype=torch.float64).to(dtype)
    grads = [_random(gen, dtype, *shape).contiguous(memory_format=torch.channels_last) for shape in shapes]
    _check_gam_multiply(emulated, features, gam, False, grads, dtype)


@pytest.mark.parametrize("dtype,parameter_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                   (torch.bfloat16, torch.float32)],
                         ids=["float32", "bfloat16", "bfloat16-float32-parameters"])
@pytest.mark.parametrize("case", ["contiguous", "mixed-layouts", "windows-not-nested"])
def test_launches_per_call(emulated, dtype, parameter_dtype, case, monkeypatch):
    """mini_decoder: 2 launches forward, 2 backward; gam_multiply: 1 forward, 1 backward where each
    window divides the largest (6 PAAD layers, so 36 a training step; issue 22's budget was 50);
    else 1 and 2, one more each where some scales' outputs are channels-last and others not; and no
    ATen op but allocations (no casts, copies or fills), whatever the layouts of the features and
    gradients."""
    monkeypatch.delenv("PAANET_FAST_POISON")  # the test-time poisoning fills
    gen = torch.Generator().manual_seed(4)
    size = [8, 8]
    if case == "contiguous":  # windows 1 x 1, 2 x 1, 4 x 4
        features = [_random(gen, dtype, 2, 8, 8, 8), _random(gen, dtype, 2, 8, 4, 8), _random(gen, dtype, 2, 8, 2, 2)]
        grads = [_random(gen, dtype, *f.shape) for f in features]
        gam_launches = (1, 1)
    elif case == "mixed-layouts":
        features = [_random(gen, dtype, 2, 8, 8, 8).contiguous(memory_format=torch.channels_last),
                    _random(gen, dtype, 2, 8, 8, 16)[:, :, :, ::2], _random(gen, dtype, 2, 8, 2, 2)]
        grads = [torch.full((), 0.5, dtype=dtype).expand_as(features[0]), _random(gen, dtype, 2, 8, 8, 8),
                 _random(gen, dtype, 2, 8, 2, 2).contiguous(memory_format=torch.channels_last)]
        gam_launches = (1, 1)
    else:  # windows 1 x 1, 2 x 2, 3 x 3, scale 0 channels-last
        size = [12, 12]
        features = [_random(gen, dtype, 2, 8, 12, 12).contiguous(memory_format=torch.channels_last),
                    _random(gen, dtype, 2, 8, 6, 6), _random(gen, dtype, 2, 8, 4, 4)]
        grads = [_random(gen, dtype, *f.shape) for f in features]
        # One launch for scale 0, walked along its channels, one for the others; then dG.
        gam_launches = (2, 3)
    gam = _random(gen, dtype, 2, 1, *size)
    weight, bias = _random(gen, parameter_dtype, 1, 24, 3, 3), _random(gen, parameter_dtype, 1)
    grad_logits = torch.full((), 0.25, dtype=dtype).expand(2, 1, *size)  # what .sum() hands back
    calls = {"mini_decoder": (lambda: emulated.mini_decoder(features, weight, bias, size), 2),
             "mini_decoder_backward": (lambda: emulated.mini_decoder_backward(grad_logits, gam, gam, features,
                                                                               weight), 2),
             "gam_multiply": (lambda: emulated.gam_multiply(features, gam, True), gam_launches[0]),
             "gam_multiply_backward": (lambda: emulated.gam_multiply_backward(grads, features, gam, True),
                                       gam_launches[1])}
    allocations = {"aten::empty", "aten::empty_like", "aten::empty_strided"}
    emulated.emulation_take_launches()  # clears the log
    for name, (call, launches) in calls.items():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            call()
        logged = emulated.emulation_take_launches().splitlines()
        assert len(logged) == launches, f"{name}: {logged}"
        names = [event.name for event in profile.events()]
        assert "aten::empty_like" in names or "aten::empty" in names  # the profiler sees the host's ATen calls
        ops = {n for n in names if n.startswith("aten::")}
        assert ops <= allocations, f"{name}: {sorted(ops - allocations)}"


def test_zero_batch(emulated):
    features, weight = [torch.randn(0, 2, 3, 3)], torch.randn(1, 2, 3, 3)
    logits, gam = emulated.mini_decoder(features, weight, torch.randn(1), [6, 6])
    dfeatures, dweight, dbias = emulated.mini_decoder_backward(logits, gam, gam, features, weight)
    assert logits.shape == (0, 1, 6, 6) and dfeatures[0].shape == (0, 2, 3, 3)
    assert not dweight.any() and not dbias.any()
    outputs = emulated.gam_multiply(features, torch.rand(0, 1, 6, 6), True)
    dfeatures, dgam = emulated.gam_multiply_backward(outputs, features, torch.rand(0, 1, 6, 6), True)
    assert outputs[0].shape == dfeatures[0].shape == (0, 2, 3, 3) and dgam.shape == (0, 1, 6, 6)


def test_an_empty_gam_is_rejected(emulated):
    """0 is a multiple of every size, so only an explicit check keeps the kernel from averaging an
    empty window out of shared memory that nothing wrote."""
    features, weight = [torch.randn(1, 2, 3, 3)], torch.randn(1, 2, 3, 3)
    for gam in (torch.rand(1, 1, 0, 6), torch.rand(1, 1, 6, 0)):
        with pytest.raises(ValueError, match=r"`gam` must have non-zero height and width"):
            emulated.gam_multiply(features, gam, False)
        with pytest.raises(ValueError, match=r"`gam` must have non-zero height and width"):
            emulated.gam_multiply_backward(features, features, gam, True)
        with pytest.raises(ValueError, match=r"`gam` must have non-zero height and width"):
            emulated.mini_decoder_backward(gam, gam, gam, features, weight)


def test_fast_divider_matches_division(emulated):
    """The gather kernel's divisions by the window sizes (kernels/common.cuh, Divider): magic multiplier
    and shift against plain integer division, at the divisors where the rounding is tightest (one past
    a power of two, primes, 2^31 - 1 and 2^31) and at the numerators next to multiples of them."""
    gen = torch.Generator().manual_seed(5)
    limit = 2**31  # numerators below it
    divisors = [1, 2, 3, 5, 7, 8, 9, 10, 31, 33, 641, 2**16 - 1, 2**16 + 1, 6700417, 2**30 + 1, 2**31 - 1, 2**31]
    divisors += torch.randint(1, limit, (16,), generator=gen).tolist()
    for d in divisors:
        multiples = torch.tensor(sorted({d * k for k in (1, 2, 3, limit // d - 1, limit // d) if 0 < d * k < limit}),
                                 dtype=torch.long)
        n = torch.cat([torch.tensor([0, 1, limit - 2, limit - 1]), multiples - 1, multiples,
                       (multiples + 1).clamp(max=limit - 1), torch.randint(0, limit, (4096,), generator=gen)])
        torch.testing.assert_close(emulated.emulation_divide(n, d), n // d, rtol=0, atol=0, msg=f"divisor {d}")


def test_a_lock_left_by_a_killed_build_is_removed_instead_of_waited_for(tmp_path):
    """cpp_extension before torch 2.14 would wait for ever on the lock file of a build killed mid-way
    (a hung test run); later ones lock the file itself, which stays: that one is left alone."""
    import inspect
    import os
    import time

    from torch.utils import cpp_extension

    from cuda_emulation.build import LOCK_FILE_BLOCKS, STALE_LOCK_SECONDS, _remove_stale_lock

    assert LOCK_FILE_BLOCKS == ("FileBaton(" in inspect.getsource(cpp_extension._jit_compile))

    lock = tmp_path / "lock"
    lock.write_text("")
    _remove_stale_lock(lock)
    assert lock.exists()  # a build running now holds it
    old = time.time() - STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match=r"removing .*lock, left 1[56] minutes ago by a build that did not finish"):
        _remove_stale_lock(lock)
    assert not lock.exists()


def test_the_sanitizers_probe_computes_its_neighbours(emulated):
    """The defect-free form of the kernel that tests/test_cuda_sanitized.py plants defects in: under the
    sanitizers (this module runs there too) it must pass with no report."""
    for threads in (1, 37, 256):
        values = emulated.emulation_neighbours(threads, True, True)
        expected = torch.arange(1, threads + 1, dtype=torch.float32) % threads
        torch.testing.assert_close(values, expected, rtol=0, atol=0)


def test_the_sanitizers_pack_probe_loads_aligned_packs(emulated):
    values = torch.randn(12, generator=torch.Generator().manual_seed(7))
    for offset in (0, 4, 8):
        torch.testing.assert_close(emulated.emulation_pack_load(values, offset), values[offset:offset + 4],
                                   rtol=0, atol=0)


def test_blocks_run_in_a_different_order_each_launch(emulated):
    """A GPU runs a grid's blocks in no promised order: the emulation shuffles them, so that the last
    block of the backward's summation (or any block assumed first) is a different one each launch."""
    first, second = emulated.emulation_ran_blocks(64), emulated.emulation_ran_blocks(64)
    for order in (first, second):
        assert sorted(order.tolist()) == list(range(64))
        assert not torch.equal(order, torch.arange(64))
    assert not torch.equal(first, second)
