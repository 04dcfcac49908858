"""The CUDA kernels (kernels/*.cu) against paanet_fast.reference, on a GPU.

Every result is compared with the reference evaluated in float64 on the same (already rounded)
values, with a tolerance per dtype relative to the largest reference value. Outputs are poisoned
twice: PAANET_FAST_POISON makes the extension fill what it allocates with NaN before a kernel
writes it, and the caching allocator is first handed NaN-filled blocks to reuse, so an element a
kernel skips shows up as NaN. Without a CUDA device every test here is skipped;
tests/test_cuda_emulated.py runs the same kernel sources on the CPU.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from ops_cases import assert_each_close
from paanet_fast import PAANet, ops, reference
from paanet_fast.backends import resolve

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [pytest.param(dtype, id=str(dtype).removeprefix("torch.")) for dtype in TOLERANCE]

# (batch, [(C_v, h_v, w_v) per scale], output (H, W)): batch 1, non-integer ratios, downscaling
# (a tile's source rows too many for one range: resized row by row), the model's strides, and 18
# scales (more than one launch carries).
MINI_DECODER_CASES = [
    pytest.param(1, [(3, 5, 7)], (13, 17), id="one-scale"),
    pytest.param(2, [(3, 5, 7), (2, 3, 4), (1, 1, 1)], (37, 19), id="odd"),
    pytest.param(1, [(3, 8, 9), (2, 2, 11)], (5, 4), id="downscale"),
    pytest.param(1, [(2, 200, 150), (3, 5, 5)], (40, 30), id="downscale-rows-one-by-one"),
    pytest.param(2, [(16, 64, 64), (8, 32, 32), (8, 16, 16), (4, 8, 8)], (256, 256), id="model-strides"),
    pytest.param(3, [(5, 37, 23), (7, 11, 50), (2, 101, 3)], (101, 77), id="large-odd"),
    pytest.param(2, [(1, 2, 3)] * 18, (9, 10), id="18-scales"),
]
# (batch, [(C_v, h_v, w_v)], GAM (H, W)): H, W integer multiples of every h_v, w_v. Widths and
# channel counts both with and without whole 16-byte packs; GAM windows taller than one round of
# row sums on a full tile; 18 scales.
GAM_CASES = [
    pytest.param(2, [(3, 6, 5), (2, 3, 5), (4, 1, 1), (1, 2, 5)], (12, 15), id="four-scales"),
    pytest.param(1, [(2, 3, 2)], (9, 10), id="unequal-factors"),
    pytest.param(1, [(2, 4, 5), (3, 2, 1)], (4, 5), id="factor-one"),
    pytest.param(2, [(32, 64, 64), (32, 32, 32), (32, 16, 16), (32, 8, 8)], (256, 256), id="model"),
    pytest.param(1, [(8, 2, 300), (3, 1, 600)], (40, 600), id="tall-windows-wide-rows"),
    pytest.param(1, [(3, 2, 2)] * 18, (8, 8), id="18-scales"),
]


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    monkeypatch.setenv("PAANET_FAST_POISON", "1")
    nan_blocks = [torch.full((1 << k,), float("nan"), device="cuda") for k in range(8, 24) for _ in range(2)]
    del nan_blocks  # back to the caching allocator, NaN-filled, for the kernels' outputs to reuse
    torch.cuda.synchronize()


def _random(gen: torch.Generator, dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to("cuda", dtype)


def _run(fn, inputs: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """fn's outputs, then the gradients of sum(output * grad) with respect to each input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outputs = list(fn(leaves))
    torch.autograd.backward(outputs, grads)
    return [o.detach() for o in outputs] + [leaf.grad for leaf in leaves]


def _against_reference(fn_for, inputs: list[torch.Tensor], grads: list[torch.Tensor], dtype: torch.dtype) -> None:
    """The cuda backend in `dtype` against the reference in float64 on the same values."""
    actual = _run(fn_for("cuda"), inputs, grads)
    expected = _run(fn_for("reference"), [t.double() for t in inputs], [g.double() for g in grads])
    assert_each_close(actual, expected, dtype, TOLERANCE[dtype])


def _decoder_problem(batch, scales, size, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = [_random(gen, dtype, batch, c, h, w) for c, h, w in scales]
    weight = _random(gen, dtype, 1, sum(c for c, _, _ in scales), 3, 3)
    bias = _random(gen, dtype, 1)
    grads = [_random(gen, dtype, batch, 1, *size) for _ in range(2)]
    return [*features, weight, bias], grads


def _decoder(n: int, size):
    return lambda backend: lambda t: ops.mini_decoder(t[:n], t[n], t[n + 1], size, backend=backend)


def _gam_problem(batch, scales, size, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = [_random(gen, dtype, batch, c, h, w) for c, h, w in scales]
    gam = torch.rand(batch, 1, *size, generator=gen, dtype=torch.float64).to("cuda", dtype)
    grads = [_random(gen, dtype, batch, c, h, w) for c, h, w in scales]
    return [*features, gam], grads


def _attention(reverse: bool):
    return lambda backend: lambda t: ops.gam_multiply(t[:-1], t[-1], reverse, backend=backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,scales,size", MINI_DECODER_CASES)
def test_mini_decoder_matches_reference(dtype, batch, scales, size):
    inputs, grads = _decoder_problem(batch, scales, size, dtype)
    _against_reference(_decoder(len(scales), size), inputs, grads, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,scales,size", GAM_CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["attention", "reverse-attention"])
def test_gam_multiply_matches_reference(dtype, batch, scales, size, reverse):
    inputs, grads = _gam_problem(batch, scales, size, dtype)
    _against_reference(_attention(reverse), inputs, grads, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["float64", "float16"])
def test_any_layout(dtype):
    """channels_last, sliced and transposed features; an expanded (stride 0) and a transposed
    gradient; outputs laid out like torch.empty_like of the features."""
    gen = torch.Generator().manual_seed(1)
    wide = _random(gen, dtype, 2, 16, 8, 24)
    features = [wide.contiguous(memory_format=torch.channels_last),             # NHWC, packable
                wide[:, 1::2, :, :12],                                           # not dense
                _random(gen, dtype, 2, 3, 16, 4).transpose(2, 3)]                # (2, 3, 4, 16) transposed
    weight = _random(gen, dtype, 1, 27, 3, 3)
    bias = _random(gen, dtype, 1)
    gam = torch.rand(2, 1, 48, 32, generator=gen, dtype=torch.float64).to("cuda", dtype).transpose(2, 3)

    def layer(backend):
        def run(t):
            logits, g = ops.mini_decoder(t[:3], t[3], t[4], (32, 48), backend=backend)
            attended = ops.gam_multiply(t[:3], t[5], True, backend=backend)
            return [logits, g, *attended]
        return run

    inputs = [*features, weight, bias, gam]
    grads = [torch.ones((), dtype=dtype, device="cuda").expand(2, 1, 32, 48),
             _random(gen, dtype, 2, 1, 48, 32).transpose(2, 3),
             *[_random(gen, dtype, *f.shape).contiguous(memory_format=torch.channels_last) for f in features]]
    _against_reference(layer, inputs, grads, dtype)
    outputs = ops.gam_multiply(features, gam, False, backend="cuda")
    assert [o.stride() for o in outputs] == [torch.empty_like(f).stride() for f in features]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_backward_is_deterministic(dtype):
    """Gathers, and per-block shares added in block order (atomics only count finished blocks): two
    backward passes agree bit for bit."""
    inputs, grads = _decoder_problem(4, [(32, 64, 64), (32, 32, 32), (32, 16, 16), (32, 8, 8)], (256, 256), dtype)
    decoder = _decoder(4, (256, 256))("cuda")
    first, second = _run(decoder, inputs, grads), _run(decoder, inputs, grads)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    inputs, grads = _gam_problem(4, [(32, 64, 64), (32, 32, 32), (32, 16, 16), (32, 8, 8)], (256, 256), dtype)
    attention = _attention(True)("cuda")
    first, second = _run(attention, inputs, grads), _run(attention, inputs, grads)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_opcheck():
    importlib.import_module("paanet_fast._compiled")  # fake kernels and autograd
    gen = torch.Generator().manual_seed(2)
    features = [_random(gen, torch.float32, 2, 2, 3, 4), _random(gen, torch.float32, 2, 3, 2, 2)]
    weight = _random(gen, torch.float32, 1, 5, 3, 3)
    bias = _random(gen, torch.float32, 1)
    gam = torch.rand(2, 1, 6, 8, generator=gen).cuda()
    grad = _random(gen, torch.float32, 2, 1, 6, 8)
    with_grad = [f.clone().requires_grad_() for f in features]
    lib = torch.ops.paanet_fast
    samples = [
        (lib.mini_decoder.default, (with_grad, weight.clone().requires_grad_(), bias.clone().requires_grad_(), [7, 9])),
        (lib.mini_decoder.default, ([f.half() for f in features], weight.half(), bias.half(), [6, 8])),
        (lib.gam_multiply.default, (with_grad, gam.clone().requires_grad_(), True)),
        (lib.gam_multiply.default, ([f.contiguous(memory_format=torch.channels_last) for f in features], gam, False)),
        (lib.mini_decoder_backward.default, (grad, grad.flip(-1), gam, features, weight)),
        (lib.gam_multiply_backward.default, ([f.flip(-1) for f in features], features, gam, False)),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_autocast_runs_in_bfloat16():
    inputs, _ = _decoder_problem(2, [(8, 16, 12), (4, 8, 6)], (64, 48), torch.float32, seed=3)
    features, weight, bias = inputs[:2], inputs[2], inputs[3]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, gam = ops.mini_decoder(features, weight, bias, (64, 48), backend="cuda")
        attended = ops.gam_multiply(features, gam, False, backend="cuda")
    assert logits.dtype == gam.dtype == torch.bfloat16
    assert all(a.dtype == torch.bfloat16 for a in attended)
    as_bf16 = [t.bfloat16().double() for t in features]
    # The float32 weight and bias are read as they are (no cast under autocast).
    expected = list(reference.mini_decoder(as_bf16, weight.double(), bias.double(), (64, 48)))
    expected += reference.gam_multiply(as_bf16, gam.double(), False)
    assert_each_close([logits, gam, *attended], expected, torch.bfloat16, TOLERANCE[torch.bfloat16])


def test_auto_picks_cuda_for_cuda_tensors():
    assert resolve(None, torch.device("cuda")).name == "cuda"


def test_runs_on_the_current_stream():
    """Inputs produced on a side stream are consumed there: the kernels must use the current stream."""
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        inputs, _ = _decoder_problem(2, [(16, 64, 64), (8, 32, 32)], (256, 256), torch.float32, seed=4)
        logits, gam = torch.ops.paanet_fast.mini_decoder(inputs[:2], inputs[2], inputs[3], [256, 256])
        attended = torch.ops.paanet_fast.gam_multiply(inputs[:2], gam, True)
    side.synchronize()
    expected = list(reference.mini_decoder([t.double() for t in inputs[:2]], inputs[2].double(), inputs[3].double(),
                                           (256, 256)))
    expected += reference.gam_multiply([t.double() for t in inputs[:2]], gam.double(), True)
    assert_each_close([logits, gam, *attended], expected, torch.float32, TOLERANCE[torch.float32])


def test_cuda_graph_replay():
    """No host synchronisation inside: both ops capture into a CUDA graph and replay on new values."""
    scales, size = [(8, 16, 16), (4, 8, 8)], (64, 64)
    static, _ = _decoder_problem(2, scales, size, torch.float32, seed=5)
    lib = torch.ops.paanet_fast
    warmup = torch.cuda.Stream()
    warmup.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warmup):
        lib.gam_multiply(static[:2], lib.mini_decoder(static[:2], static[2], static[3], list(size))[1], True)
    torch.cuda.current_stream().wait_stream(warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits, gam = lib.mini_decoder(static[:2], static[2], static[3], list(size))
        attended = lib.gam_multiply(static[:2], gam, True)
    fresh, _ = _decoder_problem(2, scales, size, torch.float32, seed=6)
    for s, f in zip(static, fresh):
        s.copy_(f)
    graph.replay()
    torch.cuda.synchronize()
    expected = list(reference.mini_decoder([t.double() for t in fresh[:2]], fresh[2].double(), fresh[3].double(), size))
    expected += reference.gam_multiply([t.double() for t in fresh[:2]], expected[1], True)
    assert_each_close([logits, gam, *attended], expected, torch.float32, TOLERANCE[torch.float32])


def test_backward_replays_in_a_cuda_graph():
    """The mini-decoder backward's counters of finished blocks are zeroed by its own first launch,
    so a captured forward and backward give the right dW and db on every replay, not only the first."""
    scales, size = [(8, 16, 16), (4, 8, 8)], (64, 64)
    static, static_grads = _decoder_problem(2, scales, size, torch.float32, seed=7)
    lib = torch.ops.paanet_fast

    def step():
        logits, gam = lib.mini_decoder(static[:2], static[2], static[3], list(size))
        return [logits, gam, *lib.mini_decoder_backward(*static_grads, gam, static[:2], static[2])]

    warmup = torch.cuda.Stream()
    warmup.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warmup):
        step()
    torch.cuda.current_stream().wait_stream(warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits, gam, dfeatures, dweight, dbias = step()
    for seed in (8, 9):
        fresh, fresh_grads = _decoder_problem(2, scales, size, torch.float32, seed=seed)
        for s, f in zip([*static, *static_grads], [*fresh, *fresh_grads]):
            s.copy_(f)
        graph.replay()
        torch.cuda.synchronize()
        expected = _run(_decoder(2, size)("reference"), [t.double() for t in fresh], [g.double() for g in fresh_grads])
        assert_each_close([logits, gam, *dfeatures, dweight, dbias], expected, torch.float32, TOLERANCE[torch.float32])


def test_zero_batch():
    features = [torch.randn(0, 2, 3, 3, device="cuda"), torch.randn(0, 1, 1, 1, device="cuda")]
    weight, bias = torch.randn(1, 3, 3, 3, device="cuda"), torch.randn(1, device="cuda")
    leaves = [f.clone().requires_grad_() for f in features]
    logits, gam = ops.mini_decoder(leaves, weight, bias, (6, 6), backend="cuda")
    attended = ops.gam_multiply(leaves, gam, True, backend="cuda")
    assert logits.shape == gam.shape == (0, 1, 6, 6) and [a.shape for a in attended] == [f.shape for f in features]
    (logits.sum() + sum(a.sum() for a in attended)).backward()
    assert [f.grad.shape for f in leaves] == [f.shape for f in features]


def test_arguments_on_two_devices_are_a_clear_error():
    features = [torch.randn(1, 2, 3, 3, device="cuda")]
    with pytest.raises(ValueError, match="`weight` is on cpu"):
        torch.ops.paanet_fast.mini_decoder(features, torch.randn(1, 2, 3, 3), torch.randn(1, device="cuda"), [6, 6])
    with pytest.raises(ValueError, match="`gam` is on cpu"):
        torch.ops.paanet_fast.gam_multiply(features, torch.rand(1, 1, 6, 6), False)


def test_model_matches_reference_backend():
    """PAANet with the cuda backend against the reference backend: one state dict, training mode,
    float64 so that only the operators can differ."""
    torch.manual_seed(7)
    model = PAANet(encoder_name="resnet18", encoder_weights=None, growth=8, backend="reference")
    model = model.to("cuda", torch.float64).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 45, 70, dtype=torch.float64, device="cuda")

    def run(backend):
        model.load_state_dict(state)  # the same parameters and batch-norm statistics for both
        model.backend = backend
        model.zero_grad()
        out = model(x, return_aux=True)
        heads = [out.logits, *out.aux_logits, *out.gam_logits]
        weights = [torch.linspace(-1, 1, h.numel(), dtype=h.dtype, device="cuda").view_as(h) for h in heads]
        sum((h * w).sum() for h, w in zip(heads, weights)).backward()
        return [h.detach() for h in heads] + [p.grad for p in model.parameters()]

    expected = run("reference")
    actual = run("cuda")
    assert all(a is not None for a in actual)
    # Errors of 1e-16 grow through the network. A gradient that is zero in exact arithmetic (a bias
    # before a training-mode batch norm: the H200 gave 5.3e-14 one way, 3.6e-14 the other) is the
    # roundoff of sums of the network's gradients, so tolerances are relative to the largest of them too.
    assert_each_close(actual, expected, torch.float64, 1e-8, floor=max(e.abs().max().item() for e in expected))
