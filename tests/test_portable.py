"""The "portable" backend (paanet_fast.portable, plain PyTorch) against paanet_fast.reference:
outputs and every gradient on fresh random odd shapes (exact to 1e-12 in float64), its explicit
first backward, second derivatives, reduced precision and autocast, memory layouts, what autograd
keeps at full resolution, torch.compile, the model, and the auto rule that falls back to it."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch

from ops_cases import (LAYOUTS, MODEL_STRIDES, TOLERANCE, GamMultiplyCase, MiniDecoderCase, gam_multiply_case,
                       gam_multiply_names, gam_multiply_outputs_and_grads, mini_decoder_case, mini_decoder_names,
                       mini_decoder_outputs_and_grads, relative_error, tiny_gam_multiply_case,
                       tiny_mini_decoder_case, with_grad)
from test_model_backends import build, outputs_and_grads
from paanet_fast import PAANet, PAANetLoss, backends, ops, portable, reference
from paanet_fast.cli import build_parser

portable_mini_decoder = functools.partial(ops.mini_decoder, backend="portable")
portable_gam_multiply = functools.partial(ops.gam_multiply, backend="portable")
# The same math in another order: float64 agrees to rounding, far inside TOLERANCE[float64].
EXACT = {torch.float64: 1e-12, torch.float32: TOLERANCE[torch.float32]}


def assert_all_close(actual: list[torch.Tensor], expected: list[torch.Tensor], names: list[str], tol: float,
                     what: str) -> None:
    assert len(actual) == len(expected) == len(names)
    for name, a, e in zip(names, actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype, f"{name} ({what}): {a.dtype} {tuple(a.shape)}"
        assert torch.isfinite(a).all(), f"{name} ({what}): non-finite values"
        err = relative_error(a, e)
        assert err <= tol, f"{name} ({what}): relative error {err:.3g} > {tol:.0e}"


def check_mini_decoder(case: MiniDecoderCase, seed: int, tol: float) -> None:
    actual = mini_decoder_outputs_and_grads(portable_mini_decoder, case, seed)
    expected = mini_decoder_outputs_and_grads(reference.mini_decoder, case, seed)
    assert_all_close(actual, expected, mini_decoder_names(case), tol, case.describe())


def check_gam_multiply(case: GamMultiplyCase, reverse: bool, seed: int, tol: float) -> None:
    actual = gam_multiply_outputs_and_grads(portable_gam_multiply, case, reverse, seed)
    expected = gam_multiply_outputs_and_grads(reference.gam_multiply, case, reverse, seed)
    assert_all_close(actual, expected, gam_multiply_names(case), tol, f"{case.describe()}, reverse={reverse}")


# --- parity with the reference ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(10))
def test_mini_decoder_matches_reference_on_random_shapes(seed, dtype):
    """Any output size, features up- and downsampled by any ratio, 1 to 4 scales, batch 1 to 3."""
    check_mini_decoder(mini_decoder_case(seed, dtype), seed, EXACT[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(3))
def test_mini_decoder_matches_reference_at_model_strides(seed, dtype):
    check_mini_decoder(mini_decoder_case(seed, dtype, strides=MODEL_STRIDES), seed, EXACT[dtype])


@pytest.mark.parametrize("sides,size", [
    ([(1, 1)], (1, 1)),  # one pixel: every shifted tap falls outside but the centre
    ([(1, 1), (2, 3)], (5, 7)),  # broadcasting a single pixel, non-integer ratios
    ([(9, 4), (7, 13)], (3, 5)),  # downsampling
    ([(37, 41), (75, 67), (19, 17)], (150, 133)),  # large and odd
])
def test_mini_decoder_matches_reference_at_batch_one(sides, size):
    gen = torch.Generator().manual_seed(len(sides) + size[0])
    channels = [3, 5, 2][:len(sides)]
    features = [torch.randn(1, c, h, w, generator=gen, dtype=torch.float64) for c, (h, w) in zip(channels, sides)]
    case = MiniDecoderCase(features, torch.randn(1, sum(channels), 3, 3, generator=gen, dtype=torch.float64),
                           torch.randn(1, generator=gen, dtype=torch.float64), size)
    check_mini_decoder(case, 5, EXACT[torch.float64])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(6))
def test_gam_multiply_matches_reference_on_random_shapes(seed, dtype, reverse):
    """Unequal factors per axis and per scale, factor 1, batch 1 to 3."""
    check_gam_multiply(gam_multiply_case(seed, dtype), reverse, seed, EXACT[dtype])


@pytest.mark.parametrize("reverse", [False, True])
def test_gam_multiply_matches_reference_at_model_strides(reverse):
    check_gam_multiply(gam_multiply_case(3, torch.float64, strides=MODEL_STRIDES), reverse, 3, EXACT[torch.float64])


# --- the explicit first backward (what the compiled backward operators compute) ------------------

@pytest.mark.parametrize("seed", range(6))
def test_mini_decoder_backward_is_the_gradient_of_the_reference(seed):
    case = mini_decoder_case(seed, torch.float64, strides=MODEL_STRIDES if seed % 3 == 0 else None)
    gen = torch.Generator().manual_seed(seed)
    features, (weight, bias) = with_grad(case.features), with_grad([case.weight, case.bias])
    logits, gam = reference.mini_decoder(features, weight, bias, case.size)
    grad_logits, grad_gam = torch.randn(2, *logits.shape, generator=gen, dtype=torch.float64)
    expected = torch.autograd.grad([logits, gam], [*features, weight, bias], [grad_logits, grad_gam])
    grad_features, grad_weight, grad_bias = portable.mini_decoder_backward(grad_logits, grad_gam, gam.detach(),
                                                                           case.features, case.weight)
    assert_all_close([*grad_features, grad_weight, grad_bias], list(expected), mini_decoder_names(case)[2:],
                     EXACT[torch.float64], case.describe())


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_gam_multiply_backward_is_the_gradient_of_the_reference(seed, reverse):
    case = gam_multiply_case(seed, torch.float64)
    gen = torch.Generator().manual_seed(seed)
    features, (gam,) = with_grad(case.features), with_grad([case.gam])
    outputs = reference.gam_multiply(features, gam, reverse)
    grads = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outputs]
    expected = torch.autograd.grad(outputs, [*features, gam], grads)
    grad_features, grad_gam = portable.gam_multiply_backward(grads, case.features, case.gam, reverse)
    n = len(case.features)
    assert_all_close([*grad_features, grad_gam], list(expected), gam_multiply_names(case)[n:],
                     EXACT[torch.float64], case.describe())


# --- first and second derivatives by finite differences ----------------------------------------------

def test_mini_decoder_gradcheck_and_gradgradcheck():
    case = tiny_mini_decoder_case(21)
    n = len(case.features)

    def fn(*args):
        return portable_mini_decoder(list(args[:n]), args[n], args[n + 1], case.size)

    inputs = [t.requires_grad_() for t in [*case.features, case.weight, case.bias]]
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("reverse", [False, True])
def test_gam_multiply_gradcheck_and_gradgradcheck(reverse):
    case = tiny_gam_multiply_case(22)
    n = len(case.features)

    def fn(*args):
        return tuple(portable_gam_multiply(list(args[:n]), args[n], reverse))

    inputs = [t.requires_grad_() for t in [*case.features, case.gam]]
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


# --- reduced precision and autocast ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_is_accumulated_in_float32(dtype):
    """Expected: the float32 reference on the same (rounded) inputs, cast back to the input dtype."""
    md_case = mini_decoder_case(5, dtype, strides=MODEL_STRIDES)
    up = MiniDecoderCase([f.float() for f in md_case.features], md_case.weight.float(), md_case.bias.float(),
                         md_case.size)
    actual = mini_decoder_outputs_and_grads(portable_mini_decoder, md_case, 5)
    expected = [e.to(dtype) for e in mini_decoder_outputs_and_grads(reference.mini_decoder, up, 5)]
    assert_all_close(actual, expected, mini_decoder_names(md_case), TOLERANCE[dtype], md_case.describe())

    gm_case = gam_multiply_case(5, dtype)
    up = GamMultiplyCase([f.float() for f in gm_case.features], gm_case.gam.float())
    actual = gam_multiply_outputs_and_grads(portable_gam_multiply, gm_case, True, 5)
    expected = [e.to(dtype) for e in gam_multiply_outputs_and_grads(reference.gam_multiply, up, True, 5)]
    assert_all_close(actual, expected, gam_multiply_names(gm_case), TOLERANCE[dtype], gm_case.describe())


def layer_under_autocast(backend: str, case: MiniDecoderCase, seed: int, autocast: bool) -> list[torch.Tensor]:
    """A PAAD layer's two operators on float32 leaves under CPU bfloat16 autocast (or on the given
    leaves without it), with bfloat16-representable output gradients: its outputs and gradients."""
    features, (weight, bias) = with_grad(case.features), with_grad([case.weight, case.bias])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, gam = ops.mini_decoder(features, weight, bias, case.size, backend=backend)
        products = ops.gam_multiply(features, gam, True, backend=backend)
    outputs = [logits, gam, *products]
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=gen).bfloat16().to(o.dtype) for o in outputs]
    torch.autograd.backward(outputs, grads)
    return [o.detach() for o in outputs] + [t.grad for t in [*features, weight, bias]]


@pytest.mark.parametrize("seed", range(3))
def test_autocast_bfloat16_matches_the_reference_under_autocast(seed):
    """Outputs come back in bfloat16, gradients in the leaves' float32; both agree with the reference
    under the same autocast, and with the float64 reference on the bfloat16-rounded inputs."""
    case = mini_decoder_case(seed, torch.float32, strides=MODEL_STRIDES)
    actual = layer_under_autocast("portable", case, seed, autocast=True)
    under_autocast = layer_under_autocast("reference", case, seed, autocast=True)
    rounded = MiniDecoderCase([f.bfloat16().double() for f in case.features], case.weight.bfloat16().double(),
                              case.bias.bfloat16().double(), case.size)
    exact = layer_under_autocast("reference", rounded, seed, autocast=False)
    n = len(case.features)
    assert [t.dtype for t in actual] == [torch.bfloat16] * (2 + n) + [torch.float32] * (n + 2)
    tol = TOLERANCE[torch.bfloat16]
    for i, (a, r, e) in enumerate(zip(actual, under_autocast, exact)):
        assert relative_error(a, r) <= tol, f"result {i} against the reference under autocast"
        assert relative_error(a, e.to(a.dtype)) <= tol, f"result {i} against the float64 reference"


# --- layouts and memory -------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_any_layout(layout):
    relayout = LAYOUTS[layout]
    md_case = mini_decoder_case(11, torch.float64, strides=(4, 8))
    md_case.features = [relayout(f) if i % 2 == 0 else f for i, f in enumerate(md_case.features)]
    md_case.weight = relayout(md_case.weight)
    check_mini_decoder(md_case, 11, EXACT[torch.float64])
    gm_case = gam_multiply_case(12, torch.float64)
    gm_case.features = [relayout(f) for f in gm_case.features]
    gm_case.gam = relayout(gm_case.gam)
    check_gam_multiply(gm_case, True, 12, EXACT[torch.float64])


def saved_elements(fn, case: MiniDecoderCase) -> int:
    """How many elements autograd keeps for the backward of one mini_decoder call: the sizes of the
    distinct buffers it saves, beyond the inputs themselves (which the caller holds anyway)."""
    features, (weight, bias) = with_grad(case.features), with_grad([case.weight, case.bias])
    saved = {t.untyped_storage().data_ptr(): 0 for t in [*features, weight, bias]}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes() // t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(features, weight, bias, case.size)
    return sum(saved.values())


@pytest.mark.parametrize("channels", [4, 32])
def test_mini_decoder_keeps_a_few_full_resolution_planes_whatever_the_channels(channels):
    """The reference keeps the upsampled concatenation (sum C_v planes at full resolution); the
    portable backend keeps G and the resize matrices (H x 1.4 H and W x 1.4 W for the model's
    strides, shared by the batch): under two planes at batch 4, the same for any channel count."""
    gen = torch.Generator().manual_seed(0)
    features = [torch.randn(4, channels, 64 // s, 64 // s, generator=gen) for s in MODEL_STRIDES]
    weight = torch.randn(1, 4 * channels, 3, 3, generator=gen)
    case = MiniDecoderCase(features, weight, torch.randn(1, generator=gen), (64, 64))
    plane = 4 * 64 * 64
    assert saved_elements(reference.mini_decoder, case) >= 4 * channels * plane
    kept = saved_elements(portable.mini_decoder, case)
    assert kept < 2 * plane
    four_channels = MiniDecoderCase([f[:, :4] for f in features], weight[:, :16], case.bias, case.size)
    assert kept == saved_elements(portable.mini_decoder, four_channels)


# --- torch.compile and the model -----------------------------------------------------------------------

def test_torch_compile_with_dynamic_sizes_traces_both_operators():
    """One graph (fullgraph) with symbolic sizes; a second input size runs the same graph."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    def layer(features, weight, bias, size):
        logits, gam = portable_mini_decoder(features, weight, bias, size)
        return [logits, *portable_gam_multiply(features, gam, True)]

    def reference_layer(features, weight, bias, size):
        logits, gam = reference.mini_decoder(features, weight, bias, size)
        return [logits, *reference.gam_multiply(features, gam, True)]

    compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend="aot_eager")
    # All sizes of the first call distinct and not 1 (dynamo gives equal sizes one symbol, 1 a constant).
    for batch, (height, width) in [(2, (24, 20)), (4, (36, 28))]:
        gen = torch.Generator().manual_seed(batch)
        features = [torch.randn(batch, c, height // s, width // s, generator=gen, dtype=torch.float64)
                    for c, s in [(7, 2), (9, 4)]]
        case = MiniDecoderCase(features, torch.randn(1, 16, 3, 3, generator=gen, dtype=torch.float64),
                               torch.randn(1, generator=gen, dtype=torch.float64), (height, width))

        def run(fn):
            features, (weight,) = with_grad(case.features), with_grad([case.weight])
            outputs = fn(features, weight, case.bias, case.size)
            sum(o.sin().sum() for o in outputs).backward()
            return [o.detach() for o in outputs] + [f.grad for f in features] + [weight.grad]

        for i, (a, e) in enumerate(zip(run(compiled), run(reference_layer))):
            assert relative_error(a, e) <= EXACT[torch.float64], f"result {i} ({case.describe()})"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1, "the second size recompiled"


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_model_matches_the_reference_backend(train):
    reference_net = build("reference", torch.float64).train(train)
    portable_net = build("portable", torch.float64, state=reference_net.state_dict()).train(train)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 45, 38, generator=gen, dtype=torch.float64)
    target = (torch.rand(1, 1, 45, 38, generator=gen) > 0.6).double()
    (out, grads), (ref_out, ref_grads) = (outputs_and_grads(net, x, target) for net in (portable_net, reference_net))
    for i, (a, e) in enumerate(zip(out, ref_out)):
        assert relative_error(a, e) <= EXACT[torch.float64], f"output {i}"
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        assert relative_error(grads[name], g) <= EXACT[torch.float64], f"grad of {name}"


def test_torch_compile_fullgraph_of_the_model():
    torch._dynamo.reset()
    net = build("portable", torch.float32, num_blocks=2, num_layers=1).train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    target = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    eager_out, eager_grads = outputs_and_grads(net, x, target)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    net.zero_grad(set_to_none=True)
    out = compiled(x, return_aux=True)
    PAANetLoss()(out, target).backward()
    for i, (a, e) in enumerate(zip([out.logits, *out.aux_logits, *out.gam_logits], eager_out)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5, msg=lambda m: f"output {i}: {m}")
    for name, p in net.named_parameters():
        scale = eager_grads[name].abs().max().item()
        torch.testing.assert_close(p.grad, eager_grads[name], rtol=1e-4, atol=1e-5 + 1e-4 * scale,
                                   msg=lambda m: f"grad of {name}: {m}")


# --- the backend registry ---------------------------------------------------------------------------------

def test_portable_is_available_everywhere_and_selectable():
    assert "portable" in backends.available_backends()
    assert "portable" in backends.KNOWN_BACKENDS
    assert PAANet("resnet18", encoder_weights=None, backend="portable").backend == "portable"
    assert build_parser().parse_args(["train", "--out", "run", "--backend", "portable"]).backend == "portable"


@pytest.fixture
def fresh_fallback_warnings(monkeypatch):
    monkeypatch.setattr(backends, "_warned_fallback", set())


@pytest.mark.parametrize("device_type", ["mps", "xpu"])
def test_auto_picks_portable_on_devices_without_compiled_kernels(device_type, fresh_fallback_warnings):
    device = torch.device(device_type)
    with pytest.warns(RuntimeWarning, match=rf"no compiled backend for {device_type} tensors \(none exists for "
                                            r"this device type\); using the portable backend"):
        assert backends.resolve("auto", device).name == "portable"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device type
        assert backends.resolve(None, device).name == "portable"
    assert backends.resolve("portable", device).name == "portable"
    with pytest.raises(ValueError, match=rf"backend 'cpp' computes \['cpu'\] tensors, but the inputs are on "
                                         rf"{device_type}"):
        backends.resolve("cpp", device)


def test_runs_on_the_meta_device(fresh_fallback_warnings):
    """A device with neither compiled kernels nor autocast (shape inference, deferred init): auto
    resolves to portable, and both operators give the shapes and dtype they promise."""
    features = [torch.empty(2, 3, 5, 4, device="meta"), torch.empty(2, 2, 10, 8, device="meta")]
    weight, bias = torch.empty(1, 5, 3, 3, device="meta"), torch.empty(1, device="meta")
    with pytest.warns(RuntimeWarning, match=r"no compiled backend for meta tensors"):
        logits, gam = ops.mini_decoder(features, weight, bias, (20, 16))
    products = ops.gam_multiply(features, gam, True)
    assert [tuple(t.shape) for t in [logits, gam, *products]] == [(2, 1, 20, 16)] * 2 + [(2, 3, 5, 4), (2, 2, 10, 8)]
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for t in [logits, gam, *products])
