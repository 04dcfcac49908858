"""Argument checks of the operators, the Python twin of csrc/checks.cpp (same rules, same messages).

Shared by the front end (paanet_fast.ops), the compiled operators' fake kernels
(paanet_fast._compiled) and the Triton operators (paanet_fast.triton.library). A fake kernel must
reject what its real kernel rejects: otherwise torch.compile and torch.export trace a call that
fails only when it runs, and a direct call mixing meta and real tensors, which the dispatcher
hands to the fake kernel, returns uninitialised memory instead of an error.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .amp import autocast_dtype, dtype_under_autocast

# What the compiled and Triton kernels compute (half types accumulated in float32).
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_features(features: Sequence[torch.Tensor], op: str) -> list[torch.Tensor]:
    """A non-empty list of 4-D (B, C_v, h_v, w_v) tensors of one floating dtype, device and batch,
    none of them empty; returned as a list."""
    if isinstance(features, torch.Tensor) or not isinstance(features, (list, tuple)):
        raise TypeError(f"{op}: `features` must be a list of tensors, got {type(features).__name__}")
    features = list(features)
    if not features:
        raise ValueError(f"{op}: `features` must be a non-empty list of tensors")
    # One pass with each attribute read once: these checks run on every call of an eager step.
    dtype = device = batch = None
    for i, f in enumerate(features):
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"{op}: features[{i}] must be a tensor, got {type(f).__name__}")
        shape = f.shape
        if len(shape) != 4:
            raise ValueError(f"{op}: features[{i}] must be 4-D (B, C, h, w), got shape {tuple(shape)}")
        if f.dtype is not dtype:
            if not f.dtype.is_floating_point:
                raise ValueError(f"{op}: features[{i}] must be floating point, got {f.dtype}")
            if dtype is not None:
                raise ValueError(f"{op}: features[{i}] has dtype {f.dtype} but features[0] has {dtype}")
            dtype, device, batch = f.dtype, f.device, shape[0]
        elif f.device != device:
            raise ValueError(f"{op}: features[{i}] is on {f.device} but features[0] is on {device}")
        elif shape[0] != batch:
            raise ValueError(f"{op}: features[{i}] has batch {shape[0]} but features[0] has batch {batch}")
        # `or`, not min(): comparing sizes would guard on their order
        if shape[1] == 0 or shape[2] == 0 or shape[3] == 0:
            raise ValueError(f"{op}: features[{i}] must have non-zero channels, height and width, "
                             f"got shape {tuple(shape)}")
    return features


def check_like(t: torch.Tensor, arg: str, ref: torch.Tensor, op: str, *, under_autocast: bool = False,
               parameter: bool = False) -> None:
    """`t` is a tensor of `ref`'s dtype and device; with `under_autocast`, of the dtype that autocast
    will compute `ref` in (the front end casts afterwards). A `parameter` (the mini-decoder's weight or
    bias) may also be float32 beside float16 or bfloat16 features: float32 master parameters of a
    mixed-precision model, which the kernels read in float32, the precision they compute in, so that
    no cast is needed; their gradients come back in float32."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{arg}` must be a tensor, got {type(t).__name__}")
    if t.dtype is not ref.dtype:  # equal dtypes pass whatever autocast does: it maps a dtype to one dtype
        device_type = ref.device.type
        computed = dtype_under_autocast(ref.dtype, device_type) if under_autocast else ref.dtype
        own = dtype_under_autocast(t.dtype, device_type) if under_autocast else t.dtype
        if own != computed and not (parameter and t.dtype == torch.float32 and computed in HALF_DTYPES):
            raise ValueError(f"{op}: `{arg}` has dtype {t.dtype} but the features have {ref.dtype}"
                             + (" (autocast leaves float64 as it is)"
                                if under_autocast and autocast_dtype(device_type) else "")
                             + (" (parameters may be float32 beside float16 or bfloat16 features)" if parameter else ""))
    if t.device != ref.device:
        raise ValueError(f"{op}: `{arg}` is on {t.device} but the features are on {ref.device}")


def check_kernel_dtype(features: list[torch.Tensor], op: str) -> None:
    """The features' dtype is one the kernels compute."""
    dtype = features[0].dtype
    if dtype not in KERNEL_DTYPES:
        raise ValueError(f"{op}: `features` has dtype {dtype}, which this kernel does not support "
                         "(float16, bfloat16, float32, float64)")


def _check_weight(features: list[torch.Tensor], weight: torch.Tensor, op: str) -> None:
    channels = sum(f.shape[1] for f in features)
    if weight.shape != (1, channels, 3, 3):
        raise ValueError(f"{op}: `weight` must have shape (1, {channels}, 3, 3) for features with {channels} "
                         f"channels in total, got {tuple(weight.shape)}")


def _check_gam_extent(gam: torch.Tensor, op: str) -> None:
    # 0 is a multiple of every size, so an empty GAM would pass the window check and pool nothing.
    if gam.shape[2] == 0 or gam.shape[3] == 0:
        raise ValueError(f"{op}: `gam` must have non-zero height and width, got shape {tuple(gam.shape)}")


def check_mini_decoder_args(features: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                            size: Sequence[int], op: str, *, under_autocast: bool = False) -> list[torch.Tensor]:
    """Arguments of mini_decoder (shapes in its docstring); returns the features as a list."""
    features = check_features(features, op)
    check_like(weight, "weight", features[0], op, under_autocast=under_autocast, parameter=True)
    check_like(bias, "bias", features[0], op, under_autocast=under_autocast, parameter=True)
    _check_weight(features, weight, op)
    if bias.shape != (1,):
        raise ValueError(f"{op}: `bias` must have shape (1,), got {tuple(bias.shape)}")
    if len(size) != 2 or not all(isinstance(s, (int, torch.SymInt)) and s > 0 for s in size):
        raise ValueError(f"{op}: `size` must be two positive integers (H, W), got {size!r}")
    return features


def check_gam_multiply_args(features: Sequence[torch.Tensor], gam: torch.Tensor, reverse: bool, op: str, *,
                            under_autocast: bool = False) -> list[torch.Tensor]:
    """Arguments of gam_multiply (shapes in its docstring); returns the features as a list."""
    features = check_features(features, op)
    check_like(gam, "gam", features[0], op, under_autocast=under_autocast)
    shape = gam.shape
    if len(shape) != 4 or shape[1] != 1:
        raise ValueError(f"{op}: `gam` must have shape (B, 1, H, W), got {tuple(shape)}")
    _check_gam_extent(gam, op)
    if shape[0] != features[0].shape[0]:
        raise ValueError(f"{op}: `gam` has batch {shape[0]} but the features have batch {features[0].shape[0]}")
    H, W = shape[2], shape[3]
    for i, f in enumerate(features):
        if H % f.shape[2] != 0 or W % f.shape[3] != 0:
            raise ValueError(f"{op}: the GAM size {(H, W)} must be an integer multiple of "
                             f"features[{i}]'s size {tuple(f.shape[2:])}")
    if not isinstance(reverse, bool):
        raise TypeError(f"{op}: `reverse` must be a bool, got {type(reverse).__name__}")
    return features


def check_mini_decoder_backward_args(grad_logits: torch.Tensor, grad_gam: torch.Tensor, gam: torch.Tensor,
                                     features: Sequence[torch.Tensor], weight: torch.Tensor, op: str) -> None:
    """The forward's checks on features and weight; grad_logits, grad_gam and gam all (B, 1, H, W),
    of the features' batch, dtype and device."""
    features = check_features(features, op)
    _check_weight(features, weight, op)
    check_like(weight, "weight", features[0], op, parameter=True)
    if gam.dim() != 4:
        raise ValueError(f"{op}: `gam` must have shape (B, 1, H, W), got {tuple(gam.shape)}")
    _check_gam_extent(gam, op)
    expected = (features[0].shape[0], 1, gam.shape[2], gam.shape[3])
    for arg, t in (("gam", gam), ("grad_logits", grad_logits), ("grad_gam", grad_gam)):
        if tuple(t.shape) != expected:
            raise ValueError(f"{op}: `{arg}` must have shape {expected}, got {tuple(t.shape)}")
        check_like(t, arg, features[0], op)


def check_gam_multiply_backward_args(grad_outputs: Sequence[torch.Tensor], features: Sequence[torch.Tensor],
                                     gam: torch.Tensor, reverse: bool, op: str) -> None:
    """The forward's checks, and one grad_outputs[i] shaped like features[i], of its dtype and device."""
    features = check_gam_multiply_args(features, gam, reverse, op)
    if len(grad_outputs) != len(features):
        raise ValueError(f"{op}: got {len(grad_outputs)} grad_outputs for {len(features)} features")
    for i, (g, f) in enumerate(zip(grad_outputs, features)):
        if g.shape != f.shape:
            raise ValueError(f"{op}: grad_outputs[{i}] must have the shape of features[{i}] {tuple(f.shape)}, "
                             f"got {tuple(g.shape)}")
        check_like(g, "grad_outputs", features[0], op)
