"""The folder a PAANet is shared in, as segmentation_models_pytorch (smp) and the Hugging Face Hub share models.

- config.json: the constructor's arguments (encoder_weights null: the weights are in the folder, so
  rebuilding never downloads encoder weights; backend "auto": the backend is chosen where it loads),
  plus "_model_class" as smp writes it;
- model.safetensors: the state dict (safetensors, never a pickle);
- README.md: a model card naming the dataset and the metrics when given;
- training.json, only in a folder exported from a run (`paanet-fast export --format pretrained`):
  the run's settings, split, epoch and validation scores, what evaluate and predict read from a best.pt.

A folder is read here into the dict a checkpoint file holds (see checkpoint.load_checkpoint); a Hub
id is first fetched into a local folder through huggingface_hub, imported only then. safetensors is
imported only when a folder is written or read.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from . import __version__
from .atomic import atomic_path, write_text
from .model import PAANet, check_config_keys

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
TRAINING_FILE = "training.json"
FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, TRAINING_FILE)
MODEL_CLASS = "PAANet"
# A Hub model id: owner/name (letters, digits, "-", "_", "."), as the Hub spells its repositories.
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def is_pretrained_folder(path: Path) -> bool:
    """Whether `path` is a folder with a model.safetensors (a save_pretrained folder, perhaps incomplete)."""
    return path.is_dir() and (path / WEIGHTS_FILE).is_file()


def save_pretrained(model: PAANet, save_directory: str | os.PathLike, *, dataset: str | None = None,
                    metrics: Mapping[str, Any] | None = None, training: Mapping[str, Any] | None = None) -> Path:
    """Write `model` into the folder `save_directory` (created if needed; its files replaced); returns it.

    `dataset` and `metrics` (JSON-serialisable values) go into the model card; `training` (the
    non-weight entries of a run's checkpoint) into training.json, which is removed when not given
    so that a folder never pairs new weights with another run's settings.
    """
    from safetensors.torch import save

    if dataset is not None and not isinstance(dataset, str):
        raise ValueError(f"save_pretrained: `dataset` must be a string (the dataset's name), "
                         f"got {type(dataset).__name__}")
    if metrics is not None:
        if not isinstance(metrics, Mapping):
            raise ValueError(f"save_pretrained: `metrics` must be a mapping of names to values, "
                             f"got {type(metrics).__name__}")
        try:
            json.dumps(dict(metrics))
        except TypeError as exc:
            raise ValueError(f"save_pretrained: `metrics` must hold JSON-serialisable values: {exc}") from exc
    folder = Path(save_directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"save_pretrained: {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    config = model_config(model)
    # Contiguous CPU copies: safetensors stores plain buffers; parameters may live on a GPU.
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        # Serialised in memory and written as the other files are (safetensors' own file writer makes
        # files only their owner can read, not what a folder to share should hold).
        tmp.write_bytes(save(tensors, metadata={"format": "pt"}))
    write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    write_text(folder / CARD_FILE, model_card(config, dataset, metrics))
    if training is None:
        (folder / TRAINING_FILE).unlink(missing_ok=True)
    else:
        write_text(folder / TRAINING_FILE, json.dumps(dict(training), indent=1) + "\n")
    return folder


def model_config(model: PAANet) -> dict[str, Any]:
    """config.json's content: smp's "_model_class", then the constructor's arguments."""
    arguments = dict(model.config)
    return {"_model_class": MODEL_CLASS, "encoder_name": arguments.pop("encoder_name"), "encoder_weights": None,
            **arguments, "backend": "auto"}


def model_card(config: Mapping[str, Any], dataset: str | None, metrics: Mapping[str, Any] | None) -> str:
    """README.md of a saved folder: Hub metadata, how to load the model, its arguments, dataset, metrics."""
    arguments = {k: v for k, v in config.items() if not k.startswith("_")}
    classes = config["classes"]
    if metrics:
        rows = "\n".join(f"| {name} | {_format_value(value)} |" for name, value in metrics.items())
        metrics_text = f"| metric | value |\n|---|---|\n{rows}"
    else:
        metrics_text = "Not given."
    return f"""---
library_name: paanet_fast
tags:
- image-segmentation
- medical-imaging
- paanet
- pytorch
pipeline_tag: image-segmentation
---

# PAANet ({config['encoder_name']}, {classes} class{'' if classes == 1 else 'es'})

A PAANet (progressive alternating attention network, Srivastava et al., 2021) saved by paanet_fast
{__version__}: `config.json` holds its constructor's arguments, `model.safetensors` its weights.

## Load

```python
from paanet_fast import PAANet

model = PAANet.from_pretrained("<this folder or its Hub id>")  # backend="auto", map_location="cpu"
logits = model(images)  # images (B, {config['in_channels']}, H, W) -> logits (B, {classes}, H, W)
```

## Model init parameters

```json
{json.dumps(arguments, indent=2)}
```

## Dataset

{dataset if dataset else "Not given."}

## Metrics

{metrics_text}
"""


def _format_value(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def read_pretrained(folder: Path) -> dict[str, Any]:
    """A save_pretrained folder as the dict a checkpoint file holds: "model" (the state dict) and
    "model_config", and, when the folder has training.json, the run's entries (config, split, epoch, ...)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a saved PAANet: it has no {name} (save_pretrained writes "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    config = _read_json(folder / CONFIG_FILE)
    model_class = config.pop("_model_class", MODEL_CLASS)
    if model_class != MODEL_CLASS:
        raise ValueError(f"{folder / CONFIG_FILE} describes a {model_class}, not a PAANet (a folder of another "
                         "library, such as segmentation_models_pytorch, which loads it with its own from_pretrained)")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.pop("encoder_weights", None)  # the folder's weights replace any
    check_config_keys(config, str(folder / CONFIG_FILE))
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {exc}") from exc
    state: dict[str, Any] = {"model": tensors, "model_config": config}
    if (folder / TRAINING_FILE).is_file():
        training = _read_json(folder / TRAINING_FILE)
        state.update({k: v for k, v in training.items() if k not in state})
    return state


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable JSON file: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, found a {type(value).__name__}")
    return value


def local_source(name_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None,
                 token: str | bool | None = None) -> Path:
    """The local file or folder `name_or_path` names: itself when it exists, else the Hub model id's
    files (config.json, model.safetensors, README.md, training.json) fetched into the Hugging Face cache.

    With HF_HUB_OFFLINE=1 a Hub id is served from the cache only. revision, cache_dir and token are
    huggingface_hub's (a branch, tag or commit; the cache folder; the access token) and apply to Hub ids.
    """
    path = Path(name_or_path)
    if path.exists():
        if revision is not None:
            raise ValueError(f"from_pretrained: `revision` applies to a Hub model id, but {path} is a local "
                             f"{'folder' if path.is_dir() else 'file'}")
        return path
    name = os.fspath(name_or_path)
    if not _HUB_ID.fullmatch(name):
        raise FileNotFoundError(f"from_pretrained: {name} does not exist (and is not a Hub model id, owner/name)")
    try:
        import huggingface_hub
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"from_pretrained: {name} is not a local folder or file, and loading a Hub model "
                                  "id needs huggingface_hub (not installed): pip install huggingface_hub",
                                  name="huggingface_hub") from exc
    try:
        folder = huggingface_hub.snapshot_download(
            name, revision=revision, cache_dir=cache_dir, token=token,
            allow_patterns=list(FILES))
    except Exception as exc:  # no such repo or revision, offline without a cached copy, no network, ...
        raise OSError(f"from_pretrained: {name} is not a local folder or file, and fetching it as a Hub model "
                      f"id{'' if revision is None else f' at revision {revision}'} failed: "
                      f"{type(exc).__name__}: {exc}") from exc
    if not (Path(folder) / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"from_pretrained: the Hub repository {name}"
                                f"{'' if revision is None else f' at revision {revision}'} has no {WEIGHTS_FILE}; "
                                "PAANet weights are read from safetensors files only, never from pickles "
                                "(pytorch_model.bin, *.pt)")
    return Path(folder)
