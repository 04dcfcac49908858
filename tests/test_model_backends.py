"""The drop-in promise: the fast backend computes the same PAANet as the reference backend.

One state dict, both backends, train and eval mode: logits, deep-supervision logits, every GAM
and every parameter gradient. Plus backend switching and torch.compile(fullgraph=True).
"""
import subprocess
import sys

import pytest
import torch

from model_cases import TOLERANCES, assert_same_step, outputs_and_grads
from paanet_fast import PAANet, PAANetLoss

FAST = "cpp"  # the compiled backend of CPU tensors; the CUDA and Triton twins live in their own files


def build(backend: str, dtype: torch.dtype, state: dict | None = None, **kwargs) -> PAANet:
    torch.manual_seed(0)
    net = PAANet("resnet18", encoder_weights=None, backend=backend, growth=8, **kwargs).to(dtype)
    if state is not None:
        net.load_state_dict(state)
    return net


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(2, 3, 45, 38), (1, 3, 64, 96)])
def test_fast_backend_matches_reference(dtype, train, shape):
    reference = build("reference", dtype).train(train)
    fast = build(FAST, dtype, state=reference.state_dict()).train(train)
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen).to(dtype)
    target = (torch.rand(shape[0], 1, *shape[2:], generator=gen) > 0.6).to(dtype)
    expected = outputs_and_grads(reference, x, target)
    assert len(expected[0]) == 1 + 3 + 6
    assert_same_step(outputs_and_grads(fast, x, target), expected, dtype)
    if train:  # the batch-norm running statistics moved identically
        for (name, a), (_, b) in zip(fast.named_buffers(), reference.named_buffers()):
            torch.testing.assert_close(a, b, **TOLERANCES[dtype], msg=lambda m: f"buffer {name}: {m}")


def test_backend_can_be_switched_after_construction():
    net = build("reference", torch.float64).eval()
    x = torch.randn(1, 3, 40, 52, dtype=torch.float64)
    with torch.no_grad():
        before = net(x, return_aux=True)
        net.backend = FAST
        after = net(x, return_aux=True)
    assert net.backend == FAST and all(b.backend == FAST for b in net.decoder.blocks)
    for a, b in zip([after.logits, *after.gam_logits], [before.logits, *before.gam_logits]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_torch_compile_fullgraph_runs_the_fast_model():
    torch._dynamo.reset()
    net = build(FAST, torch.float32, num_blocks=2, num_layers=2).train()
    x = torch.randn(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    eager_out, eager_grads = outputs_and_grads(net, x, target)
    # aot_eager: dynamo must trace the whole model, custom ops included, in one graph (fullgraph)
    # and AOTAutograd must run their fake kernels and autograd formulas; inductor's code generation
    # adds minutes here and nothing about the ops.
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    net.zero_grad(set_to_none=True)
    out = compiled(x, return_aux=True)
    PAANetLoss()(out, target).backward()
    torch.testing.assert_close(out.logits, eager_out[0], rtol=1e-4, atol=1e-5)
    for name, p in net.named_parameters():
        scale = eager_grads[name].abs().max().item()
        torch.testing.assert_close(p.grad, eager_grads[name], rtol=1e-4, atol=1e-5 + 1e-4 * scale,
                                   msg=lambda m: f"grad of {name}: {m}")


def test_dynamic_shape_training_compiles_once_over_padded_sizes():
    """torch.compile(dynamic=True) training on inputs padded to 64, 96 and 128: one graph, so the
    padding and the operators add no guard on the size. Batch 2 keeps every convolution on one side
    of the CPU's own algorithm threshold (mkldnn above 20480 input elements): with batch 1 these
    sizes cross it, a guard of torch's that makes the reference backend recompile just the same."""
    torch._dynamo.reset()
    graphs = []

    def counting_backend(gm, example_inputs):  # dynamo's graphs, run as they are (no inductor)
        graphs.append(gm)
        return gm.forward

    net = build(FAST, torch.float32, num_blocks=1, num_layers=1).train()
    compiled = torch.compile(net, dynamic=True, backend=counting_backend)
    gen = torch.Generator().manual_seed(5)
    for height, width in [(40, 36), (72, 70), (100, 97)]:
        x = torch.randn(2, 3, height, width, generator=gen)
        out = compiled(x, return_aux=True)
        PAANetLoss()(out, (torch.rand(2, 1, height, width, generator=gen) > 0.5).float()).backward()
        assert out.logits.shape == (2, 1, height, width)
    assert len(graphs) == 1


@pytest.mark.parametrize("backend", ["auto", "cpp"])
def test_torch_compile_fullgraph_before_any_eager_call(backend):
    """A fresh process that compiles the model before running it eagerly: resolving the backend
    inside the trace must import nothing (dynamo cannot trace an import)."""
    script = f"""
import torch
from paanet_fast import PAANet
torch.manual_seed(0)
net = PAANet("resnet18", encoder_weights=None, growth=8, num_blocks=1, num_layers=1, backend={backend!r}).eval()
x = torch.randn(1, 3, 40, 36)
compiled = torch.compile(net, fullgraph=True, backend="eager")(x)
torch.testing.assert_close(compiled, net(x))
print("same")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "same", result.stderr[-3000:]


def test_resolved_backend_says_what_auto_runs_for_a_device():
    """Issue 18: `model.backend` reads "auto"; resolved_backend names what computes (the compiled CPU
    kernels for CPU tensors), and refuses a device a named backend cannot compute, as forward does."""
    model = PAANet("resnet18", encoder_weights=None, growth=8)
    assert model.backend == "auto" and model.resolved_backend() == FAST == model.resolved_backend("cpu")
    model.backend = "portable"
    assert model.resolved_backend(torch.device("cpu")) == "portable"
    model.backend = "cuda"
    from paanet_fast import _build_info
    if _build_info.CUDA_REQUESTED:
        with pytest.raises(ValueError, match=r"backend 'cuda' computes \['cuda'\] tensors, but the inputs are on cpu"):
            model.resolved_backend()
    else:  # a build of the C++ kernels alone (PAANET_FAST_CUDA=0): the backend itself is missing
        with pytest.raises(RuntimeError, match=r"backend 'cuda' is not available: .*built without CUDA kernels"):
            model.resolved_backend()
