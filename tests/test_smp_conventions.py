"""PAANet follows segmentation_models_pytorch's model conventions: the encoder / decoder /
segmentation_head parts, predict(x), and a JSON config that from_config turns back into the model."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fake_datasets import single_thread  # noqa: F401 (fixture)
from paanet_fast import PAANet, PAANetLoss
from paanet_fast.model import PAANetDecoder

pytestmark = pytest.mark.usefixtures("single_thread")


def make(encoder_name: str = "resnet18", **kwargs) -> PAANet:
    torch.manual_seed(0)
    return PAANet(encoder_name, **{"encoder_weights": None, "growth": 8, "backend": "cpp", **kwargs})


def batch(shape=(2, 3, 45, 38), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    return x, (torch.rand(shape[0], 1, *shape[2:], generator=gen) > 0.6).float()


def test_the_parts_are_smps():
    net = make()
    assert [name for name, _ in net.named_children()] == ["encoder", "decoder", "segmentation_head", "aux_heads"]
    assert isinstance(net.decoder, PAANetDecoder) and isinstance(net.segmentation_head, nn.Conv2d)
    assert net.segmentation_head.in_channels == net.decoder.out_channels
    # every parameter belongs to one of the parts
    parts = {name.split(".")[0] for name, _ in net.named_parameters()}
    assert parts == {"encoder", "decoder", "segmentation_head", "aux_heads"}


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_predict_is_eval_mode_logits_without_autograd_and_keeps_the_mode(backend):
    net = make(backend=backend).train()
    x, _ = batch((1, 3, 37, 50))
    logits = net.predict(x)
    assert net.training  # back in training mode (smp's predict would have left it in eval mode: issue 18)
    assert logits.shape == (1, 1, 37, 50) and not logits.requires_grad and logits.grad_fn is None
    with torch.no_grad():
        expected = net.eval()(x)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(net.predict(x), expected, rtol=0, atol=0)
    assert not net.training  # an eval-mode model stays in eval mode
    # in train mode the batch statistics would have given other logits: predict really used eval mode
    with torch.no_grad():
        assert not torch.allclose(net.train()(x), expected)


@pytest.mark.parametrize("encoder_name", ["resnet18", "mobilenet_v2"])
def test_freezing_the_encoder_trains_only_the_rest(encoder_name):
    if encoder_name != "resnet18":
        pytest.importorskip("segmentation_models_pytorch", reason='needs the "encoders" extra')
    net = make(encoder_name).train()
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    x, target = batch()
    PAANetLoss()(net(x, return_aux=True), target).backward()
    optimizer.step()
    for name, p in net.named_parameters():
        if name.startswith("encoder."):
            assert p.grad is None and torch.equal(p, before[name]), name
        elif name.startswith(("decoder.", "segmentation_head.")):
            assert not torch.equal(p, before[name]), f"{name} was not trained"


def test_swapping_the_segmentation_head_changes_the_logits():
    net = make().eval()
    net.segmentation_head = nn.Sequential(nn.Conv2d(net.decoder.out_channels, 16, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(16, 3, 1))
    seen = []
    net.segmentation_head.register_forward_hook(lambda module, args, out: seen.append(out))
    x, _ = batch((1, 3, 45, 38))
    logits = net(x)
    assert logits.shape == (1, 3, 45, 38)
    # the new head's stride-4 map, resized to the padded input and cropped, is the logits
    expected = F.interpolate(seen[0], size=(64, 64), mode="bilinear", align_corners=False)[..., :45, :38]
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.segmentation_head.parameters())


@pytest.mark.parametrize("kwargs", [
    dict(encoder_name="resnet18"),
    dict(encoder_name="mit_b0", in_channels=1, classes=2, num_blocks=3, num_layers=2, growth=4),
], ids=["resnet18", "mit_b0"])
def test_config_is_json_and_from_config_rebuilds_the_network(kwargs, monkeypatch):
    if kwargs["encoder_name"] != "resnet18":
        smp = pytest.importorskip("segmentation_models_pytorch", reason='needs the "encoders" extra')

        def refuse(*args, **kw):
            raise AssertionError("from_config must not download weights")

        monkeypatch.setattr(smp.encoders, "hf_hub_download", refuse)
    net = make(**kwargs).eval()
    config = json.loads(json.dumps(net.config))
    assert config == {**dict(in_channels=3, classes=1, num_blocks=2, num_layers=3, growth=8, backend="cpp"),
                      **kwargs}
    twin = PAANet.from_config(config).eval()
    assert twin.config == net.config
    twin.load_state_dict(net.state_dict())  # strict: the same modules, the same shapes
    x = torch.randn(2, config["in_channels"], 33, 40)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)


def test_config_follows_the_backend_and_rejects_unknown_keys():
    net = make()
    net.backend = "reference"
    assert PAANet.from_config(net.config).backend == "reference"
    with pytest.raises(ValueError, match=r"unknown keys \['encoder_weights', 'widths'\]"):
        PAANet.from_config({**net.config, "widths": 3, "encoder_weights": "imagenet"})
