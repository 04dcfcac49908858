"""Checkpoint files: atomic saving, safe loading (weights_only) and rebuilding the model.

A checkpoint holds only tensors and plain containers of numbers and strings, so that
torch.load(weights_only=True) can read it: model and optimizer state dicts, the GradScaler
state, the epoch, the run's config, the model's constructor config, the split, the per-epoch
history, the best validation DSC and the RNG states.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .model import PAANet


class RunError(ValueError):
    """A problem with a run folder, a checkpoint or the arguments that refer to them."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` to `path` atomically (a kill mid-write keeps the previous file)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by save_checkpoint, loaded on the CPU with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe files: name the file
        raise RunError(f"cannot load checkpoint {path}: {exc}") from exc
    missing = {"model", "model_config", "config", "epoch"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise RunError(f"{path} is not a paanet-fast checkpoint (missing {sorted(missing)})")
    return state


def model_from_checkpoint(state: dict[str, Any], backend: str = "auto") -> PAANet:
    """The checkpoint's PAANet with its weights (no download: encoder_weights=None), in eval mode.

    The backend is chosen anew (default "auto"): the one used in training may not exist here.
    """
    model = PAANet.from_config({**state["model_config"], "backend": backend})
    model.load_state_dict(state["model"])
    return model.eval()
