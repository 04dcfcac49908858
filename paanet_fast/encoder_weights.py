"""Encoder weights given as `encoder_weights`: a weights name, a local state-dict file, or None."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

EncoderWeights = str | os.PathLike | None


def weights_file(weights: EncoderWeights, names: tuple[str, ...], encoder_name: str) -> Path | None:
    """The state-dict file `weights` names, or None when it is None or one of the weights `names`.

    Raises FileNotFoundError (naming the path) when `weights` is neither a name nor an existing file.
    """
    if weights is None or (isinstance(weights, str) and weights in names):
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"encoder_weights must be a weights name, a path to a state-dict file or None, "
                        f"got {type(weights).__name__}")
    path = Path(weights)
    if not path.is_file():
        known = f" ({', '.join(names)})" if names else " (it has none)"
        raise FileNotFoundError(f"encoder_weights {str(weights)!r} is neither a weights name of {encoder_name}{known} "
                                f"nor an existing file: file {path} does not exist")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path` (a bare one, or one under a "state_dict" key), loaded with weights_only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files: name the file
        raise RuntimeError(f"could not read encoder weights from {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str, encoder_name: str) -> None:
    """Load `state` into `module` strictly; a misfit names `source` and the encoder.

    Called as smp calls it (no keyword arguments): smp's encoders override load_state_dict to
    drop their classifier's keys or rename old ones, some with a one-argument signature.
    """
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or misshapen keys
        raise RuntimeError(f"encoder weights from {source} do not fit {encoder_name}: {exc}") from exc
