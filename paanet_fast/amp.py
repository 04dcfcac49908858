"""Autocast's casting rule for the PAANet operators, shared by the front end (paanet_fast.ops) and
the compiled operators' Autocast kernels (paanet_fast._compiled).

Under autocast, PyTorch's own lower-precision ops cast every floating tensor except float64 to the
autocast dtype; float64 is left alone. The operators follow the same rule, so a float64 model
computes in float64 under autocast exactly as its convolutions do.
"""
from __future__ import annotations

from typing import Any

import torch


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts to on `device_type`, or None when autocast is off there."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def dtype_under_autocast(dtype: torch.dtype, device_type: str) -> torch.dtype:
    """The dtype a tensor of `dtype` on `device_type` is computed in by an autocast op right now."""
    target = autocast_dtype(device_type)
    if target is None or not dtype.is_floating_point or dtype == torch.float64:
        return dtype
    return target


def cast_for_autocast(value: Any, device_type: str, dtype: torch.dtype, *, keep_float32: bool = False) -> Any:
    """`value` (a tensor, or a list or tuple of them, nested) with autocast's cast to `dtype` applied;
    with `keep_float32`, float32 tensors stay as they are (the mini-decoder's parameters: its kernels
    read float32 weights beside half-precision features, which saves a cast and its gradient's cast back)."""
    if isinstance(value, torch.Tensor):
        eligible = value.is_floating_point() and value.dtype != torch.float64 and value.device.type == device_type
        kept = keep_float32 and value.dtype == torch.float32
        return value.to(dtype) if eligible and not kept else value
    if isinstance(value, (list, tuple)):
        return type(value)(cast_for_autocast(v, device_type, dtype, keep_float32=keep_float32) for v in value)
    return value
