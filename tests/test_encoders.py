"""Encoders: torchvision's ResNets and smp's, their names, scales, weights (offline) and errors."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from fake_datasets import single_thread  # noqa: F401 (fixture)
from paanet_fast import PAANet
from paanet_fast.checkpoint import RunError
from paanet_fast.encoder import check_scales
from paanet_fast.resnet_encoder import ResNetEncoder
from paanet_fast.train import TrainConfig

smp = pytest.importorskip("segmentation_models_pytorch",
                          reason='needs the "encoders" extra (scripts/setup.sh installs it, so CI runs these)')
import huggingface_hub.constants  # noqa: E402  (installed with smp)
import safetensors.torch  # noqa: E402
import timm  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
ISSUE_NAMES = ["efficientnet-b0", "mit_b0", "tu-convnext_tiny", "mobilenet_v2", "tu-resnet18"]  # issue 13's examples


def small(name: str, **kwargs) -> PAANet:
    torch.manual_seed(0)
    return PAANet(name, **{"encoder_weights": None, "growth": 4, "num_blocks": 1, "num_layers": 1,
                           "backend": "reference", **kwargs})


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test: every weights file must come from the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in offline mode (what smp and timm download through)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    # hf_hub_download reads these at each call; offline, it only looks into the cache.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def put_in_hub_cache(cache, repo_id: str, revision: str | None, files: dict[str, bytes]) -> None:
    """Write `files` where hf_hub_download looks for them (revision None: the main branch)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = revision or "0123456789abcdef0123456789abcdef01234567"
    if revision is None:
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """`module`'s state dict with every floating tensor replaced by seeded noise."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
            for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", ISSUE_NAMES)
def test_issue_names_build_with_laterals_fitted_to_the_encoder(name):
    net = small(name).eval()
    channels = list(net.encoder.out_channels)
    assert [lat[0].in_channels for lat in net.decoder.lateral] == channels[2:6]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = net.encoder(x)
        logits = net(torch.randn(1, 3, 33, 47))
    # entries 2..5 really are the strides 4, 8, 16, 32, with the channels out_channels says
    assert [tuple(f.shape[1:]) for f in features[2:6]] == [(c, 64 // s, 96 // s) for c, s in
                                                          zip(channels[2:6], (4, 8, 16, 32))]
    assert logits.shape == (1, 1, 33, 47) and torch.isfinite(logits).all()


def test_colliding_names_keep_torchvision_and_smp_prefix_asks_for_smp():
    assert isinstance(small("resnet18").encoder, ResNetEncoder)
    theirs = small("smp:resnet18").encoder
    assert type(theirs).__module__.startswith("segmentation_models_pytorch")
    assert small("smp:resnet18").config["encoder_name"] == "smp:resnet18"


def test_torchvision_encoder_has_smps_feature_list():
    """Code written for smp's encoders reads PAANet's torchvision ResNet the same way."""
    ours = small("resnet18").encoder.eval()
    theirs = smp.encoders.get_encoder("resnet18", weights=None).eval()
    assert list(ours.out_channels) == list(theirs.out_channels) == [3, 64, 64, 128, 256, 512]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours_features, their_features = ours(x), theirs(x)
    assert [f.shape for f in ours_features] == [f.shape for f in their_features]
    assert torch.equal(ours_features[0], x)


def test_encoder_without_the_four_scales_is_rejected_with_its_strides():
    with pytest.raises(ValueError, match=r"'tu-vit_tiny_patch16_224' gives feature maps at strides 16, 16, 16; "
                                         r"PAANet needs strides 4, 8, 16 and 32"):
        PAANet("tu-vit_tiny_patch16_224", encoder_weights=None)
    # an encoder following smp's list, with stride 4 missing (a 0-channel placeholder)
    with pytest.raises(ValueError, match=r"'x' gives feature maps at strides 8, 16, 32; PAANet needs"):
        check_scales("x", [3, 0, 0, 64, 160, 256])
    with pytest.raises(ValueError, match=r"'x' gives feature maps at strides 2, 4, 8; PAANet needs"):
        check_scales("x", [3, 16, 24, 40])


@pytest.mark.parametrize("name", ["resnet5", "smp:nope", "tu-nope", "efficientnet-b99"])
def test_unknown_names_are_rejected(name):
    with pytest.raises(ValueError, match=rf"encoder_name '{name}' is unknown"):
        PAANet(name, encoder_weights=None)


def test_cli_config_rejects_an_unknown_encoder_before_anything_runs(tmp_path):
    with pytest.raises(RunError, match=r"--encoder: encoder_name 'efficientnet-b99' is unknown"):
        TrainConfig(dataset="synthetic", out=str(tmp_path / "run"), encoder="efficientnet-b99")
    assert not (tmp_path / "run").exists()
    assert TrainConfig(dataset="synthetic", out=str(tmp_path / "run"), encoder="mit_b2").encoder == "mit_b2"


def test_without_smp_the_torchvision_path_works_and_smp_names_name_the_extra():
    script = textwrap.dedent("""
        import json, sys
        import paanet_fast
        from paanet_fast import PAANet
        PAANet("resnet18", encoder_weights=None)
        imported = [m for m in ("segmentation_models_pytorch", "timm") if m in sys.modules]
        sys.modules["segmentation_models_pytorch"] = None  # now importing it fails, as if not installed
        errors = {}
        for name in ("efficientnet-b0", "smp:resnet50", "resnet5"):
            try:
                PAANet(name, encoder_weights=None)
            except ImportError as exc:
                errors[name] = str(exc)
        print(json.dumps({"imported": imported, "errors": errors}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["imported"] == []
    assert sorted(report["errors"]) == ["efficientnet-b0", "resnet5", "smp:resnet50"]
    for name, message in report["errors"].items():
        assert 'pip install "paanet_fast[encoders]"' in message and repr(name) in message


def test_smp_imagenet_weights_load_through_smp_from_the_hub_cache(hub_cache):
    settings = smp.encoders.encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    state = random_state(smp.encoders.get_encoder("mobilenet_v2", weights=None), seed=1)
    put_in_hub_cache(hub_cache, settings["repo_id"], settings["revision"],
                     {"config.json": b"{}", "model.safetensors": safetensors.torch.save(state)})
    net = PAANet("mobilenet_v2", encoder_weights="imagenet")
    loaded = net.encoder.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # smp adapts the first convolution of pretrained weights to other channel counts
    gray = PAANet("mobilenet_v2", encoder_weights="imagenet", in_channels=1)
    first = "features.0.0.weight"
    torch.testing.assert_close(gray.encoder.state_dict()[first], state[first].sum(1, keepdim=True))


def test_timm_pretrained_weights_load_for_a_tu_encoder_from_the_hub_cache(hub_cache):
    model_name = "resnet18"
    state = random_state(timm.create_model(model_name, pretrained=False), seed=2)
    put_in_hub_cache(hub_cache, timm.models.get_pretrained_cfg(model_name).hf_hub_id, None,
                     {"model.safetensors": safetensors.torch.save(state)})
    net = PAANet(f"tu-{model_name}", encoder_weights="imagenet")
    loaded = net.encoder.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.running_var"):
        assert torch.equal(loaded[f"model.{key}"], state[key]), key


def test_offline_without_cached_weights_says_where_they_come_from(hub_cache):
    with pytest.raises(RuntimeError, match="encoder_weights=None") as info:
        PAANet("mobilenet_v2", encoder_weights="imagenet")
    message = str(info.value)
    assert "smp-hub/mobilenet_v2.imagenet" in message and str(hub_cache) in message
    with pytest.raises(RuntimeError, match="timm downloads them from the Hugging Face hub repository "
                                           "timm/convnext_atto.d2_in1k"):
        PAANet("tu-convnext_atto.d2_in1k", encoder_weights="imagenet")


def test_unknown_weights_names_list_the_encoders_weights(no_downloads, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'ssl' is neither a weights name of efficientnet-b0 "
                                                r"\(imagenet, advprop\) nor an existing file"):
        PAANet("efficientnet-b0", encoder_weights="ssl")
    with pytest.raises(FileNotFoundError, match=r"'advprop' is neither a weights name of resnet50 \(imagenet\)"):
        PAANet("resnet50", encoder_weights="advprop")
    with pytest.raises(TypeError, match="encoder_weights must be a weights name"):
        PAANet("mobilenet_v2", encoder_weights=True)


def test_smp_encoder_weights_from_a_state_dict_file(no_downloads, tmp_path):
    """A file saved from an smp model's encoder (here smp's own get_encoder) loads as it is."""
    state = random_state(smp.encoders.get_encoder("mit_b0", weights=None), seed=3)
    path = tmp_path / "mit_b0.pt"
    torch.save(state, path)
    loaded = PAANet("mit_b0", encoder_weights=path).encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items()) and loaded.keys() == state.keys()
    with pytest.raises(RuntimeError, match="mit_b0.pt do not fit efficientnet-b0"):
        PAANet("efficientnet-b0", encoder_weights=str(path))
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        PAANet("mit_b0", encoder_weights=tmp_path / "nothere.pt")
