"""The PAANet module: shapes, outputs, gradients, the alternating attention, state dicts, errors."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import paanet_fast
from paanet_fast import PAANet, PAANetLoss, PAANetOutput, ops


def make(**kwargs) -> PAANet:
    torch.manual_seed(0)
    kwargs = {"encoder_name": "resnet18", "encoder_weights": None, "backend": "reference", **kwargs}
    return PAANet(**kwargs)


@pytest.fixture(scope="module")
def model() -> PAANet:
    return make()


@pytest.mark.parametrize("shape", [(1, 3, 33, 47), (2, 3, 64, 64), (1, 3, 100, 37), (1, 3, 17, 90)])
@pytest.mark.parametrize("train", [True, False])
def test_output_shapes_any_size(model, shape, train):
    model.train(train)
    x = torch.randn(shape)
    with torch.no_grad():
        logits = model(x)
        out = model(x, return_aux=True)
    b, _, h, w = shape
    assert logits.shape == (b, 1, h, w)
    assert isinstance(out, PAANetOutput)
    assert out.logits.shape == (b, 1, h, w)
    assert [a.shape for a in out.aux_logits] == [(b, 1, h, w)] * 3
    assert [g.shape for g in out.gam_logits] == [(b, 1, h, w)] * 6
    assert all(torch.isfinite(t).all() for t in [out.logits, *out.aux_logits, *out.gam_logits])


@pytest.mark.parametrize("num_blocks,num_layers", [(1, 1), (3, 2), (2, 4)])
def test_output_counts_follow_blocks_and_layers(num_blocks, num_layers):
    net = make(num_blocks=num_blocks, num_layers=num_layers, growth=8, classes=2, in_channels=1).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 40, 40), return_aux=True)
    assert out.logits.shape == (1, 2, 40, 40)
    assert len(out.aux_logits) == 3 and all(a.shape == (1, 2, 40, 40) for a in out.aux_logits)
    assert len(out.gam_logits) == num_blocks * num_layers
    assert all(g.shape == (1, 1, 40, 40) for g in out.gam_logits)
    assert [blk.reverse for blk in net.decoder.blocks] == [b % 2 == 0 for b in range(1, num_blocks + 1)]


def test_every_parameter_gets_a_finite_gradient():
    net = make(growth=8).train()
    x = torch.randn(2, 3, 45, 38)
    target = (torch.rand(2, 1, 45, 38) > 0.6).float()
    PAANetLoss()(net(x, return_aux=True), target).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    # The GAM convolutions are only reached through ops.mini_decoder: they must really be trained.
    for block in net.decoder.blocks:
        for conv in block.gam_convs:
            assert conv.weight.grad.abs().sum() > 0 and conv.bias.grad.abs().sum() > 0


def test_reverse_blocks_use_one_minus_the_pooled_gam(monkeypatch):
    net = make(growth=8).eval()
    calls = []
    real = ops.gam_multiply

    def spy(features, gam, reverse=False, *, backend=None):
        out = real(features, gam, reverse, backend=backend)
        for f, p in zip(features, out):
            pooled = F.avg_pool2d(gam, gam.shape[-1] // f.shape[-1])
            calls.append((reverse, torch.allclose(p, f * (1 - pooled)), torch.allclose(p, f * pooled)))
        return out

    monkeypatch.setattr(ops, "gam_multiply", spy)
    with torch.no_grad():
        net(torch.randn(1, 3, 64, 64))
    per_block = 3 * 4  # layers x scales
    assert len(calls) == 2 * per_block
    first, second = calls[:per_block], calls[per_block:]
    assert all(rev is False and plain and not inverted for rev, inverted, plain in first)
    assert all(rev is True and inverted and not plain for rev, inverted, plain in second)


def test_model_computes_gams_only_through_the_ops(monkeypatch):
    net = make(growth=8).eval()
    counts = {"mini_decoder": 0, "gam_multiply": 0}
    for name in counts:
        real = getattr(ops, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(ops, name, counted)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 32, 32), return_aux=True)
    assert counts == {"mini_decoder": 6, "gam_multiply": 6} and len(out.gam_logits) == 6


def test_state_dict_round_trip_and_eval_determinism(model):
    model.eval()
    clone = make()
    torch.manual_seed(1)
    for p in clone.parameters():  # make sure the clone starts different
        p.data.normal_()
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.randn(2, 3, 50, 61)
    with torch.no_grad():
        a, b, c = model(x), model(x), clone(x)
    assert torch.equal(a, b)
    assert torch.equal(a, c)


def test_backend_is_switchable_and_validated(model):
    model.backend = "reference"
    assert model.backend == "reference" and all(b.backend == "reference" for b in model.decoder.blocks)
    assert model.config["backend"] == "reference"
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        model.backend = "nope"
    with pytest.raises(ValueError, match="unknown backend"):
        make(backend="fastest")


def test_available_backends_lists_reference():
    assert "reference" in paanet_fast.available_backends()


def test_available_backends_in_a_fresh_process_lists_the_plain_pytorch_backends():
    """The package imports its modules lazily: available_backends() must not depend on ops being imported."""
    code = "import paanet_fast; print(' '.join(paanet_fast.available_backends()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"reference", "portable"} <= set(result.stdout.split())


@pytest.mark.parametrize("x,message", [
    (torch.randn(3, 32, 32), r"4-D input \(B, 3, H, W\)"),
    (torch.randn(1, 1, 32, 32), "expects 3 input channels"),
    (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "floating-point input"),
    ([1, 2, 3], "expects a tensor"),
])
def test_bad_inputs_are_rejected(model, x, message):
    with pytest.raises(ValueError, match=message):
        model(x)


@pytest.mark.parametrize("kwargs,message", [
    ({"encoder_name": "resnet5"}, "encoder_name 'resnet5' is unknown"),
    ({"in_channels": 0}, "in_channels must be a positive integer"),
    ({"classes": 0}, "classes must be a positive integer"),
    ({"num_layers": 0}, "num_layers must be a positive integer"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)
