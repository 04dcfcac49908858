"""Encoder weights: torchvision's ImageNet cache path, local state-dict files, offline errors."""
import os
import urllib.error

import pytest
import torch
import torchvision

from paanet_fast import PAANet
from paanet_fast.resnet_encoder import imagenet_weights_url


def _random_resnet18_state(seed: int) -> dict:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_imagenet_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    state = _random_resnet18_state(3)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / os.path.basename(imagenet_weights_url("resnet18")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    net = PAANet("resnet18", encoder_weights="imagenet")
    assert torch.equal(net.encoder.stem[0].weight, state["conv1.weight"])
    assert torch.equal(net.encoder.layers[3][1].conv2.weight, state["layer4.1.conv2.weight"])


def test_imagenet_weights_offline_without_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="encoder_weights=None") as info:
        PAANet("resnet18", encoder_weights="imagenet")
    assert os.path.basename(imagenet_weights_url("resnet18")) in str(info.value)


def test_weights_from_a_state_dict_file_and_other_in_channels(tmp_path):
    state = _random_resnet18_state(4)
    path = tmp_path / "r18.pt"
    torch.save(state, path)
    net = PAANet("resnet18", encoder_weights=str(path))
    assert torch.equal(net.encoder.stem[0].weight, state["conv1.weight"])
    gray = PAANet("resnet18", encoder_weights=path, in_channels=1)
    assert torch.allclose(gray.encoder.stem[0].weight, state["conv1.weight"].sum(1, keepdim=True))
    five = PAANet("resnet18", encoder_weights=path, in_channels=5)
    expected = state["conv1.weight"][:, [0, 1, 2, 0, 1]] * 3 / 5
    assert torch.allclose(five.encoder.stem[0].weight, expected)


def test_missing_corrupt_and_mismatched_weight_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        PAANet("resnet18", encoder_weights=tmp_path / "nothere.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt.pt"):
        PAANet("resnet18", encoder_weights=corrupt)
    wrong = tmp_path / "r18.pt"
    torch.save(_random_resnet18_state(5), wrong)
    with pytest.raises(RuntimeError, match="r18.pt do not fit resnet50"):
        PAANet("resnet50", encoder_weights=wrong)
