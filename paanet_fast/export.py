"""Deployment: an ONNX file of a PAANet, and the dynamic shapes for torch.export.

ONNX has no PAANet operators, so the file holds their "portable" formulation (design section
2.1: channel sums as low-resolution matmuls, then resizes and shifts by matmuls; standard ONNX
ops, no full-resolution concatenation), exported from a copy of the model switched to that
backend: one formulation for PyTorch and ONNX, and the caller's model is left as it was.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from .atomic import atomic_path
from .model import PAANet

INPUT_NAME, OUTPUT_NAME = "image", "logits"
# torch.export specialises dimensions of size 1, and an input of height or width 32 or less makes the
# stride-32 feature map one pixel high or wide: dynamic sizes start above. (The ONNX file has no
# such guard and runs smaller inputs too.)
MIN_DYNAMIC_SIZE = 33
# For the same reason the example's batch must be 2 or more; the program then runs batch 1 too.
MIN_EXAMPLE_BATCH = 2
# torch's CUDA kernels under the model guard the batch at 65535 (a grid dimension's limit), so a trace
# on a GPU fails for a larger range (seen on an H200 with torch 2.11); a program exported on the CPU
# may run on a GPU, so the range is the same for both.
MAX_DYNAMIC_BATCH = 65535
# Metadata keys of the ONNX file (its metadata_props).
META_MODEL_CONFIG = "paanet_fast.model_config"
META_IMAGE_SIZE = "paanet_fast.image_size"
META_PREPROCESSING = "paanet_fast.preprocessing"
EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def require_export_packages(what: str, packages: tuple[str, ...] = EXPORT_PACKAGES) -> None:
    """Raise ModuleNotFoundError naming the `export` extra when one of `packages` is not installed."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"{what} needs {', '.join(missing)} (not installed): install the export extra, "
                                  "pip install \"paanet_fast[export]\"", name=missing[0])


def dynamic_image_shapes(example: torch.Tensor | None = None) -> dict[str, dict[int, Any]]:
    """`dynamic_shapes` for torch.export.export(model, (x,)) of a PAANet: batch, height and width.

    Height and width range from MIN_DYNAMIC_SIZE (33) up; the batch from 1 to 65535. torch.export fixes
    a dimension whose size in the example is 1, so the example x (B, C, H, W) must have B >= 2
    (for one image, x.repeat(2, 1, 1, 1)) and H, W >= 33; given `example`, that is checked here
    with an error that says so (torch.export's own error does not).
    """
    from torch.export import Dim

    if example is not None:
        shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
        if (not isinstance(example, torch.Tensor) or example.dim() != 4 or example.shape[0] < MIN_EXAMPLE_BATCH
                or min(example.shape[-2:]) < MIN_DYNAMIC_SIZE):
            raise ValueError(f"dynamic_image_shapes: the example input must be (B, C, H, W) with B >= "
                             f"{MIN_EXAMPLE_BATCH} and H, W >= {MIN_DYNAMIC_SIZE}, got {shape}: torch.export fixes a "
                             "dimension whose size in the example is 1 (for one image pass x.repeat(2, 1, 1, 1)); "
                             "the exported program runs batch 1 too")

    return {"x": {0: Dim("batch", min=1, max=MAX_DYNAMIC_BATCH), 2: Dim("height", min=MIN_DYNAMIC_SIZE),
                  3: Dim("width", min=MIN_DYNAMIC_SIZE)}}


@contextlib.contextmanager
def _quiet_onnx_constant_folding() -> Iterator[None]:
    # The ONNX optimizer logs a warning for every split of a constant it does not fold (the GAM
    # convolutions' weights split by scale): harmless, and lines of noise.
    logger = logging.getLogger("onnxscript.optimizer._constant_folding")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _preprocessing() -> str:
    from .data.dataset import IMAGENET_MEAN, IMAGENET_STD  # the normalisation image_to_tensor applies

    return (f"RGB, scaled to [0, 1], normalised with the ImageNet mean {IMAGENET_MEAN} and std {IMAGENET_STD}; "
            "NCHW; output: logits, sigmoid for probabilities")


def _check_example(example: torch.Tensor, model: PAANet, dynamic: bool) -> None:
    channels = model.config["in_channels"]
    if not isinstance(example, torch.Tensor) or example.dim() != 4 or example.shape[1] != channels:
        shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
        raise ValueError(f"export_onnx: `example` must be a tensor of shape (B, {channels}, H, W), got {shape}")
    if dynamic and min(example.shape[-2:]) < MIN_DYNAMIC_SIZE:
        raise ValueError(f"export_onnx: with dynamic=True the `example`'s height and width must be at least "
                         f"{MIN_DYNAMIC_SIZE}, got {tuple(example.shape[-2:])} (the file still runs smaller inputs)")


def export_onnx(model: PAANet, path: str | os.PathLike, *, example: torch.Tensor | None = None,
                dynamic: bool = True, opset: int | None = None, image_size: int | None = None) -> Path:
    """Write `model` (in eval mode, its logits only) to the ONNX file `path`; returns the path.

    Args:
        model: a PAANet; it is not modified (a copy switched to the "portable" backend is exported).
        path: the .onnx file to write (atomically; the weights are inside it, no external data file).
        example: an input (B, in_channels, H, W) on the model's device and dtype to trace with;
            default random (2, in_channels, 64, 64).
        dynamic: batch, height and width dynamic (any size; see MIN_DYNAMIC_SIZE); False fixes the
            example's shape.
        opset: the ONNX opset to target; default torch's.
        image_size: the square size the model was trained at, recorded in the file's metadata so
            that `paanet-fast predict --onnx` resizes images to it.

    The file's input is "image" (B, in_channels, H, W), its output "logits" (B, classes, H, W);
    its metadata records the model's config and the input's preprocessing.
    Needs onnx and onnxscript (the `export` extra).
    """
    require_export_packages("export_onnx", ("onnx", "onnxscript"))
    if not isinstance(model, PAANet):
        raise TypeError(f"export_onnx: `model` must be a PAANet, got {type(model).__name__}")
    if opset is not None and (not isinstance(opset, int) or opset < 1):
        raise ValueError(f"export_onnx: `opset` must be a positive integer, got {opset!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"export_onnx: `image_size` must be a positive integer, got {image_size!r}")
    parameter = next(model.parameters())
    if example is None:
        example = torch.randn(2, model.config["in_channels"], 64, 64, device=parameter.device, dtype=parameter.dtype)
    _check_example(example, model, dynamic)

    deployed = copy.deepcopy(model).eval()
    deployed.backend = "portable"
    with _quiet_onnx_constant_folding():
        program = torch.onnx.export(deployed, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], opset_version=opset, optimize=True, verbose=False,
                                    dynamic_shapes=dynamic_image_shapes() if dynamic else None)
    metadata = {META_MODEL_CONFIG: json.dumps({**model.config, "backend": "auto"}),
                META_PREPROCESSING: _preprocessing()}
    if image_size is not None:
        metadata[META_IMAGE_SIZE] = str(image_size)
    program.model.metadata_props.update(metadata)
    path = Path(path)
    with atomic_path(path) as tmp:
        program.save(tmp, external_data=False)
    return path


def export_checkpoint(checkpoint: str | os.PathLike, path: str | os.PathLike, *, opset: int | None = None) -> Path:
    """export_onnx of a checkpoint's model, recording the image size it was trained at (when the
    checkpoint knows it); returns the path."""
    from .checkpoint import load_checkpoint, model_from_checkpoint

    require_export_packages("export", ("onnx", "onnxscript"))
    state = load_checkpoint(Path(checkpoint))
    return export_onnx(model_from_checkpoint(state), path, opset=opset,
                       image_size=state.get("config", {}).get("image_size"))


def export_pretrained(checkpoint: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """A run's checkpoint as a save_pretrained folder; returns the folder.

    The model card names the run's dataset and lists the checkpoint's epoch and validation scores;
    training.json keeps the run's settings, split and scores, so that evaluate and predict take
    the folder as they take the checkpoint.
    """
    from .checkpoint import MODEL_KEYS, load_checkpoint, model_from_checkpoint
    from .pretrained import save_pretrained

    state = load_checkpoint(Path(checkpoint))
    training = {key: state[key] for key in MODEL_KEYS if key in state and key not in ("model", "model_config")}
    scores = state.get("val_scores", {"val_dsc": state["val_dsc"]} if "val_dsc" in state else {})
    metrics = {"epoch": state["epoch"], **scores} if "epoch" in state else scores
    return save_pretrained(model_from_checkpoint(state), folder, dataset=state.get("config", {}).get("dataset"),
                           metrics=metrics or None, training=training or None)
