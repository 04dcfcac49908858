"""Sharing a model as smp does: save_pretrained writes config.json, model.safetensors and a model card (no
pickle); PAANet.from_pretrained loads it in a fresh offline process with the same logits on every backend,
takes a Hub id through huggingface_hub and a run's best.pt; errors name what is wrong."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from deploy_cases import small_model, write_checkpoint
from fake_datasets import single_thread  # noqa: F401 (fixture)
from paanet_fast import PAANet, PAANetLoss, available_backends
from paanet_fast.checkpoint import RunError
from paanet_fast.data import image_to_tensor
from paanet_fast.data.synthetic import generate_sample

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parent.parent
# A resnet18 PAANet with both block kinds, small enough for the Triton interpreter.
CONFIG = dict(encoder_name="resnet18", num_blocks=2, num_layers=1, growth=8)
PICKLE_PROTOCOL = b"\x80"  # every pickle of protocol 2 or later starts with it, then the protocol number
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archives (whose data.pkl is a pickle)
HUB_REASON = 'needs huggingface_hub (the "hub" or "encoders" extra; scripts/setup.sh installs it, so CI runs these)'


def _cpu_backends() -> list[str]:
    """The backends that run CPU tensors here: the compiled ones, and triton under its interpreter."""
    names = [n for n in available_backends() if n in ("reference", "portable", "cpp")]
    if os.environ.get("TRITON_INTERPRET") == "1" and "triton" in available_backends():
        names.append("triton")
    return names


def _synthetic_batch(count: int, size: int, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [generate_sample(0, first + i, size) for i in range(count)]
    images = torch.stack([image_to_tensor(image) for image, _ in samples])
    masks = torch.stack([torch.from_numpy(mask).float()[None] for _, mask in samples])
    return images, masks


@pytest.fixture(scope="module")
def trained() -> PAANet:
    """A resnet18 PAANet after a few Adam steps on synthetic images (batch norm statistics moved too)."""
    torch.manual_seed(0)
    model = PAANet(**CONFIG, encoder_weights=None, backend="cpp")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = PAANetLoss()
    model.train()
    for step in range(2):
        images, masks = _synthetic_batch(2, 48, first=2 * step)
        optimizer.zero_grad()
        loss_fn(model(images, return_aux=True), masks).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory) -> Path:
    return trained.save_pretrained(tmp_path_factory.mktemp("pretrained") / "paanet-demo", dataset="synthetic",
                                   metrics={"val_dsc": 0.8125, "epoch": 3})


def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: 8 bytes of little-endian length, then that much JSON."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert 8 + length <= len(data)
    return json.loads(data[8:8 + length])


def test_the_folder_holds_the_config_the_weights_as_safetensors_and_a_card_and_no_pickle(trained, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for path in saved.iterdir():
        head = path.read_bytes()[:4]
        assert not head.startswith(PICKLE_PROTOCOL) and head != ZIP_MAGIC, path.name
    config = json.loads((saved / "config.json").read_text())
    assert config == {"_model_class": "PAANet", **CONFIG, "encoder_weights": None, "in_channels": 3, "classes": 1,
                      "backend": "auto"}
    header = _safetensors_header(saved / "model.safetensors")
    state = trained.state_dict()
    assert header.pop("__metadata__") == {"format": "pt"}
    assert header.keys() == state.keys()
    assert all(header[k]["shape"] == list(v.shape) for k, v in state.items())
    tensors = load_file(saved / "model.safetensors")
    assert all(torch.equal(tensors[k], v) for k, v in state.items())
    card = (saved / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: paanet_fast\n")
    assert "## Dataset\n\nsynthetic\n" in card and "| val_dsc | 0.8125 |" in card and "| epoch | 3 |" in card
    assert 'PAANet.from_pretrained("<this folder or its Hub id>")' in card


def test_a_fresh_offline_process_loads_it_with_the_same_logits_on_every_backend(trained, saved, tmp_path):
    x = _synthetic_batch(2, 40, first=20)[0][..., :37].contiguous()  # odd sizes: padded inside, cropped back
    save_file({"x": x}, tmp_path / "x.safetensors")
    backends = _cpu_backends()
    script = textwrap.dedent("""
        import sys
        import torch
        from safetensors.torch import load_file, save_file
        from paanet_fast import PAANet

        torch.set_num_threads(1)
        folder, inputs, out, *backends = sys.argv[1:]
        x = load_file(inputs)["x"]
        logits = {}
        for backend in backends:
            model = PAANet.from_pretrained(folder, backend=backend)
            assert not model.training and model.backend == backend
            with torch.no_grad():
                logits[backend] = model(x)
        save_file(logits, out)
        print("huggingface_hub imported:", "huggingface_hub" in sys.modules)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", script, str(saved), str(tmp_path / "x.safetensors"),
                             str(tmp_path / "logits.safetensors"), *backends], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "huggingface_hub imported: False"  # a folder never needs the Hub
    loaded = load_file(tmp_path / "logits.safetensors")
    assert sorted(loaded) == sorted(backends)
    reference = None
    for backend in backends:
        trained.backend = backend
        with torch.no_grad():
            expected = trained(x)
        assert torch.equal(loaded[backend], expected), backend
        reference = expected if reference is None else reference
        torch.testing.assert_close(expected, reference, rtol=1e-5, atol=1e-5, msg=lambda m: f"{backend}: {m}")
    trained.backend = "cpp"


def test_a_hub_id_is_fetched_through_huggingface_hub_with_its_revision(trained, saved, monkeypatch, tmp_path):
    huggingface_hub = pytest.importorskip("huggingface_hub", reason=HUB_REASON)
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = PAANet.from_pretrained("someone/paanet-demo", revision="v1.0", cache_dir=tmp_path, backend="portable")
    assert [repo_id for repo_id, _ in calls] == ["someone/paanet-demo"]
    kwargs = calls[0][1]
    assert kwargs["revision"] == "v1.0" and kwargs["cache_dir"] == tmp_path
    assert {"config.json", "model.safetensors"} <= set(kwargs["allow_patterns"])
    assert not {"*.bin", "*.pt", "*.pth", "*.pkl"} & set(kwargs["allow_patterns"])  # pickles are never fetched
    assert model.backend == "portable"
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_hub_failure_and_a_missing_path_are_named(monkeypatch, tmp_path):
    huggingface_hub = pytest.importorskip("huggingface_hub", reason=HUB_REASON)

    def offline(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline mode is on and the cache has no copy")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(OSError, match="someone/nothing is not a local folder or file, and fetching it as a Hub model "
                                      "id at revision main failed: LocalEntryNotFoundError: offline mode"):
        PAANet.from_pretrained("someone/nothing", revision="main")
    pickles_only = tmp_path / "snapshot"
    pickles_only.mkdir()
    (pickles_only / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(pickles_only))
    with pytest.raises(FileNotFoundError, match="the Hub repository someone/old has no model.safetensors; PAANet "
                                                "weights are read from safetensors files only, never from pickles"):
        PAANet.from_pretrained("someone/old")
    missing = tmp_path / "runs" / "x" / "best.pt"
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        PAANet.from_pretrained(missing)


def test_a_runs_best_pt_loads_too_on_the_device_asked_for(tmp_path):
    model = small_model()
    checkpoint = write_checkpoint(tmp_path / "best.pt", model)
    loaded = PAANet.from_pretrained(checkpoint, backend="reference", map_location=torch.device("meta"))
    assert loaded.backend == "reference" and not loaded.training
    assert {p.device.type for p in loaded.parameters()} == {"meta"}
    loaded = PAANet.from_pretrained(str(checkpoint), backend="cpp")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="`revision` applies to a Hub model id"):
        PAANet.from_pretrained(checkpoint, revision="v1")


def test_saving_again_replaces_the_files_and_drops_another_runs_training_json(saved, tmp_path):
    folder = tmp_path / "again"
    folder.mkdir()
    (folder / "training.json").write_text("{}")
    model = small_model(seed=1)
    model.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "## Dataset\n\nNot given." in (folder / "README.md").read_text()
    reloaded = PAANet.from_pretrained(folder)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reloaded.state_dict().items())


@pytest.mark.parametrize("case, message", [
    ("no_config", "has no config.json"),
    ("smp_config", "describes a Unet, not a PAANet"),
    ("unknown_key", "config.json has unknown keys \\['decoder_channels'\\]"),
    ("not_safetensors", "model.safetensors is not a readable safetensors file"),
])
def test_a_folder_that_is_not_a_saved_paanet_is_named(saved, tmp_path, case, message):
    folder = tmp_path / case
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((saved / name).read_bytes())
    config = json.loads((saved / "config.json").read_text())
    if case == "no_config":
        (folder / "config.json").unlink()
    elif case == "smp_config":
        (folder / "config.json").write_text(json.dumps({**config, "_model_class": "Unet"}))
    elif case == "unknown_key":
        (folder / "config.json").write_text(json.dumps({**config, "decoder_channels": [256, 128]}))
    else:
        (folder / "model.safetensors").write_bytes(torch.zeros(3).numpy().tobytes())
    with pytest.raises((RunError, ValueError), match=message):
        PAANet.from_pretrained(folder)


@pytest.mark.parametrize("bad, message", [
    (dict(dataset=3), "`dataset` must be a string"),
    (dict(metrics=[0.8]), "`metrics` must be a mapping"),
    (dict(metrics={"dsc": np}), "`metrics` must hold JSON-serialisable values"),
])
def test_bad_card_arguments_are_named(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        small_model().save_pretrained(tmp_path / "x", **bad)
