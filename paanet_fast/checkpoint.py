"""Checkpoint files: atomic saving, safe loading (weights_only) and rebuilding the model.

A checkpoint holds only tensors and plain containers of numbers and strings, so that
torch.load(weights_only=True) can read it. Two kinds, both readable by everything that takes
--checkpoint (evaluate, predict, export, model_from_checkpoint, PAANet.from_pretrained):
- best.pt, for inference and fine-tuning (MODEL_KEYS): the model's weights and constructor config,
  the run's config and split, the epoch and its validation scores;
- last.pt, for resuming: that and TRAINING_KEYS, the optimizer and GradScaler states, the per-epoch
  history, the best validation DSC so far and the RNG states.
A save_pretrained folder (paanet_fast.pretrained) is read into the same dict: the weights and the
model's config, and the run's entries when it was exported from a run.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .model import PAANet
from .pretrained import CONFIG_FILE, TRAINING_FILE, WEIGHTS_FILE, is_pretrained_folder, read_pretrained


# val_scores: every validation score of the checkpoint's epoch (val_dsc, val_miou, ...); older runs lack it.
MODEL_KEYS = ("model", "model_config", "config", "epoch", "split", "val_dsc", "val_scores")
TRAINING_KEYS = ("optimizer", "scaler", "history", "best_dsc", "rng")
_REQUIRED = ("model", "model_config", "config", "epoch")
WHAT_A_CHECKPOINT_IS = ("a paanet-fast checkpoint is the best.pt or last.pt that `paanet-fast train` writes into "
                        "its run folder (--out): a torch.save file of a dict with the model's weights and config; "
                        "or a folder that save_pretrained or `paanet-fast export --format pretrained` writes "
                        f"({CONFIG_FILE} and {WEIGHTS_FILE})")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes zip archives


class RunError(ValueError):
    """A problem with a run folder, a checkpoint or the arguments that refer to them."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` to `path` atomically (a kill mid-write keeps the previous file)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by save_checkpoint, loaded on the CPU with weights_only=True; or a
    save_pretrained folder read into the same dict (without "config" and "epoch" unless it was
    exported from a run: see require_run)."""
    path = Path(path)
    if is_pretrained_folder(path):
        try:
            return read_pretrained(path)
        except (ValueError, OSError) as exc:
            raise RunError(str(exc)) from exc
    if path.is_dir():
        raise RunError(f"checkpoint {path} is a folder; {WHAT_A_CHECKPOINT_IS}: pass {path / 'best.pt'}, for example")
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe files: name the file and say what it is not
        raise RunError(f"{path} is not a paanet-fast checkpoint: {_why_unreadable(path, exc)}; "
                       f"{WHAT_A_CHECKPOINT_IS}") from exc
    if not isinstance(state, dict):
        raise RunError(f"{path} is not a paanet-fast checkpoint: it is a torch.save file of a "
                       f"{type(state).__name__}, not of a dict; {WHAT_A_CHECKPOINT_IS}")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise RunError(f"{path} is not a paanet-fast checkpoint: its dict lacks {missing}; {WHAT_A_CHECKPOINT_IS}")
    return state


def _why_unreadable(path: Path, exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"it cannot be read ({exc.strerror or exc})"
    with open(path, "rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if not head:
        return "the file is empty"
    if head != _ZIP_MAGIC:
        return "it is not a file written by torch.save (not a zip archive)"
    if isinstance(exc, pickle.UnpicklingError):
        return ("it holds Python objects other than tensors, numbers, strings and plain containers, which "
                "loading with weights_only=True refuses")
    return "it is a zip archive that torch.load cannot read: truncated, damaged, or not written by torch.save"


def model_from_checkpoint(state: dict[str, Any], backend: str = "auto") -> PAANet:
    """The checkpoint's PAANet with its weights (no download: encoder_weights=None), in eval mode.

    The backend is chosen anew (default "auto"): the one used in training may not exist here.
    """
    model = PAANet.from_config({**state["model_config"], "backend": backend})
    model.load_state_dict(state["model"])
    return model.eval()


def require_run(state: dict[str, Any], path: Path, needs: str) -> dict[str, Any]:
    """The run config of a loaded checkpoint, or a RunError for a saved model without one
    (a save_pretrained folder that was not exported from a run): `needs` says what for."""
    if "config" not in state:
        raise RunError(f"{path} holds a model without the run it was trained in ({TRAINING_FILE}, which "
                       f"`paanet-fast export --format pretrained` writes from a run's checkpoint): {needs}")
    return state["config"]
