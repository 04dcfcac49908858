"""PAANet on smp's encoders: every backend computes what the reference backend computes, with one
state dict; torch.compile(fullgraph=True) traces the whole model; the command line trains one.

Encoders, one per family: smp's CNNs (efficientnet-b0; mobilenet_v2, torchvision-based), smp's
transformer (mit_b0), timm's through smp's "tu-" names, with strides from 2 (tu-resnet18) and from
4 (tu-convnext_atto, the small sibling of issue 13's tu-convnext_tiny). torchvision's ResNets are
in test_model_backends.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fake_datasets import single_thread  # noqa: F401 (fixture)
from model_cases import assert_same_step, outputs_and_grads
from paanet_fast import PAANet
from paanet_fast.checkpoint import load_checkpoint, model_from_checkpoint
from paanet_fast.cli import main

smp = pytest.importorskip("segmentation_models_pytorch",
                          reason='needs the "encoders" extra (scripts/setup.sh installs it, so CI runs these)')

pytestmark = pytest.mark.usefixtures("single_thread")
ENCODERS = ["efficientnet-b0", "mobilenet_v2", "mit_b0", "tu-resnet18", "tu-convnext_atto"]
SHAPES = {torch.float64: (1, 3, 45, 38), torch.float32: (2, 3, 33, 70)}


def build(encoder: str, backend: str, dtype: torch.dtype = torch.float64, state: dict | None = None,
          **kwargs) -> PAANet:
    torch.manual_seed(0)
    net = PAANet(encoder, encoder_weights=None, backend=backend, **{"growth": 8, **kwargs}).to(dtype)
    if state is not None:
        net.load_state_dict(state)
    return net


def problem(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, dtype=dtype)
    target = (torch.rand(shape[0], 1, *shape[2:], generator=gen) > 0.6).to(dtype)
    return x, target


def seeded_step(net, x: torch.Tensor, target: torch.Tensor):
    # Stochastic depth (mit_b0, efficientnet-b0) draws from the global generator in training mode:
    # every run starts it alike so that the runs compared drop the same paths.
    torch.manual_seed(1)
    return outputs_and_grads(net, x, target)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("backend", ["cpp", "portable"])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_backend_matches_reference(encoder, backend, dtype):
    reference = build(encoder, "reference", dtype).train()
    fast = build(encoder, backend, dtype, state=reference.state_dict()).train()
    x, target = problem(SHAPES[dtype], dtype)
    assert_same_step(seeded_step(fast, x, target), seeded_step(reference, x, target), dtype)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_triton_matches_reference_in_the_interpreter(encoder):
    """The interpreter is slow: a 27x30 input (padded to 32x32), one layer per block (both
    attention kinds), eval mode so that batch 1 is valid for batch norm over the 1x1 stride-32 map;
    outputs and every gradient, as for the other backends."""
    pytest.importorskip("triton", reason="the triton package is not installed")
    from paanet_fast.triton._runtime import INTERPRET

    if not INTERPRET:
        pytest.skip("Triton computes CPU tensors only under TRITON_INTERPRET=1, which tests/conftest.py sets "
                    "when there is no GPU")
    net = build(encoder, "reference", growth=4, num_layers=1).eval()
    x, target = problem((1, 3, 27, 30), torch.float64)
    expected = seeded_step(net, x, target)
    net.backend = "triton"
    assert_same_step(seeded_step(net, x, target), expected, torch.float64)


@pytest.mark.parametrize("encoder", ["efficientnet-b0", "mit_b0", "tu-convnext_atto"])
def test_torch_compile_fullgraph_traces_the_model_with_the_encoder(encoder):
    """Dynamo must capture encoder, custom ops and heads in one graph; the "eager" compile backend
    runs that graph as it is (test_model_backends.py runs AOTAutograd over the ops themselves)."""
    torch._dynamo.reset()
    net = build(encoder, "cpp", torch.float32, num_blocks=2, num_layers=2).train()
    x, target = problem((2, 3, 40, 52), torch.float32)
    expected = seeded_step(net, x, target)
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    outputs, grads = seeded_step(compiled, x, target)
    grads = {name.removeprefix("_orig_mod."): g for name, g in grads.items()}  # the compiled wrapper's names
    assert_same_step((outputs, grads), expected, torch.float32)


TINY = ["--dataset", "synthetic", "--num-images", "10", "--image-size", "64", "--batch-size", "4", "--epochs", "1",
        "--workers", "0", "--backend", "cpp", "--encoder-weights", "none"]


def test_command_line_trains_one_epoch_with_an_smp_encoder(tmp_path, monkeypatch):
    assert main(["train", "--out", str(tmp_path / "run"), "--encoder", "mit_b0", *TINY]) == 0
    state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert state["model_config"]["encoder_name"] == "mit_b0" and state["config"]["encoder"] == "mit_b0"

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilding a checkpoint's model must not download weights")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", refuse)
    model = model_from_checkpoint(state, backend="cpp")  # loads the weights strictly
    assert type(model.encoder).__name__ == "MixVisionTransformerEncoder"
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    logits = model.predict(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 1, 64, 64) and torch.isfinite(logits).all()


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_torchrun_trains_an_encoder_whose_forward_leaves_parameters_unused(tmp_path):
    """efficientnet-b0's classifier convolution gets no gradient: DDP must accept that every step."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "paanet_fast", "train", "--out", str(tmp_path / "ddp"), "--encoder", "efficientnet-b0", *TINY,
               "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["epoch"] == 1 and "world size: 2" in result.stdout
    assert state["history"][0]["train_images"] == 8  # both processes took batches of the 8 training images


def test_command_line_rejects_an_unknown_encoder_before_training(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--encoder", "efficientnet-b99", *TINY]) == 2
    assert "--encoder: encoder_name 'efficientnet-b99' is unknown" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
