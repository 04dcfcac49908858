"""Host side of the Triton backend: allocation and kernel launches.

Arguments arrive validated (paanet_fast.ops). Features of any layout are made contiguous (a copy
only when they are not), the incoming gradients of mini_decoder are read through their strides;
every output is freshly allocated through `new_tensor` (tests poison it) and fully written by a
kernel, which also casts: no torch op runs on the device. Accumulation is float32 (float64 for
float64 inputs); outputs keep the input dtype.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from . import gam_kernels, mini_decoder_kernels
from ._runtime import accumulation_dtype, block_sizes, launch, size_class

MAX_SCALES = 4  # the kernels take the scales as separate arguments


def new_tensor(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output and scratch buffer of the backend is allocated here."""
    return torch.empty(shape, dtype=dtype, device=device)


def _check_scale_count(features: list[torch.Tensor], op: str) -> None:
    if len(features) > MAX_SCALES:
        raise ValueError(f"{op}: the triton backend supports 1 to {MAX_SCALES} scales in `features`, "
                         f"got {len(features)}")


def _pad_scales(per_scale: list[list], filler: list) -> list:
    """Flatten per-scale kernel arguments, padding to MAX_SCALES with `filler` (never read or written).

    Each padded scale gets one-element tensors of its own in place of the filler's tensors: under
    torch.compile, functionalization copies every argument that a kernel may write (by its analysis
    of the kernel, which cannot see that a padded scale is never touched) back to its tensor, so a
    tensor passed twice would be overwritten by the unwritten copy of the other argument."""
    def unused(arg):
        return new_tensor((1,), arg.dtype, arg.device) if isinstance(arg, torch.Tensor) else arg

    padding = [[unused(arg) for arg in filler] for _ in range(MAX_SCALES - len(per_scale))]
    return [arg for args in per_scale + padding for arg in args]


def _cdiv(a: int, b: int) -> int:
    """triton.cdiv's arithmetic without its wrapper (a constexpr function: 1.5 us a call on the host
    here, against 0.05), for the grids that Triton's launcher evaluates on every launch."""
    return (a + b - 1) // b


def _window(low: int, high: int) -> int:
    """Coordinates P a low-resolution index gathers over: the at most 2 * high / low + 4 that read
    it, one more for rounding, two for the +-1 shifts of a 3x3 tap; never more than the axis + 2."""
    return min(_cdiv(2 * high, low) + 7, high + 2)


def divider(d: int) -> tuple[int, int]:
    """(magic, shift) with n // d == (umulhi(n, magic) + n) >> shift for every 0 <= n < 2^31 and
    1 <= d <= 2^31 (_math.divide; the round-up method of Granlund and Montgomery, as
    kernels/common.cuh's Divider): shift = ceil(log2 d), magic = floor(2^32 (2^shift - d) / d) + 1."""
    shift = (d - 1).bit_length()
    return (((1 << shift) - d) << 32) // d + 1, shift


def _plane(f: torch.Tensor) -> int:
    """h * w of a (B, C, h, w) map: the kernels take it as an argument of its own, so that Triton
    specialises on its divisibility (16-byte loads and stores where every scale's plane allows)."""
    return f.shape[2] * f.shape[3]


def _plane_blocks(B: int, planes: list[int], block: int) -> int:
    """Programs of kernels laid out as _math.plane_blocks, over every scale."""
    return sum(B * _cdiv(plane, block) for plane in planes)


def mini_decoder_forward(features: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                         size: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, gam), each (B, 1, H, W), from n <= 4 features (B, C_v, h_v, w_v), weight (1, sum C_v, 3, 3)
    and bias (1,). Two launches: the channel reductions of every scale, then the full-resolution pass."""
    _check_scale_count(features, "mini_decoder")
    B, (H, W), device = features[0].shape[0], size, features[0].device
    _check_sample_size(features, (H, W), "mini_decoder")
    features = [f.contiguous() for f in features]
    acc = accumulation_dtype(features[0].dtype)
    reduced = [new_tensor((B, 9, f.shape[2], f.shape[3]), acc, device) for f in features]
    planes = [_plane(f) for f in features]
    reduce_args = _pad_scales([[f, r, f.shape[1], _plane(f)] for f, r in zip(features, reduced)],
                              [features[0], reduced[0], 1, 1])
    launch(mini_decoder_kernels.reduce_kernel, lambda meta: (_plane_blocks(B, planes, meta["BLOCK"]),),
           weight.contiguous(), *reduce_args, B, NUM_SCALES=len(features))
    logits = new_tensor((B, 1, H, W), features[0].dtype, device)
    gam = new_tensor((B, 1, H, W), features[0].dtype, device)
    scale_args = _pad_scales([[r, r.shape[2], r.shape[3]] for r in reduced], [reduced[0], 1, 1])

    def grid(meta: dict) -> tuple[int]:
        return (B * _cdiv(H, meta["BLOCK_H"]) * _cdiv(W, meta["BLOCK_W"]),)

    rows = block_sizes(mini_decoder_kernels.forward_kernel)["BLOCK_H"]
    spans = [_source_rows(f.shape[2], H, rows) for f in features] + [0] * (MAX_SCALES - len(features))
    launch(mini_decoder_kernels.forward_kernel, grid, *scale_args, bias, logits, gam, B, H, W, size_class(H * W),
           NUM_SCALES=len(reduced), **{f"SPAN{v}": span for v, span in enumerate(spans)})
    return logits, gam


def _source_rows(h: int, H: int, rows: int) -> int:
    """The source rows (a power of two, at most 64) of the window in which a tile of `rows` output rows
    resizes a scale of height h to H separably, or 0 where it takes per-pixel samples (a scale resized
    down). The tile and its halo, rows + 2 rows, read the rows from the first one's tap i0 to the last
    one's tap i1: at most floor((rows + 1) h / H) + 3, one more for rounding of the float32 scale.
    Comparisons, not arithmetic, as size_class: under torch.compile h and H may be symbolic."""
    if h > H:
        return 0
    return next((span for span in (4, 8, 16, 32, 64) if (rows + 1) * h < (span - 3) * H), 0)


def mini_decoder_backward(grad_logits: torch.Tensor, grad_gam: torch.Tensor, gam: torch.Tensor,
                          features: list[torch.Tensor], weight: torch.Tensor
                          ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Gradients of features (like each F_v), weight (1, sum C_v, 3, 3) and bias (1,).

    grad_logits, grad_gam, gam: (B, 1, H, W), the gradients of any strides; nothing else at full
    resolution is needed. Three launches: the rows pass of every scale's transposed resize, the
    columns pass with the channel gradients, the sum of the weight gradient's shares.
    """
    _check_scale_count(features, "mini_decoder_backward")
    _check_sample_size(features, tuple(gam.shape[2:]), "mini_decoder_backward")
    features = [f.contiguous() for f in features]
    acc = accumulation_dtype(gam.dtype)
    B, _, H, W = gam.shape
    device = gam.device
    heights = [f.shape[2] for f in features]
    rows = [new_tensor((B, 3, h, W), acc, device) for h in heights]  # [b, dy, iy, X]
    # The shortest scales first in the grid: their programs loop longest (a window of about 2 H / h rows), so
    # where the grid is more than one wave of programs (the smaller tiles' configs) they do not trail.
    shortest_first = sorted(range(len(heights)), key=heights.__getitem__)
    rows_args = _pad_scales([[rows[v], heights[v], _window(heights[v], H)] for v in shortest_first], [rows[0], 1, 1])

    def rows_grid(meta: dict) -> tuple[int]:
        tiles = _cdiv(W, meta["BLOCK_M"])
        return (sum(B * tiles * _cdiv(h, meta["BLOCK_I"]) for h in heights),)

    launch(mini_decoder_kernels.rows_kernel, rows_grid,
           grad_logits, grad_logits.stride(0), grad_logits.stride(2), grad_logits.stride(3),
           grad_gam, grad_gam.stride(0), grad_gam.stride(2), grad_gam.stride(3), gam.contiguous(),
           *rows_args, B, H, W, size_class(H * W), NUM_SCALES=len(features))

    planes = [_plane(f) for f in features]
    block = block_sizes(mini_decoder_kernels.columns_kernel)["BLOCK_P"]
    programs = [B * _cdiv(plane, block) for plane in planes]
    shares = [new_tensor((n, f.shape[1], 12), acc, device) for n, f in zip(programs, features)]
    bias_shares = new_tensor((programs[0],), acc, device)
    grad_features = [new_tensor(tuple(f.shape), f.dtype, device) for f in features]
    columns_args = _pad_scales([[r, f, gf, s, *f.shape[1:], _plane(f), _window(f.shape[3], W)]
                                for r, f, gf, s in zip(rows, features, grad_features, shares)],
                               [rows[0], features[0], grad_features[0], shares[0], 1, 1, 1, 1, 1])
    weight = weight.contiguous()
    launch(mini_decoder_kernels.columns_kernel, lambda meta: (_plane_blocks(B, planes, meta["BLOCK_P"]),),
           weight, bias_shares, *columns_args, B, W, NUM_SCALES=len(features))

    grad_weight = new_tensor(tuple(weight.shape), weight.dtype, device)
    grad_bias = new_tensor((1,), weight.dtype, device)
    sum_args = _pad_scales([[s, s.shape[1], s.shape[0]] for s in shares], [shares[0], 0, 0])
    launch(mini_decoder_kernels.sum_kernel, lambda meta: (weight.shape[1] + 1,), *sum_args, bias_shares,
           grad_weight, grad_bias, NUM_SCALES=len(features))
    return grad_features, grad_weight, grad_bias


def _check_sample_size(features: list[torch.Tensor], size: tuple[int, int], op: str) -> None:
    """The kernels index within one sample in int32 (the sample's own offset is int64)."""
    shapes = [tuple(f.shape[1:]) for f in features] + [tuple(size)]
    for i, shape in enumerate(shapes):
        if math.prod(shape) >= 2**31:
            name = "the GAM" if i == len(features) else f"`features[{i}]`"
            raise ValueError(f"{op}: the triton backend needs fewer than 2^31 elements per sample in {name}, "
                             f"got a sample of shape {shape}")


def _coarse_first(features: list[torch.Tensor]) -> list[int]:
    """The scales' order in the launch grid: largest pooling window first, so that the programs
    with the longest window loops start first instead of trailing behind the others."""
    return sorted(range(len(features)), key=lambda v: features[v].shape[2] * features[v].shape[3])


def _gam_grid(features: list[torch.Tensor]) -> Callable[[dict], tuple[int]]:
    """One program per block of one sample's low-resolution pixels, every scale's blocks one after the other."""
    B = features[0].shape[0]

    def grid(meta: dict) -> tuple[int]:
        return (sum(B * _cdiv(f.shape[2] * f.shape[3], meta["BLOCK"]) for f in features),)
    return grid


def gam_multiply_forward(features: list[torch.Tensor], gam: torch.Tensor, reverse: bool) -> list[torch.Tensor]:
    """P_v = F_v * a_v (shaped like F_v) for n <= 4 features and a GAM (B, 1, H, W)."""
    _check_scale_count(features, "gam_multiply")
    _check_sample_size(features, tuple(gam.shape[2:]), "gam_multiply")
    features = [f.contiguous() for f in features]
    outputs = [new_tensor(tuple(f.shape), f.dtype, f.device) for f in features]
    B, _, H, W = gam.shape
    windows = _windows(features, gam)
    if (region := _region(windows)) is not None:
        _launch_regions(gam, None, features, features, outputs, windows, region, reverse)
        return outputs
    order = _coarse_first(features)
    scale_args = _pad_scales([[features[v], outputs[v], *features[v].shape[1:], _plane(features[v])] for v in order],
                             [features[0], outputs[0], 1, 1, 1, 1])
    launch(gam_kernels.forward_kernel, _gam_grid(features), gam.contiguous(), *scale_args, B, H, W,
           NUM_SCALES=len(features), REVERSE=reverse)
    return outputs


def _windows(features: list[torch.Tensor], gam: torch.Tensor) -> list[tuple[int, int]]:
    """(rows, columns) of each scale's GAM window."""
    return [(gam.shape[2] // f.shape[2], gam.shape[3] // f.shape[3]) for f in features]


def _region(windows: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The (rows, columns) of the one-launch backward's regions, the largest window's in each axis, or
    None where it does not apply: a window side that is not a power of two, or a region of more than
    gam_kernels.REGION_PIXELS pixels."""
    sides = [side for window in windows for side in window]
    region = max(sy for sy, _ in windows), max(sx for _, sx in windows)
    if any(side & (side - 1) for side in sides) or region[0] * region[1] > gam_kernels.REGION_PIXELS:
        return None
    return region


def _region_constexprs(windows: list[tuple[int, int]], region: tuple[int, int]) -> dict[str, int]:
    """The one-launch backward's constexprs of each scale: its window SY_v x SX_v and its channels a
    tile CH_v, as many as keep a tile of the region's pixels within gam_kernels.TILE_ELEMENTS (16 at
    most); 1 x 1 windows for the scales beyond the last (never read)."""
    constexprs = {}
    for v, (sy, sx) in enumerate(windows + [(1, 1)] * (MAX_SCALES - len(windows))):
        pixels = (region[0] // sy) * (region[1] // sx)
        constexprs.update({f"SY{v}": sy, f"SX{v}": sx,
                           f"CH{v}": min(gam_kernels.CHANNEL_TILE.value, gam_kernels.TILE_ELEMENTS // pixels)})
    return constexprs


def _launch_regions(gam: torch.Tensor, grad_gam: torch.Tensor | None, xs: list[torch.Tensor],
                    features: list[torch.Tensor], ys: list[torch.Tensor], windows: list[tuple[int, int]],
                    region: tuple[int, int], reverse: bool) -> None:
    """gam_kernels.region_kernel: y_v = x_v * a_v for every scale, and dG into `grad_gam` from the
    features when it is given (the backward: x = dP, y = dF), or not (the forward: x = F, y = P)."""
    B, _, H, W = gam.shape
    ry, rx = region
    gam = gam.contiguous()
    scale_args = _pad_scales([[x, f, y, *f.shape[1:]] for x, f, y in zip(xs, features, ys)],
                             [xs[0], features[0], ys[0], 1, 1, 1])
    backward = grad_gam is not None
    # Forward, dG's pointer is never written: the GAM itself stands in for it.
    launch(gam_kernels.region_kernel, lambda meta: (B * (H // ry) * (W // rx),), gam,
           grad_gam if backward else gam, *scale_args, H, W, NUM_SCALES=len(xs), BACKWARD=backward,
           REVERSE=reverse, RY=ry, RX=rx, **_region_constexprs(windows, region))


def gam_multiply_backward(grad_outputs: list[torch.Tensor], features: list[torch.Tensor], gam: torch.Tensor,
                          reverse: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradients of the features (like each F_v) and of the GAM (B, 1, H, W). One launch where the
    windows allow (_region), else two: the features' gradients and per-window sums, then dG."""
    _check_scale_count(features, "gam_multiply_backward")
    _check_sample_size(features, tuple(gam.shape[2:]), "gam_multiply_backward")
    features = [f.contiguous() for f in features]
    grad_outputs = [g.contiguous() for g in grad_outputs]
    acc = accumulation_dtype(gam.dtype)
    B, _, H, W = gam.shape
    grad_features = [new_tensor(tuple(f.shape), f.dtype, f.device) for f in features]
    windows = _windows(features, gam)
    region = _region(windows)
    if region is not None:
        grad_gam = new_tensor(tuple(gam.shape), gam.dtype, gam.device)
        _launch_regions(gam, grad_gam, grad_outputs, features, grad_features, windows, region, reverse)
        return grad_features, grad_gam
    grad_pools = [new_tensor((B, f.shape[2], f.shape[3]), acc, f.device) for f in features]
    scale_args = _pad_scales([[features[v], grad_outputs[v], grad_features[v], grad_pools[v], *features[v].shape[1:],
                               _plane(features[v])] for v in _coarse_first(features)],
                             [features[0], grad_outputs[0], grad_features[0], grad_pools[0], 1, 1, 1, 1])
    gam = gam.contiguous()
    launch(gam_kernels.backward_kernel, _gam_grid(features), gam, *scale_args, B, H, W,
           NUM_SCALES=len(features), REVERSE=reverse)
    grad_gam = new_tensor(tuple(gam.shape), gam.dtype, gam.device)
    pool_args = _pad_scales([[gp, gp.shape[1], gp.shape[2], *divider(W // gp.shape[2])] for gp in grad_pools],
                            [grad_pools[0], 1, 1, *divider(1)])
    launch(gam_kernels.gam_grad_kernel, lambda meta: (B * H * _cdiv(W, meta["BLOCK"]),), *pool_args,
           grad_gam, B, H, W, NUM_SCALES=len(features))
    return grad_features, grad_gam
