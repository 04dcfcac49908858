"""Host side of the Triton backend: allocation, the low-resolution matmuls, kernel launches.

Arguments arrive validated (paanet_fast.ops). Inputs of any layout are made contiguous; every
output is freshly allocated through `new_tensor` (tests poison it) and fully written by a kernel
or a torch op. Accumulation is float32 (float64 for float64 inputs); outputs keep the input dtype.
"""
from __future__ import annotations

from typing import Callable

import torch
import triton

from . import gam_kernels, mini_decoder_kernels
from ._runtime import accumulation_dtype, launch

MAX_SCALES = 4  # the kernels take the scales as separate arguments
# CUDA's limit on a grid's y size. Kernels with a y axis launch at most this many programs along it
# and loop over the tiles beyond (a module constant so that tests can lower it).
MAX_GRID_Y = 65535


def _grid_y(tiles: int) -> int:
    return min(tiles, MAX_GRID_Y)


def new_tensor(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output and scratch buffer of the backend is allocated here."""
    return torch.empty(shape, dtype=dtype, device=device)


def _check_scale_count(features: list[torch.Tensor], op: str) -> None:
    if len(features) > MAX_SCALES:
        raise ValueError(f"{op}: the triton backend supports 1 to {MAX_SCALES} scales in `features`, "
                         f"got {len(features)}")


def _no_autocast(device: torch.device) -> torch.autocast:
    # The ops are called inside the caller's autocast region; the low-resolution matmuls must
    # stay in the accumulation type.
    return torch.autocast(device_type=device.type, enabled=False)


def _weight_per_scale(weight: torch.Tensor, features: list[torch.Tensor], acc: torch.dtype) -> list[torch.Tensor]:
    """W_v (C_v, 9) for each scale, in the accumulation type."""
    return list(weight.reshape(weight.shape[1], 9).to(acc).split([f.shape[1] for f in features]))


def _pad_scales(per_scale: list[list], filler: list) -> list:
    """Flatten per-scale kernel arguments, padding to MAX_SCALES with `filler` (never read)."""
    return [arg for args in per_scale + [filler] * (MAX_SCALES - len(per_scale)) for arg in args]


def mini_decoder_forward(features: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                         size: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, gam), each (B, 1, H, W), from n <= 4 features (B, C_v, h_v, w_v), weight (1, sum C_v, 3, 3)
    and bias (1,)."""
    _check_scale_count(features, "mini_decoder")
    B, (H, W), device = features[0].shape[0], size, features[0].device
    acc = accumulation_dtype(weight.dtype)
    with _no_autocast(device):
        reduced = [torch.matmul(w_v.t(), f.reshape(B, f.shape[1], -1).to(acc)).reshape(B, 9, *f.shape[2:])
                   for w_v, f in zip(_weight_per_scale(weight, features, acc), features)]
    logits = new_tensor((B, 1, H, W), weight.dtype, device)
    gam = new_tensor((B, 1, H, W), weight.dtype, device)
    scale_args = _pad_scales([[r, r.shape[2], r.shape[3]] for r in reduced], [reduced[0], 1, 1])

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(W, meta["BLOCK_W"]), _grid_y(triton.cdiv(B * H, meta["BLOCK_H"]))

    launch(mini_decoder_kernels.forward_kernel, grid, *scale_args, bias, logits, gam, B, H, W,
           NUM_SCALES=len(reduced))
    return logits, gam


def _logit_grad(grad_logits: torch.Tensor, grad_gam: torch.Tensor, gam: torch.Tensor,
                acc: torch.dtype) -> torch.Tensor:
    """dZ (B, H, W) = dlogits + dG * G * (1 - G) in the accumulation type."""
    B, _, H, W = gam.shape
    dz = new_tensor((B, H, W), acc, gam.device)
    n = dz.numel()
    launch(mini_decoder_kernels.logit_grad_kernel, lambda meta: (triton.cdiv(n, meta["BLOCK"]),),
           grad_logits.contiguous(), grad_gam.contiguous(), gam.contiguous(), dz, n)
    return dz


def _window(low: int, high: int) -> int:
    """Coordinates P a low-resolution index gathers over: the at most 2 * high / low + 4 that read
    it, one more for rounding, two for the +-1 shifts of a 3x3 tap; never more than the axis + 2."""
    return min((2 * high + low - 1) // low + 7, high + 2)


def _resize_transpose_axis(x: torch.Tensor, out: torch.Tensor, n: int, m: int, low: int, high: int,
                           x_strides: tuple[int, int, int], out_strides: tuple[int, int, int, int]) -> None:
    """out[n, d, i, m] = sum_P weight(P + d - 1 -> i) * x[n, m, P]; strides (n, m, P) and (n, d, i, m)."""
    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(n * m, meta["BLOCK_M"]), _grid_y(triton.cdiv(low, meta["BLOCK_I"]))

    launch(mini_decoder_kernels.resize_transpose_kernel, grid, x, out, n, m, low, high, _window(low, high),
           *x_strides, *out_strides)


def _resize_transpose(dz: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """D (B, 9, h * w), D[t] = upsample^T(shift_t(dZ)) for the 9 taps t = 3 (dy + 1) + dx + 1; dz (B, H, W)."""
    B, H, W = dz.shape
    rows = new_tensor((B, 3, h, W), dz.dtype, dz.device)  # [b, dy, iy, X]: transposed along the rows
    _resize_transpose_axis(dz, rows, B, W, h, H, (H * W, 1, W), (3 * h * W, h * W, W, 1))
    taps = new_tensor((B, 3, 3, h, w), dz.dtype, dz.device)  # [b, dy, dx, iy, ix]: then along the columns
    _resize_transpose_axis(rows, taps, 3 * B, h, w, W, (h * W, W, 1), (3 * h * w, h * w, 1, w))
    return taps.reshape(B, 9, h * w)


def mini_decoder_backward(grad_logits: torch.Tensor, grad_gam: torch.Tensor, gam: torch.Tensor,
                          features: list[torch.Tensor], weight: torch.Tensor
                          ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Gradients of features (like each F_v), weight (1, sum C_v, 3, 3) and bias (1,).

    grad_logits, grad_gam, gam: (B, 1, H, W); nothing else at full resolution is needed.
    """
    _check_scale_count(features, "mini_decoder_backward")
    acc = accumulation_dtype(weight.dtype)
    device = gam.device
    dz = _logit_grad(grad_logits, grad_gam, gam, acc)
    grad_features, grad_weights = [], []
    with _no_autocast(device):
        for w_v, f in zip(_weight_per_scale(weight, features, acc), features):
            B, C, h, w = f.shape
            taps = _resize_transpose(dz, h, w)
            grad_features.append(torch.matmul(w_v, taps).reshape(B, C, h, w).to(f.dtype))
            grad_weights.append(torch.einsum("bcp,btp->ct", f.reshape(B, C, h * w).to(acc), taps))
        grad_weight = torch.cat(grad_weights).reshape(weight.shape).to(weight.dtype)
        grad_bias = dz.sum().reshape(1).to(weight.dtype)
    return grad_features, grad_weight, grad_bias


def _check_sample_size(features: list[torch.Tensor], gam: torch.Tensor, op: str) -> None:
    """The kernels index within one sample in int32 (the sample's own offset is int64)."""
    named = {**{f"features[{i}]": f for i, f in enumerate(features)}, "gam": gam}
    for name, t in named.items():
        if t[0].numel() >= 2**31:
            raise ValueError(f"{op}: the triton backend needs fewer than 2^31 elements per sample in "
                             f"`{name}`, got shape {tuple(t.shape)}")


def _coarse_first(features: list[torch.Tensor]) -> list[int]:
    """The scales' order in the launch grid: largest pooling window first, so that the programs
    with the longest window loops start first instead of trailing behind the others."""
    return sorted(range(len(features)), key=lambda v: features[v].shape[2] * features[v].shape[3])


def _gam_grid(features: list[torch.Tensor]) -> Callable[[dict], tuple[int]]:
    """One program per block of one sample's low-resolution pixels, every scale's blocks one after the other."""
    B = features[0].shape[0]

    def grid(meta: dict) -> tuple[int]:
        return (sum(B * triton.cdiv(f.shape[2] * f.shape[3], meta["BLOCK"]) for f in features),)
    return grid


def gam_multiply_forward(features: list[torch.Tensor], gam: torch.Tensor, reverse: bool) -> list[torch.Tensor]:
    """P_v = F_v * a_v (shaped like F_v) for n <= 4 features and a GAM (B, 1, H, W)."""
    _check_scale_count(features, "gam_multiply")
    _check_sample_size(features, gam, "gam_multiply")
    features = [f.contiguous() for f in features]
    outputs = [new_tensor(tuple(f.shape), f.dtype, f.device) for f in features]
    B, _, H, W = gam.shape
    order = _coarse_first(features)
    scale_args = _pad_scales([[features[v], outputs[v], *features[v].shape[1:]] for v in order],
                             [features[0], outputs[0], 1, 1, 1])
    launch(gam_kernels.forward_kernel, _gam_grid(features), gam.contiguous(), *scale_args, B, H, W,
           NUM_SCALES=len(features), REVERSE=reverse)
    return outputs


def gam_multiply_backward(grad_outputs: list[torch.Tensor], features: list[torch.Tensor], gam: torch.Tensor,
                          reverse: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradients of the features (like each F_v) and of the GAM (B, 1, H, W)."""
    _check_scale_count(features, "gam_multiply_backward")
    _check_sample_size(features, gam, "gam_multiply_backward")
    features = [f.contiguous() for f in features]
    grad_outputs = [g.contiguous() for g in grad_outputs]
    acc = accumulation_dtype(gam.dtype)
    B, _, H, W = gam.shape
    grad_features = [new_tensor(tuple(f.shape), f.dtype, f.device) for f in features]
    grad_pools = [new_tensor((B, f.shape[2], f.shape[3]), acc, f.device) for f in features]
    scale_args = _pad_scales([[features[v], grad_outputs[v], grad_features[v], grad_pools[v], *features[v].shape[1:]]
                              for v in _coarse_first(features)],
                             [features[0], grad_outputs[0], grad_features[0], grad_pools[0], 1, 1, 1])
    gam = gam.contiguous()
    launch(gam_kernels.backward_kernel, _gam_grid(features), gam, *scale_args, B, H, W,
           NUM_SCALES=len(features), REVERSE=reverse)
    grad_gam = new_tensor(tuple(gam.shape), gam.dtype, gam.device)
    pool_args = _pad_scales([[gp, gp.shape[1], gp.shape[2]] for gp in grad_pools], [grad_pools[0], 1, 1])
    launch(gam_kernels.gam_grad_kernel, lambda meta: (B * H * triton.cdiv(W, meta["BLOCK"]),), *pool_args,
           grad_gam, B, H, W, NUM_SCALES=len(features))
    return grad_features, grad_gam
