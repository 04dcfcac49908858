"""Training: the run folder, the epoch loop, checkpoints and resume, single process or DDP.

Before every validation the batch-norm statistics are recomputed from training images with the
current weights ("precise BN", see recalibrate_batch_norm): running averages lag behind weights
that move fast, and with a small momentum (smp's efficientnet uses 0.01) a model trained from
scratch validated at DSC 0 for epochs while its training loss fell.

Exact resume: the data order comes from DistributedSampler(seed, epoch) and each sample's
augmentation from (seed, epoch, index) (see data.dataset.sample_seed), so the batches of an
epoch do not depend on what ran before; the model, optimizer, GradScaler and torch RNG states
are restored from last.pt, which is written (atomically) after every epoch.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import metrics
from .atomic import write_text
from .checkpoint import TRAINING_KEYS, RunError, load_checkpoint, save_checkpoint
from .data import FolderSource, SegmentationDataset, Source, default_split, open_source, read_split, write_split
from .data.splits import Split, check_split
from .data.transforms import PairTransform
from .encoder import check_encoder_name
from .evaluate import score_loader, summarize_classes
from .losses import PAANetLoss
from .model import PAANet
from .options import PAPER_DEFAULTS, SYNTHETIC_DEFAULTS
from .runtime import autocast, pick_device, resolved_backend
from .visualize import GAM_CAPTION, save_sample_panel, save_training_curves

PANEL_SAMPLES = 4
# Training images (the first of the split, without augmentation) whose batch statistics replace the
# running averages before each validation: enough for stable means and variances, and in a
# synthetic or paper-sized run a forward pass over them costs a few percent of an epoch.
CALIBRATION_IMAGES = 128
# Flags that may change when resuming a run; every other setting is the run's own.
RESUME_OVERRIDES = frozenset({"epochs", "workers", "data_root", "device", "backend"})


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as config.json and in every checkpoint)."""

    dataset: str
    out: str
    data_root: str | None = None
    epochs: int = 30
    batch_size: int = 8
    image_size: int = 256
    lr: float = 1e-4
    encoder: str = "resnet50"
    encoder_weights: str = "imagenet"  # "imagenet", "none" or a state-dict file
    backend: str = "auto"
    seed: int = 0
    amp: str = "none"
    workers: int = 2
    split_file: str | None = None
    num_images: int = 400  # synthetic dataset only
    device: str = "auto"
    classes: int = 1  # mask channels: the folder and synthetic datasets may have several
    images: str = "images"  # the folder dataset's folder names
    masks: str = "masks"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "image_size", "num_images", "classes"):
            if getattr(self, name) < 1:
                raise RunError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise RunError(f"--workers must be 0 or more, got {self.workers}")
        if not self.lr > 0:
            raise RunError(f"--lr must be positive, got {self.lr}")
        try:
            check_encoder_name(self.encoder)
        except (ValueError, ImportError) as exc:  # an unknown name, or smp's without the extra
            raise RunError(f"--encoder: {exc}") from exc


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device_name: str) -> "Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = pick_device(device_name, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if world_size > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank() if world_size > 1 else 0, world_size, device)

    def sum(self, *values: float) -> list[float]:
        """Element-wise sum of `values` over all processes."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


class RunLog:
    """Lines to stdout and to train.log in the run folder, from rank 0 only."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        tqdm.write(line, file=sys.stdout)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def default_workers() -> int:
    """Data-loading processes per training process: half the CPU cores of this process's share, at most 8."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, (os.cpu_count() or 1) // (2 * local_processes)))


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """The settings a run on `dataset` uses for the flags the user did not pass."""
    return dict(SYNTHETIC_DEFAULTS if dataset == "synthetic" else PAPER_DEFAULTS, workers=default_workers())


def _resumed_config(saved: dict[str, Any], given: dict[str, Any], last: Path) -> TrainConfig:
    """The saved config with the flags that may change on resume applied; other differing flags are errors."""
    config = dict(saved)
    for key, value in given.items():
        if key in RESUME_OVERRIDES:
            config[key] = value
        elif key in config and value != config[key]:
            raise RunError(f"--{key.replace('_', '-')} {value} differs from the run being resumed ({config[key]}, "
                           f"see {last}); a resumed run keeps its settings except {sorted(RESUME_OVERRIDES)}")
    return TrainConfig(**config)


def _choose_split(config: TrainConfig, source: Source, resume_state: dict | None) -> Split:
    if resume_state is not None:
        return check_split(resume_state["split"], source.ids(), "the split stored in last.pt")
    if config.split_file is not None:
        return read_split(Path(config.split_file), source.ids())
    return default_split(source, config.seed)


def _build_model(config: TrainConfig, resuming: bool) -> PAANet:
    weights = None if resuming or config.encoder_weights == "none" else config.encoder_weights
    torch.manual_seed(config.seed)
    try:
        return PAANet(encoder_name=config.encoder, encoder_weights=weights, backend=config.backend,
                      classes=config.classes)
    except (RuntimeError, ValueError, OSError) as exc:  # weights that cannot be loaded: say so plainly
        raise RunError(str(exc)) from exc


def _class_dsc(row: dict, class_names: list[str]) -> str:
    """' (name DSC, ...)' of each class for several classes; '' for one."""
    if len(class_names) == 1:
        return ""
    return " (" + ", ".join(f"{name} {row[f'val_dsc_{name}']:.4f}" for name in class_names) + ")"


def _metrics_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


@torch.no_grad()
def _save_panel(model: PAANet, dataset: SegmentationDataset, config: TrainConfig, device: torch.device,
                epoch: int, path: Path) -> None:
    """Image, ground truth, prediction and every GAM of the first validation samples."""
    from .data import tensor_to_image

    items = [dataset[i] for i in range(min(PANEL_SAMPLES, len(dataset)))]
    images = torch.stack([item["image"] for item in items]).to(device)
    masks = torch.stack([item["mask"] for item in items]).to(device)
    model.eval()
    with autocast(device, config.amp):
        output = model(images, return_aux=True)
    dsc = metrics.per_class_scores(output.logits.float(), masks)["dsc"].mean(1)
    layers = len(output.gam_logits) // len(model.decoder.blocks)
    gam_titles = [f"GAM b{b + 1}{' rev' if model.decoder.blocks[b].reverse else ''} L{c + 1}"
                  for b in range(len(model.decoder.blocks)) for c in range(layers)]
    gams = torch.sigmoid(torch.stack(output.gam_logits, dim=1).float())[:, :, 0].cpu().numpy()
    save_sample_panel(
        images=[tensor_to_image(item["image"]) for item in items],
        masks=[item["mask"].amax(0).numpy() > 0.5 for item in items],  # several classes: their union
        predictions=list((output.logits > 0).any(1).cpu().numpy()),
        gams=list(gams), gam_titles=gam_titles,
        row_titles=[f"{item['id']}\nDSC {d:.3f}" for item, d in zip(items, dsc.tolist())],
        path=path, title=f"{config.dataset}: validation samples after epoch {epoch}",
        caption=GAM_CAPTION if any(block.reverse for block in model.decoder.blocks) else None)


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: str) -> None:
    """Set every batch norm's running mean and variance to the exact average over `loader`'s batches.

    The statistics then describe the current weights, not a momentum-weighted history of earlier
    ones; training-mode forward passes (no gradients) compute them. Under torchrun every process
    must call this with as many batches (SyncBatchNorm averages across processes).
    """
    with autocast(device, amp):
        torch.optim.swa_utils.update_bn((batch["image"].to(device, non_blocking=True) for batch in loader), model)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _say_nothing_left(out: Path, state: dict, epochs: int) -> None:
    done = len(state["history"])
    RunLog(out / "train.log", int(os.environ.get("RANK", "0")) == 0)(
        f"nothing left to train: the run in {out} has finished epoch {done}, and --epochs is {epochs} (best val "
        f"DSC {state['best_dsc']:.4f}). To train longer, give the new total with --resume: "
        f"paanet-fast train --out {out} --resume --epochs N, with N above {done}")


def train(config: TrainConfig, resume: bool = False, given: dict[str, Any] | None = None) -> list[dict]:
    """Train as `config` says (or continue the run in config.out with `resume`); return the history.

    `given`: the flags the user passed explicitly, checked against the saved config on resume.
    Under torchrun every process calls this; only rank 0 writes files and prints.
    """
    out = Path(config.out)
    last_path = out / "last.pt"
    resume_state = None
    if resume:
        resume_state = load_checkpoint(last_path) if last_path.is_file() else None
        if resume_state is None:
            raise RunError(f"--resume: there is no {last_path} to resume from")
        missing = [key for key in TRAINING_KEYS if key not in resume_state]
        if missing:
            raise RunError(f"--resume: {last_path} lacks the training state {missing}: it holds weights only, like "
                           "a best.pt; only the last.pt that training writes can be resumed")
        config = _resumed_config(resume_state["config"], given or {}, last_path)
        if len(resume_state["history"]) >= config.epochs:
            _say_nothing_left(out, resume_state, config.epochs)
            return resume_state["history"]
    elif last_path.exists():
        raise RunError(f"{out} already holds a run ({last_path}); pass --resume to continue it or choose another --out")
    proc = Distributed.start(config.device)
    try:
        return _train(config, proc, resume_state)
    finally:
        proc.close()


@dataclass
class _Run:
    """The state of a training run that its epochs share."""

    config: TrainConfig
    proc: Distributed
    log: RunLog
    split: Split
    model: PAANet
    trained: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: PAANetLoss
    history: list[dict]
    best_dsc: float
    class_names: list[str]  # one per output channel

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    def train_epoch(self, epoch: int, loader: DataLoader) -> tuple[float, int]:
        """One pass over this process's shard; returns (summed loss * images, images) over all processes."""
        self.trained.train()
        loss_sum, seen, start = 0.0, 0, time.perf_counter()
        # Only on a terminal: redirected to a file, every update of the bar would be one more line in it
        # (a carriage return each), while the log's line per epoch says everything the file needs.
        bar = tqdm(loader, desc=f"epoch {epoch}/{self.config.epochs}", unit="batch",
                   disable=not (self.proc.is_main and sys.stderr.isatty()), dynamic_ncols=True, leave=False)
        for batch in bar:
            images = batch["image"].to(self.proc.device, non_blocking=True)
            masks = batch["mask"].to(self.proc.device, non_blocking=True)
            with autocast(self.proc.device, self.config.amp):
                loss = self.loss_fn(self.trained(images, return_aux=True), masks)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.item() * images.shape[0]
            seen += images.shape[0]
            rate = seen * self.proc.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.1f}")
        bar.close()
        loss_sum, seen = self.proc.sum(loss_sum, seen)
        return loss_sum, int(seen)

    def finish_epoch(self, epoch: int, loss_sum: float, seen: int, train_seconds: float,
                     val_set: SegmentationDataset, val_loader: DataLoader) -> dict:
        """Validate, then write the checkpoints, metrics.csv and the pictures (rank 0 only)."""
        scored = score_loader(self.model, val_loader, self.proc.device, self.config.amp, loss_fn=self.loss_fn)
        summary = metrics.summarize(scored.scores)
        per_class = summarize_classes(scored, self.class_names) if len(self.class_names) > 1 else {}
        row = {"epoch": epoch, "train_images": seen, "train_loss": loss_sum / seen, "val_loss": scored.loss,
               **{f"val_{key}": summary[key] for key in ("dsc", "miou", "recall", "precision")},
               **{f"val_dsc_{name}": scores["dsc"] for name, scores in per_class.items()},
               "lr": self.optimizer.param_groups[0]["lr"], "train_seconds": train_seconds,
               "train_images_per_second": seen / train_seconds}
        self.history.append(row)
        improved = row["val_dsc"] > self.best_dsc
        self.best_dsc = max(self.best_dsc, row["val_dsc"])
        weights = {"model": self.model.state_dict(), "model_config": dict(self.model.config),
                   "config": dataclasses.asdict(self.config), "epoch": epoch, "split": self.split,
                   "val_dsc": row["val_dsc"], "val_scores": {k: v for k, v in row.items() if k.startswith("val_")}}
        # best.pt first: a kill between the two writes then redoes this epoch and rewrites both.
        if improved:
            save_checkpoint(self.out / "best.pt", weights)
        save_checkpoint(self.out / "last.pt", {
            **weights, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "history": self.history, "best_dsc": self.best_dsc, "rng": _rng_state()})
        write_text(self.out / "metrics.csv", _metrics_csv(self.history))
        save_training_curves(self.history, self.out / "training_curves.png")
        _save_panel(self.model, val_set, self.config, self.proc.device, epoch, self.out / "validation_samples.png")
        return {**row, "improved": improved}


def _train(config: TrainConfig, proc: Distributed, resume_state: dict | None) -> list[dict]:
    # Everything that can refuse the run comes before the run folder is made: a refused run leaves none.
    out = Path(config.out)
    try:
        backend = resolved_backend(config.backend, proc.device)
    except (RuntimeError, ValueError) as exc:
        raise RunError(f"--backend {config.backend}: {exc}") from exc
    if config.batch_size % proc.world_size:
        raise RunError(f"--batch-size {config.batch_size} (the global batch) must be a multiple of the "
                       f"world size {proc.world_size}")
    source = open_source(config.dataset, config.data_root, image_size=config.image_size,
                         num_images=config.num_images, seed=config.seed, classes=config.classes,
                         images=config.images, masks=config.masks)
    split = _choose_split(config, source, resume_state)
    model = _build_model(config, resume_state is not None).to(proc.device)
    if proc.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "train.log", proc.is_main)
    split_sizes = ", ".join(f"{len(ids)} {name}" for name, ids in split.items())
    if isinstance(source, FolderSource):  # a folder of one's own: first say what was found and used
        log(f"{source.summary}; split: {split_sizes}")
    log(f"device: {proc.device} | backend: {backend}{' (auto)' if config.backend == 'auto' else ''} | "
        f"world size: {proc.world_size}")
    if proc.is_main:
        write_split(out / "split.json", split)
        write_text(out / "config.json", json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    log(f"{'resuming' if resume_state else 'training'} on {config.dataset} ({source.root}): {split_sizes}"
        + f" | {config.image_size}x{config.image_size}, batch {config.batch_size}, lr {config.lr}, "
          f"{config.encoder} ({config.encoder_weights}), amp {config.amp}")

    train_set = SegmentationDataset(source, split["train"], PairTransform(config.image_size, train=True), config.seed)
    val_set = SegmentationDataset(source, split["val"], PairTransform(config.image_size, train=False), config.seed)
    sampler = DistributedSampler(train_set, num_replicas=proc.world_size, rank=proc.rank, shuffle=True,
                                 seed=config.seed)
    pin = proc.device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=config.batch_size // proc.world_size, sampler=sampler,
                              num_workers=config.workers, pin_memory=pin)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=config.workers, pin_memory=pin)
    calibration_set = SegmentationDataset(source, split["train"][:CALIBRATION_IMAGES],
                                          PairTransform(config.image_size, train=False), config.seed)
    calibration_loader = DataLoader(
        calibration_set, batch_size=config.batch_size // proc.world_size, num_workers=config.workers, pin_memory=pin,
        sampler=DistributedSampler(calibration_set, num_replicas=proc.world_size, rank=proc.rank, shuffle=False))

    if proc.world_size > 1 and proc.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(proc.device.type, enabled=config.amp == "fp16")
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scaler.load_state_dict(resume_state["scaler"])
        _set_rng_state(resume_state["rng"])
    trained = model
    if proc.world_size > 1:
        # static_graph: some smp encoders keep modules their forward never reaches (efficientnet's
        # classifier convolution), and DDP must be told that the same parameters go unused each step.
        trained = DistributedDataParallel(model, device_ids=[proc.device] if proc.device.type == "cuda" else None,
                                          static_graph=True)
    run = _Run(config, proc, log, split, model, trained, optimizer, scaler, PAANetLoss(),
               history=list(resume_state["history"]) if resume_state else [],
               best_dsc=resume_state["best_dsc"] if resume_state else -1.0, class_names=list(source.class_names))

    for epoch in range(len(run.history) + 1, config.epochs + 1):
        start = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        loss_sum, seen = run.train_epoch(epoch, train_loader)
        train_seconds = time.perf_counter() - start
        recalibrate_batch_norm(model, calibration_loader, proc.device, config.amp)
        if not proc.is_main:
            run.history.append({"epoch": epoch})
            continue
        row = run.finish_epoch(epoch, loss_sum, seen, train_seconds, val_set, val_loader)
        log(f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"val DSC {row['val_dsc']:.4f}{_class_dsc(row, run.class_names)}, mIoU {row['val_miou']:.4f}, "
            f"{row['train_images_per_second']:.1f} img/s, {time.perf_counter() - start:.1f} s"
            + (" (best)" if row["improved"] else ""))
    log(f"done: best val DSC {run.best_dsc:.4f}; run folder {out}")
    return run.history
