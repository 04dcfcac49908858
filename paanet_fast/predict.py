"""Predicting masks for image files: a mask PNG and an overlay PNG per image, at the image's own size.

An image that cannot be read is reported and skipped; the others are still predicted.

The network is a checkpoint's PAANet or an ONNX file written by export_onnx (run by onnxruntime);
both get the same batches of resized images, and their logits are written the same way.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .atomic import atomic_path
from .checkpoint import RunError, load_checkpoint, model_from_checkpoint
from .data import DatasetError, image_to_tensor
from .data.common import IMAGE_SUFFIXES, read_rgb, visible_entries
from .runtime import autocast, pick_device
from .visualize import label_overlay, overlay

DEFAULT_BATCH_SIZE = 8
_MAX_LISTED_SKIPS = 10  # how many skipped names one message lists before it only counts the rest

# (B, in_channels, S, S) normalised float32 images -> (B, classes, S, S) float32 logits, on the CPU.
Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Predicted:
    """What predict wrote, and the image files it skipped because they could not be read."""

    masks: list[Path]
    unreadable: dict[Path, str]  # path -> why


@dataclass(frozen=True)
class ImageInputs:
    """The image files to predict, and the entries of the named folders that were left out."""

    files: list[Path]
    skipped: list[Path]


def collect_images(inputs: Sequence[str | Path]) -> ImageInputs:
    """Image files named directly or found (non-recursively) in named folders; names must be unique.

    In a folder, files without an image suffix and subfolders are skipped (and listed in `skipped`);
    hidden entries are ignored.
    """
    files: list[Path] = []
    skipped: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            entries = visible_entries(entry)
            found = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise DatasetError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {entry}")
            files += found
            skipped += [p for p in entries if p not in found]
        elif entry.is_file():
            files.append(entry)
        else:
            raise DatasetError(f"input {entry} does not exist")
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise DatasetError(f"inputs {by_stem[path.stem]} and {path} would both be written as {path.stem}.png")
        by_stem[path.stem] = path
    return ImageInputs(files, skipped)


def describe_skipped(skipped: Sequence[Path]) -> str:
    """One line naming the folder entries that were not predicted."""
    names = [f"{p}{'/' if p.is_dir() else ''}" for p in skipped]
    listed = ", ".join(names[:_MAX_LISTED_SKIPS])
    more = f" and {len(names) - _MAX_LISTED_SKIPS} more" if len(names) > _MAX_LISTED_SKIPS else ""
    entries = "entry that is not an image file" if len(names) == 1 else "entries that are not image files"
    return (f"skipped {len(names)} {entries} ({', '.join(IMAGE_SUFFIXES)}; folders are not searched): "
            f"{listed}{more}")


def describe_unreadable(unreadable: dict[Path, str]) -> str:
    """Lines naming the image files that could not be read, and why."""
    count = f"{len(unreadable)} image file{'s' if len(unreadable) > 1 else ''}"
    reasons = [f"  {why}" for why in list(unreadable.values())[:_MAX_LISTED_SKIPS]]
    if len(unreadable) > _MAX_LISTED_SKIPS:
        reasons.append(f"  and {len(unreadable) - _MAX_LISTED_SKIPS} more")
    return "\n".join([f"skipped {count} that could not be read (no mask written for them):", *reasons])


def checkpoint_network(checkpoint: str | Path, backend: str = "auto", device: str = "auto",
                       amp: str = "none") -> tuple[Network, int | None]:
    """The checkpoint's PAANet as a Network, and the image size it was trained at (None when a
    save_pretrained folder does not record it)."""
    state = load_checkpoint(Path(checkpoint))
    torch_device = pick_device(device)
    model = model_from_checkpoint(state, backend).to(torch_device)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(torch_device, amp):
            return model(images.to(torch_device)).float().cpu()

    return run, state.get("config", {}).get("image_size")


def onnx_network(path: str | Path, image_size: int | None = None) -> tuple[Network, int]:
    """An ONNX file written by export_onnx, run by onnxruntime on the CPU, and its image size.

    The image size is `image_size`, else the one the file records (export from a checkpoint does).
    """
    from .export import META_IMAGE_SIZE, require_export_packages

    require_export_packages("predict --onnx", ("onnxruntime",))
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise RunError(f"ONNX file {path} does not exist")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # a truncated or foreign file: name it
        raise RunError(f"cannot load ONNX file {path}: {exc}") from exc
    if image_size is None:
        recorded = session.get_modelmeta().custom_metadata_map.get(META_IMAGE_SIZE, "")
        if not recorded.isdigit():
            raise RunError(f"ONNX file {path} does not record the image size the model was trained at "
                           f"({META_IMAGE_SIZE}, written by `paanet-fast export`): pass --image-size")
        image_size = int(recorded)
    inputs = session.get_inputs()
    source = inputs[0]
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
    if len(inputs) != 1 or len(source.shape) != 4 or source.shape[1] != 3 or source.type not in dtypes:
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise RunError(f"ONNX file {path} does not take one (B, 3, H, W) floating-point image: its inputs are {found}")
    if any(isinstance(source.shape[d], int) for d in (0, 2, 3)):
        raise RunError(f"ONNX file {path} takes inputs of the fixed shape {source.shape}; predict needs dynamic "
                       "batch, height and width (export_onnx's default, and `paanet-fast export`'s)")

    def run(images: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {source.name: images.numpy().astype(dtypes[source.type])})
        return torch.from_numpy(logits).float()

    return run, image_size


def predicted_probabilities(network: Network, files: Sequence[Path], image_size: int, batch_size: int,
                            progress: Callable[[int], object] = lambda n: None,
                            unreadable: Callable[[Path, DatasetError], object] | None = None
                            ) -> Iterator[tuple[Path, np.ndarray, torch.Tensor]]:
    """(path, image (H, W, 3) uint8, probabilities) for every file, in order: (H, W) for a one-class
    network, (C, H, W) for C classes.

    Images are resized to image_size x image_size and run `batch_size` at a time; the logits are
    resized back (bilinear) to each image's size before the sigmoid. `progress`
    is told how many files each batch finished. A file that cannot be read raises DatasetError,
    or, given `unreadable`, is passed to it with the error and left out.
    """
    from .data.transforms import PairTransform  # albumentations: only imported where used

    resize = PairTransform(image_size, train=False)
    for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        paths, images = [], []
        for path in batch:
            try:
                images.append(read_rgb(path))
                paths.append(path)
            except DatasetError as exc:
                if unreadable is None:
                    raise
                unreadable(path, exc)
        if not paths:
            progress(len(batch))
            continue
        resized = [resize(image, np.zeros(image.shape[:2], dtype=bool), seed=0)[0] for image in images]
        logits = network(torch.stack([image_to_tensor(r) for r in resized]))
        for path, image, image_logits in zip(paths, images, logits):
            full = F.interpolate(image_logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)
            yield path, image, torch.sigmoid(full[0, 0] if full.shape[1] == 1 else full[0])
        progress(len(batch))


def label_mask(probabilities: torch.Tensor, threshold: float) -> np.ndarray:
    """(H, W) uint8 labels from (C, H, W) class probabilities: 1 + the most probable class where its
    probability exceeds `threshold`, else 0 (background). C is at most 255."""
    best, index = probabilities.max(dim=0)
    return torch.where(best > threshold, index + 1, 0).to(torch.uint8).numpy()


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def predict(checkpoint: str | Path | None, inputs: Sequence[str | Path], out: str | Path, *,
            onnx: str | Path | None = None, backend: str = "auto", device: str = "auto", amp: str = "none",
            threshold: float = 0.5, batch_size: int = DEFAULT_BATCH_SIZE, image_size: int | None = None
            ) -> Predicted:
    """Write out/masks/<name>.png (0 or 255; for a network of C > 1 classes, labels 0..C: see
    label_mask) and out/overlays/<name>.png for every input image.

    The network is the checkpoint's PAANet (on `device`, with `backend` and `amp`) or, given
    `onnx` instead, an ONNX file written by export_onnx (onnxruntime, CPU). Each image is resized
    to the training size (the checkpoint's, the ONNX file's record, or `image_size`), images go
    through the network `batch_size` at a time, and the logits are resized back (bilinear) to
    each image's size before thresholding sigmoid(logits) at `threshold`. An image file that cannot
    be read is named on stderr and skipped. Returns the mask paths and the unreadable files.
    """
    if (checkpoint is None) == (onnx is None):
        raise RunError("predict: give either a checkpoint or an ONNX file (--checkpoint or --onnx), not both")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RunError(f"predict: the batch size must be a positive integer, got {batch_size!r}")
    images = collect_images(inputs)
    if images.skipped:
        print(describe_skipped(images.skipped))
    if onnx is not None:
        network, size = onnx_network(onnx, image_size)
    else:
        network, size = checkpoint_network(checkpoint, backend, device, amp)
        size = image_size or size
        if size is None:
            raise RunError(f"{checkpoint} does not record the image size the model was trained at (a folder that "
                           "`paanet-fast export --format pretrained` writes from a run does): pass --image-size")
    out = Path(out)
    for folder in ("masks", "overlays"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm  # a command-line dependency: only imported where used

    written: list[Path] = []
    unreadable: dict[Path, str] = {}
    with tqdm(total=len(images.files), desc="predict", unit="image", disable=None, dynamic_ncols=True) as bar:
        for path, image, probabilities in predicted_probabilities(
                network, images.files, size, batch_size, bar.update,
                unreadable=lambda path, exc: unreadable.__setitem__(path, str(exc))):
            if probabilities.dim() == 2:
                mask = (probabilities > threshold).numpy()
                _save_png(mask.astype(np.uint8) * 255, out / "masks" / f"{path.stem}.png")
                _save_png(overlay(image, mask), out / "overlays" / f"{path.stem}.png")
            else:
                labels = label_mask(probabilities, threshold)
                _save_png(labels, out / "masks" / f"{path.stem}.png")
                _save_png(label_overlay(image, labels), out / "overlays" / f"{path.stem}.png")
            written.append(out / "masks" / f"{path.stem}.png")
    print(f"wrote {len(written)} mask{'' if len(written) == 1 else 's'} to {out / 'masks'} and "
          f"overlay{'' if len(written) == 1 else 's'} to {out / 'overlays'}")
    if unreadable:
        print(describe_unreadable(unreadable), file=sys.stderr)
    return Predicted(written, unreadable)
