"""Scoring a model on a dataset split: the paper's table, scores.json and per_image.csv."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import metrics
from .atomic import write_text
from .checkpoint import RunError, load_checkpoint, model_from_checkpoint, require_run
from .data import SPLIT_NAMES, FolderSource, SegmentationDataset, default_split, open_source, read_split
from .data.splits import check_split
from .runtime import ForwardTimer, autocast, pick_device, resolved_backend

TIMING_NOTE = ("model forward only (batched, synchronised, after one warm-up batch); "
               "excludes data loading, host-device copies and scoring")


@dataclass
class Scored:
    """Per-image scores of a loader's samples, in loader order."""

    ids: list[str]
    scores: dict[str, torch.Tensor]  # "dsc", "iou", "recall", "precision": (N,) float64, the mean over classes
    loss: float | None  # mean loss per image when a loss function was given
    class_scores: dict[str, torch.Tensor]  # the same per class: (N, C) float64


@torch.no_grad()
def score_loader(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, amp: str,
                 threshold: float = 0.5, loss_fn: Callable | None = None, timer: ForwardTimer | None = None) -> Scored:
    """Run `model` (in eval mode) over `loader` and score every image and class at `threshold`.

    With `loss_fn`, the forward pass returns the auxiliary outputs and the loss is averaged per
    image; with `timer`, every forward is timed (the first batch once more, untimed, before).
    """
    model.eval()
    ids: list[str] = []
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in metrics.SCORES}
    loss_sum = 0.0
    for step, batch in enumerate(loader):
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True)
        with autocast(device, amp):
            if timer is None:
                output = model(images, return_aux=loss_fn is not None)
            else:
                if step == 0:
                    model(images)
                with timer.time(images.shape[0]):
                    output = model(images)
        if loss_fn is not None:
            loss_sum += loss_fn(output, masks).item() * images.shape[0]
            output = output.logits
        for name, value in metrics.per_class_scores(output.float(), masks, threshold).items():
            parts[name].append(value.cpu())
        ids.extend(batch["id"])
    if not ids:
        raise RunError("nothing to score: the split is empty")
    loss = loss_sum / len(ids) if loss_fn is not None else None
    class_scores = {name: torch.cat(values) for name, values in parts.items()}
    return Scored(ids, {name: values.mean(1) for name, values in class_scores.items()}, loss, class_scores)


def _split_ids(state: dict, source, split: str, split_file: str | None, checkpoint: Path) -> list[str]:
    """The ids of `split`: from --split-file, else the checkpoint's own split when the dataset is
    the one it was trained on, else the dataset's default split with the run's seed."""
    if split_file is not None:
        chosen = read_split(Path(split_file), source.ids())
    elif source.name == state["config"]["dataset"] and "split" in state:
        chosen = check_split(state["split"], source.ids(), f"the split stored in {checkpoint}")
    else:
        chosen = default_split(source, state["config"]["seed"])
    return source.ids() if split == "all" else chosen[split]


_TABLE_ROWS = (("dsc", "DSC"), ("miou", "mIoU"), ("recall", "Recall"), ("precision", "Precision"))


def format_table(summary: dict[str, float], title: str, classes: dict[str, dict[str, float]] | None = None) -> str:
    """The paper's table: DSC, mIoU, recall, precision with mean and std over images.

    With `classes` (class name -> its summary), one "mean ± std" column per class, then the
    summary's column: the mean over classes.
    """
    if not classes:
        lines = [title, f"{'metric':<10} {'mean':>8} {'std':>8}"]
        for key, label in _TABLE_ROWS:
            lines.append(f"{label:<10} {summary[key]:>8.4f} {summary[key + '_std']:>8.4f}")
        return "\n".join(lines)
    columns = {**classes, "mean of classes": summary}
    width = max(15, *(len(name) for name in columns))
    lines = [title, f"{'metric':<10}" + "".join(f" {name:>{width}}" for name in columns)]
    for key, label in _TABLE_ROWS:
        cells = [f"{column[key]:.4f} ± {column[key + '_std']:.4f}" for column in columns.values()]
        lines.append(f"{label:<10}" + "".join(f" {cell:>{width}}" for cell in cells))
    return "\n".join(lines)


def summarize_classes(scored: Scored, class_names: list[str]) -> dict[str, dict[str, float]]:
    """class name -> the summary (metrics.summarize) of its column of the per-class scores."""
    return {name: metrics.summarize({key: values[:, c] for key, values in scored.class_scores.items()})
            for c, name in enumerate(class_names)}


def _per_image_csv(scored: Scored, class_names: list[str]) -> str:
    """id and the four scores per image; with several classes, then the four scores of each class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    per_class = [(name, c) for c, name in enumerate(class_names)] if len(class_names) > 1 else []
    writer.writerow(["id", *metrics.SCORES, *(f"{key}_{name}" for name, _ in per_class for key in metrics.SCORES)])
    for row, sample_id in enumerate(scored.ids):
        writer.writerow([sample_id, *(repr(scored.scores[name][row].item()) for name in metrics.SCORES),
                         *(repr(scored.class_scores[key][row, c].item())
                           for _, c in per_class for key in metrics.SCORES)])
    return buffer.getvalue()


def evaluate(checkpoint: str | Path, out: str | Path, dataset: str | None = None, data_root: str | None = None,
             split: str = "test", split_file: str | None = None, batch_size: int = 8, workers: int = 2,
             backend: str = "auto", amp: str = "none", device: str = "auto", threshold: float = 0.5,
             images: str | None = None, masks: str | None = None) -> dict:
    """Score a checkpoint on a dataset split; print the table; write scores.json and per_image.csv to `out`.

    Returns the scores.json content: dsc, miou, recall, precision, their *_std (for several classes:
    the mean over classes, and "classes": each class's), images_per_second (see TIMING_NOTE) and a
    description of what was evaluated. `images`, `masks`: the folder dataset's folder names
    (default: the checkpoint's for its own dataset, else "images" and "masks").
    """
    if split not in (*SPLIT_NAMES, "all"):
        raise RunError(f"--split must be one of {SPLIT_NAMES + ('all',)}, got {split!r}")
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    config = require_run(state, checkpoint, "evaluate needs its dataset, split and image size")
    dataset = dataset or config["dataset"]
    own = config if dataset == config["dataset"] else {}
    source = open_source(dataset, data_root if data_root is not None else config.get("data_root"),
                         image_size=config["image_size"], num_images=config["num_images"], seed=config["seed"],
                         classes=state["model_config"]["classes"], images=images or own.get("images", "images"),
                         masks=masks or own.get("masks", "masks"))
    if isinstance(source, FolderSource):
        print(source.summary)
    ids = _split_ids(state, source, split, split_file, checkpoint)
    if not ids:
        raise RunError(f"the {split} split of {dataset} is empty")
    from .data.transforms import PairTransform  # albumentations: only imported where used

    loader = torch.utils.data.DataLoader(
        SegmentationDataset(source, ids, PairTransform(config["image_size"], train=False)),
        batch_size=batch_size, num_workers=workers)
    torch_device = pick_device(device)
    model = model_from_checkpoint(state, backend).to(torch_device)
    timer = ForwardTimer(torch_device)
    scored = score_loader(model, loader, torch_device, amp, threshold, timer=timer)
    summary = metrics.summarize(scored.scores)
    classes = summarize_classes(scored, source.class_names) if source.classes > 1 else None
    result = {**summary, **({"classes": classes} if classes else {}),
              "images_per_second": timer.images_per_second, "images_per_second_measures": TIMING_NOTE,
              "num_images": len(ids), "dataset": dataset, "split": split, "threshold": threshold,
              "image_size": config["image_size"], "checkpoint": str(checkpoint), "epoch": state["epoch"],
              "device": str(torch_device), "backend": resolved_backend(model.backend, torch_device), "amp": amp, "batch_size": batch_size}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "scores.json", json.dumps(result, indent=1) + "\n")
    write_text(out / "per_image.csv", _per_image_csv(scored, source.class_names))
    title = (f"PAANet ({config['encoder']}, epoch {state['epoch']}) on {dataset}, {split} split: "
             f"{len(ids)} images at {config['image_size']}x{config['image_size']}, threshold {threshold}")
    print(format_table(summary, title, classes))
    print(f"speed: {timer.images_per_second:.1f} images/s on {torch_device}, batch {batch_size}: {TIMING_NOTE}")
    print(f"wrote {out / 'scores.json'} and {out / 'per_image.csv'}")
    return result
