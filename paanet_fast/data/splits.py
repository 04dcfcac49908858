"""Train/validation/test splits: seeded random ones, carved ones, and split.json files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from ..atomic import write_text
from .common import DatasetError

SPLIT_NAMES = ("train", "val", "test")
Split = dict[str, list[str]]


def _shuffled(ids: Iterable[str], seed: int) -> list[str]:
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in order]


def _share(count: int, fraction: float) -> int:
    """round(count * fraction), but at least one item."""
    return max(1, round(count * fraction))


def random_split(ids: Iterable[str], seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """A seeded split of `ids` into train/val/test (80/10/10 by default); each list sorted."""
    shuffled = _shuffled(ids, seed)
    if len(shuffled) < 3:
        raise DatasetError(f"a train/val/test split needs at least 3 samples, got {len(shuffled)}")
    n_test = _share(len(shuffled), test_fraction)
    n_val = _share(len(shuffled), val_fraction)
    return {"train": sorted(shuffled[n_val + n_test:]), "val": sorted(shuffled[:n_val]),
            "test": sorted(shuffled[n_val:n_val + n_test])}


def carve_validation(train_ids: Iterable[str], test_ids: Iterable[str], seed: int, val_fraction: float = 0.1) -> Split:
    """An official train/test split with a seeded `val_fraction` of the train ids moved to val."""
    shuffled = _shuffled(train_ids, seed)
    if len(shuffled) < 2:
        raise DatasetError(f"carving a validation set needs at least 2 training samples, got {len(shuffled)}")
    n_val = _share(len(shuffled), val_fraction)
    return {"train": sorted(shuffled[n_val:]), "val": sorted(shuffled[:n_val]), "test": sorted(test_ids)}


def check_split(split: object, known_ids: Iterable[str], where: str) -> Split:
    """`split` as a Split if it names train/val/test lists of known, non-overlapping ids."""
    if not isinstance(split, dict) or set(split) != set(SPLIT_NAMES):
        keys = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise DatasetError(f"{where}: expected an object with exactly the keys {list(SPLIT_NAMES)}, got {keys}")
    known = set(known_ids)
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        ids = split[name]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DatasetError(f"{where}: '{name}' must be a list of id strings")
        if not ids and name != "test":
            raise DatasetError(f"{where}: '{name}' is empty")
        for sample_id in ids:
            if sample_id not in known:
                raise DatasetError(f"{where}: id {sample_id!r} in '{name}' is not in the dataset")
            if sample_id in seen:
                raise DatasetError(f"{where}: id {sample_id!r} is in both '{seen[sample_id]}' and '{name}'")
            seen[sample_id] = name
    return {name: list(split[name]) for name in SPLIT_NAMES}


def read_split(path: Path, known_ids: Iterable[str]) -> Split:
    """A split.json file, checked against the dataset's ids."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f"split file {path} does not exist") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from exc
    return check_split(data, known_ids, f"split file {path}")


def write_split(path: Path, split: Split) -> None:
    """Write `split` as JSON, atomically."""
    write_text(Path(path), json.dumps(split, indent=1) + "\n")
