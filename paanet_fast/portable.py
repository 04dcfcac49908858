"""The "portable" backend: both operators in plain differentiable PyTorch (design sections 2.1, 2.2).

The mini-decoder never upsamples a feature map. Its 3x3 taps are summed over channels at low
resolution, and bilinear resizing along one axis is a small dense matrix (rows: output samples,
two non-zero weights each), so every tap plane is resized and shifted by two matmuls:

    Z = b + sum_v sum_(ky, kx)  R_H[ky] r_v[ky, kx] R_W[kx]^T

where r_v[ky, kx] (B x h_v x w_v) is the tap (ky, kx) of the weight summed over the channels of
F_v, and R[k] is the interpolation matrix with its rows moved by k - 1 and zero rows where that
leaves the map (the convolution's zero padding). The three shifts of one axis sit side by side in
one matrix, so each scale costs one matmul per axis; all scales share the vertical one. Of the
full-resolution tensors, autograd keeps only G, and every op (conv2d, matmul, reshape, mean,
sigmoid) exists on every device, under autocast, in torch.compile and in ONNX, with autograd
deriving all higher derivatives. Half-precision inputs are computed in float32, as the compiled
backends do, and the results returned in the inputs' dtype.

The explicit first backward of both operators lives here too: it is what the compiled backward
operators compute, and differentiating it gives them their own derivatives (double backward).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import Tensor


def _shifted_interpolation(out_size: int, in_size: int, like: Tensor) -> Tensor:
    """(out_size, 3 * in_size): [R(-1) | R(0) | R(+1)], R(d)[Y] = row Y + d of the bilinear
    (align_corners=False) resize matrix from in_size to out_size samples, zero outside the map."""
    # F.interpolate's index rule, in its own precision (float32 for float32 and half inputs).
    math_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    target = torch.arange(-1, out_size + 1, device=like.device, dtype=math_dtype)
    # The scale as a 0-d tensor (the same value, divided in math_dtype as ATen does), not a Python
    # float: traced with symbolic sizes, in_size / out_size is a SymFloat, which AOT autograd's
    # _tensorify_python_scalars pass turns into tensor math by looking up every size symbol in it
    # among the graph's earlier nodes. Without dynamo's lifted size inputs (opcheck's
    # test_aot_dispatch_dynamic) a symbol that a guard folded into another size (C + C = 4, also a
    # height: 4 -> 2 * C) has no such node yet, and the pass fails (torch 2.14: KeyError: s9).
    scale = torch.full((), in_size, device=like.device, dtype=math_dtype) / out_size
    source = ((target + 0.5) * scale - 0.5).clamp_min(0)
    lower = source.floor().clamp_max(in_size - 1)
    upper = (lower + 1).clamp_max(in_size - 1)
    fraction = (source - lower)[:, None]
    columns = torch.arange(in_size, device=like.device, dtype=math_dtype)
    rows = (1 - fraction) * (columns == lower[:, None]) + fraction * (columns == upper[:, None])
    rows = rows * ((target >= 0) & (target < out_size))[:, None]
    return torch.cat([rows[:out_size], rows[1:out_size + 1], rows[2:]], dim=1).to(like.dtype)


def _scale_weights(features: Sequence[Tensor], weight: Tensor) -> list[Tensor]:
    """The (C_v, 3, 3) slice of the (1, sum C_v, 3, 3) weight that belongs to each scale."""
    return list(weight[0].split([f.shape[1] for f in features]))


def _tap_sums(feature: Tensor, weight: Tensor) -> Tensor:
    """(B, 3, 3, h, w): r[ky, kx] = sum_c weight[c, ky, kx] * feature[c], at low resolution.

    A 1x1 convolution with the 9 taps as output channels: it reads any layout in place and keeps
    the feature itself for its backward, where a matmul would keep a transposed copy."""
    batch, channels, h, w = feature.shape
    taps_as_channels = weight.reshape(channels, 9).T.reshape(9, channels, 1, 1)
    return torch.nn.functional.conv2d(feature, taps_as_channels).reshape(batch, 3, 3, h, w)


def _pooled(gam: Tensor, feature: Tensor) -> Tensor:
    """avg_pool of G (B, 1, H, W) to the feature's (h, w): a reshape and a mean, so that the window
    is never a constant (export with dynamic sizes)."""
    batch, _, height, width = gam.shape
    h, w = feature.shape[-2:]
    return gam.reshape(batch, 1, h, height // h, w, width // w).mean(dim=(3, 5))


def _in_float32(tensors: Sequence[Tensor]) -> list[Tensor]:
    """float16 and bfloat16 tensors as float32, others unchanged: the matmuls accumulate in float32
    at least, as the compiled backends do (and never round their intermediates to half)."""
    return [t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors]


@torch.compiler.assume_constant_result
def _has_autocast(device_type: str) -> bool:
    # A constant to torch.compile: dynamo of torch 2.6 and 2.9 breaks the graph at the check itself
    # (torch._C._is_autocast_available). Asked first since is_autocast_enabled raises for device
    # types autocast does not know (meta).
    return torch.amp.is_autocast_available(device_type)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Keeps autocast from casting the float32 matmuls back down (the inputs were cast already)."""
    if _has_autocast(device_type) and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def mini_decoder(features: list[Tensor], weight: Tensor, bias: Tensor,
                 size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(logits, gam), each (B, 1, H, W), as paanet_fast.reference.mini_decoder computes them from
    features F_v (B, C_v, h_v, w_v), weight (1, sum C_v, 3, 3), bias (1,) and size (H, W)."""
    height, width = size
    batch, dtype = features[0].shape[0], features[0].dtype
    with _autocast_off(features[0].device.type):
        *features, weight, bias = _in_float32([*features, weight, bias])
        vertical, planes = [], []
        # Concatenations instead of reshapes that merge the 3 taps with a map's size, and bmm instead of
        # a broadcasting matmul: torch.export (and so the ONNX export) can then keep H and W symbolic;
        # otherwise it asks for proofs like 3 % (3 * w_v) != 0 that it cannot find.
        for f, w in zip(features, _scale_weights(features, weight)):
            h_v, w_v = f.shape[-2:]
            taps = torch.cat(_tap_sums(f, w).unbind(2), dim=-1)  # (B, ky, h_v, kx w_v)
            resized = taps @ _shifted_interpolation(width, w_v, f).T  # (B, 3 [ky], h_v, W)
            planes.append(torch.cat(resized.unbind(1), dim=1))  # (B, ky h_v, W)
            vertical.append(_shifted_interpolation(height, h_v, f))
        logits = (torch.cat(vertical, dim=1).expand(batch, -1, -1).bmm(torch.cat(planes, dim=1)) + bias).unsqueeze(1)
        return logits.to(dtype), torch.sigmoid(logits).to(dtype)


def gam_multiply(features: list[Tensor], gam: Tensor, reverse: bool) -> list[Tensor]:
    """P_v = F_v * a_v for features F_v (B, C_v, h_v, w_v) and G (B, 1, H, W), with a_v = G
    average-pooled to (h_v, w_v) (1 - that when reverse); H, W multiples of every h_v, w_v."""
    outputs = []
    for f in features:
        pooled = _pooled(gam, f)
        outputs.append(f * (1 - pooled if reverse else pooled))
    return outputs


def mini_decoder_backward(grad_logits: Tensor, grad_gam: Tensor, gam: Tensor, features: list[Tensor],
                          weight: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
    """Gradients of mini_decoder's inputs (features, weight, bias), shaped like them, from those of
    its outputs (logits, gam), each (B, 1, H, W), and G itself: the transpose of the forward's
    matmuls, with G taken as given (so that it can be differentiated)."""
    batch, dtype, parameter_dtype = gam.shape[0], gam.dtype, weight.dtype
    height, width = gam.shape[-2:]
    with _autocast_off(gam.device.type):
        grad_logits, grad_gam, gam, weight, *features = _in_float32([grad_logits, grad_gam, gam, weight, *features])
        grad_z = grad_logits + grad_gam * gam * (1 - gam)
        vertical = torch.cat([_shifted_interpolation(height, f.shape[-2], f) for f in features], dim=1)
        grad_planes = (vertical.T @ grad_z[:, 0]).split([3 * f.shape[-2] for f in features], dim=1)
        grad_features, grad_weights = [], []
        for f, w, grad_plane in zip(features, _scale_weights(features, weight), grad_planes):
            h_v, w_v = f.shape[-2:]
            grad_resized = grad_plane.reshape(batch, 3, h_v, width)
            grad_taps = (grad_resized @ _shifted_interpolation(width, w_v, f)).reshape(batch, 3, h_v, 3, w_v)
            grad_features.append(torch.einsum("bkilj,ckl->bcij", grad_taps, w).to(dtype))
            grad_weights.append(torch.einsum("bkilj,bcij->ckl", grad_taps, f))
        return (grad_features, torch.cat(grad_weights)[None].to(parameter_dtype),
                grad_z.sum().reshape(1).to(parameter_dtype))


def gam_multiply_backward(grad_outputs: list[Tensor], features: list[Tensor], gam: Tensor,
                          reverse: bool) -> tuple[list[Tensor], Tensor]:
    """Gradients of gam_multiply's inputs (features, gam), shaped like them, from those of its
    outputs (shaped like the features)."""
    batch, _, height, width = gam.shape
    grad_features, grad_gam = [], torch.zeros_like(gam)
    for grad, f in zip(grad_outputs, features):
        pooled = _pooled(gam, f)
        grad_features.append(grad * (1 - pooled if reverse else pooled))
        grad_pooled = (grad * f).sum(dim=1, keepdim=True)
        if reverse:
            grad_pooled = -grad_pooled
        h, w = f.shape[-2:]
        window = (height // h) * (width // w)
        # Every element of a window gets the window's gradient over its area (the mean's transpose).
        spread = (grad_pooled / window)[:, :, :, None, :, None].expand(batch, 1, h, height // h, w, width // w)
        grad_gam = grad_gam + spread.reshape(gam.shape)
    return grad_features, grad_gam
