"""Public front end of the two fused PAANet operators (design section 2).

Both functions validate their arguments, cast them to the autocast dtype when autocast is on, and
hand them to a backend (see paanet_fast.backends); the model computes every GAM and every
attention product through these two functions only.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import portable, reference
from .amp import autocast_dtype, cast_for_autocast, dtype_under_autocast
from .backends import Backend, available_backends, register, resolve

__all__ = ["mini_decoder", "gam_multiply", "available_backends"]

# Plain PyTorch: both run on any device.
register(Backend("reference", None, reference.mini_decoder, reference.gam_multiply))
register(Backend("portable", None, portable.mini_decoder, portable.gam_multiply))


def _check_features(features: Sequence[torch.Tensor], op: str) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor) or not isinstance(features, (list, tuple)):
        raise TypeError(f"{op}: `features` must be a list of tensors, got {type(features).__name__}")
    features = list(features)
    if not features:
        raise ValueError(f"{op}: `features` must be a non-empty list of tensors")
    first = features[0]
    for i, f in enumerate(features):
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"{op}: features[{i}] must be a tensor, got {type(f).__name__}")
        if f.dim() != 4:
            raise ValueError(f"{op}: features[{i}] must be 4-D (B, C, h, w), got shape {tuple(f.shape)}")
        if not f.is_floating_point():
            raise ValueError(f"{op}: features[{i}] must be floating point, got {f.dtype}")
        if f.dtype != first.dtype:
            raise ValueError(f"{op}: features[{i}] has dtype {f.dtype} but features[0] has {first.dtype}")
        if f.device != first.device:
            raise ValueError(f"{op}: features[{i}] is on {f.device} but features[0] is on {first.device}")
        if f.shape[0] != first.shape[0]:
            raise ValueError(f"{op}: features[{i}] has batch {f.shape[0]} but features[0] has batch {first.shape[0]}")
        if min(f.shape[1:]) == 0:
            raise ValueError(f"{op}: features[{i}] must have non-zero channels, height and width, "
                             f"got shape {tuple(f.shape)}")
    return features


def _check_like(t: torch.Tensor, arg: str, ref: torch.Tensor, op: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{arg}` must be a tensor, got {type(t).__name__}")
    # Under autocast the float32 parameters meet half-precision features: compare what each computes in.
    device_type = ref.device.type
    if dtype_under_autocast(t.dtype, device_type) != dtype_under_autocast(ref.dtype, device_type):
        raise ValueError(f"{op}: `{arg}` has dtype {t.dtype} but the features have {ref.dtype}"
                         + (" (autocast leaves float64 as it is)" if autocast_dtype(device_type) else ""))
    if t.device != ref.device:
        raise ValueError(f"{op}: `{arg}` is on {t.device} but the features are on {ref.device}")


def _autocast(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    device_type = tensors[0].device.type
    dtype = autocast_dtype(device_type)
    return tensors if dtype is None else cast_for_autocast(tensors, device_type, dtype)


def mini_decoder(features: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                 size: Sequence[int], *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The GAM of a PAAD layer: upsample every scale to `size`, concatenate, 3x3 conv, sigmoid.

    Args:
        features: n tensors F_v of shape (B, C_v, h_v, w_v), one floating dtype and device.
        weight: (1, sum C_v, 3, 3) convolution weight (channels in the order of `features`).
        bias: (1,) convolution bias.
        size: output (H, W).
        backend: "auto" (None), "reference", "portable", "cpp", "cuda" or "triton".

    Returns:
        (logits, gam): Z and G = sigmoid(Z), each (B, 1, H, W).
    """
    op = "mini_decoder"
    features = _check_features(features, op)
    _check_like(weight, "weight", features[0], op)
    _check_like(bias, "bias", features[0], op)
    channels = sum(f.shape[1] for f in features)
    if tuple(weight.shape) != (1, channels, 3, 3):
        raise ValueError(f"{op}: `weight` must have shape (1, {channels}, 3, 3) for features with {channels} "
                         f"channels in total, got {tuple(weight.shape)}")
    if tuple(bias.shape) != (1,):
        raise ValueError(f"{op}: `bias` must have shape (1,), got {tuple(bias.shape)}")
    if len(size) != 2 or not all(isinstance(s, (int, torch.SymInt)) and s > 0 for s in size):
        raise ValueError(f"{op}: `size` must be two positive integers (H, W), got {size!r}")
    *features, weight, bias = _autocast([*features, weight, bias])
    chosen = resolve(backend, features[0].device, features[0].dtype)
    return chosen.mini_decoder(features, weight, bias, (size[0], size[1]))


def gam_multiply(features: Sequence[torch.Tensor], gam: torch.Tensor, reverse: bool = False, *,
                 backend: str | None = None) -> list[torch.Tensor]:
    """Attention products P_v = F_v * a_v, a_v the GAM average-pooled to F_v's size (1 - a_v if reverse).

    Args:
        features: n tensors F_v of shape (B, C_v, h_v, w_v).
        gam: (B, 1, H, W) with H and W integer multiples of every h_v and w_v.
        reverse: use the reverse attention 1 - a_v.
        backend: "auto" (None), "reference", "portable", "cpp", "cuda" or "triton".

    Returns:
        n tensors shaped like `features`.
    """
    op = "gam_multiply"
    features = _check_features(features, op)
    _check_like(gam, "gam", features[0], op)
    if gam.dim() != 4 or gam.shape[1] != 1:
        raise ValueError(f"{op}: `gam` must have shape (B, 1, H, W), got {tuple(gam.shape)}")
    if gam.shape[0] != features[0].shape[0]:
        raise ValueError(f"{op}: `gam` has batch {gam.shape[0]} but the features have batch {features[0].shape[0]}")
    for i, f in enumerate(features):
        if gam.shape[2] % f.shape[2] != 0 or gam.shape[3] % f.shape[3] != 0:
            raise ValueError(f"{op}: the GAM size {tuple(gam.shape[2:])} must be an integer multiple of "
                             f"features[{i}]'s size {tuple(f.shape[2:])}")
    if not isinstance(reverse, bool):
        raise TypeError(f"{op}: `reverse` must be a bool, got {type(reverse).__name__}")
    *features, gam = _autocast([*features, gam])
    return resolve(backend, features[0].device, features[0].dtype).gam_multiply(features, gam, reverse)
