"""Triton kernels of mini_decoder (design section 2.1), on the low-resolution formulation.

Forward: Z = b + sum_v sum_t bilinear(r_v[t])(P + d_t), G = sigmoid(Z), one full-resolution pass
over all scales, where r_v (B, 9, h_v, w_v) = W_v . F_v is the channel reduction done by the host.
Backward: dZ = dlogits + dG * G * (1 - G) (elementwise), then for each scale the transposed
resize D_v[t] = upsample^T(shift_t(dZ)), separable like the resize: along the rows, then along the
columns, each a gather in which every low-resolution index sums the coordinates that read it
(deterministic, no atomics). Plain tensors are contiguous, NCHW.
"""
import triton
import triton.language as tl

from ._math import linear_tap, resize_scale, stable_sigmoid, tap_weight, upcast
from ._runtime import tuned

_TILE_CONFIGS = [  # (rows, columns) of a 2-D tile
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}, num_warps=4),
    triton.Config({"BLOCK_H": 8, "BLOCK_W": 64}, num_warps=4),
    triton.Config({"BLOCK_H": 32, "BLOCK_W": 32}, num_warps=8),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 64}, num_warps=8),
]
_GATHER_CONFIGS = [  # (low-resolution index, kept axis) tiles; each element loops over its window
    triton.Config({"BLOCK_I": 8, "BLOCK_M": 32}, num_warps=4),
    triton.Config({"BLOCK_I": 4, "BLOCK_M": 64}, num_warps=4),
    triton.Config({"BLOCK_I": 16, "BLOCK_M": 32}, num_warps=8),
    triton.Config({"BLOCK_I": 8, "BLOCK_M": 16}, num_warps=2),
]
_ELEMENTWISE_CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 256}, num_warps=2),
    triton.Config({"BLOCK": 2048}, num_warps=8),
]


@triton.jit
def _add_scale(acc, r_ptr, h, w, H, W, batch, ys, xs):
    """acc (BLOCK_H, BLOCK_W) + sum over the 9 taps of bilinear samples of r (B, 9, h, w) at
    (ys + dy, xs + dx); batch and ys index the tile's rows, xs its columns."""
    scale_y = resize_scale(h, H, acc)
    scale_x = resize_scale(w, W, acc)
    plane = tl.cast(h, tl.int64) * w  # int64 products: a tensor may hold 2^31 elements
    sample_base = batch.to(tl.int64) * 9 * plane
    for dy in range(0, 3):  # run-time loops: unrolling 4 scales x 9 taps makes compilation slow
        iy0, iy1, wy0, wy1 = linear_tap(ys + (dy - 1), h, H, scale_y)
        row0 = (sample_base + iy0.to(tl.int64) * w)[:, None]
        row1 = (sample_base + iy1.to(tl.int64) * w)[:, None]
        for dx in range(0, 3):
            ix0, ix1, wx0, wx1 = linear_tap(xs + (dx - 1), w, W, scale_x)
            tap = r_ptr + (dy * 3 + dx) * plane
            left = tap + ix0[None, :]
            right = tap + ix1[None, :]
            top = wx0[None, :] * tl.load(left + row0) + wx1[None, :] * tl.load(right + row0)
            bottom = wx0[None, :] * tl.load(left + row1) + wx1[None, :] * tl.load(right + row1)
            acc += wy0[:, None] * top + wy1[:, None] * bottom
    return acc


@tuned(_TILE_CONFIGS, key=["H", "W", "NUM_SCALES"], interpreter={"BLOCK_H": 32, "BLOCK_W": 32})
def forward_kernel(r0_ptr, h0, w0, r1_ptr, h1, w1, r2_ptr, h2, w2, r3_ptr, h3, w3,
                   bias_ptr, logits_ptr, gam_ptr, B, H, W,
                   NUM_SCALES: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Logits and GAM (B, 1, H, W), in (BLOCK_H, BLOCK_W) tiles of the B * H rows; grid (W tiles, n), each
    program of the second axis taking every n-th tile of rows (n is capped by the grid's size limit).

    r*_ptr: reduced features (B, 9, h, w) in the accumulation type, scales beyond NUM_SCALES unused.
    """
    xs = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)
    num_rows = tl.cast(B, tl.int64) * H
    for tile in range(tl.program_id(1), tl.cdiv(num_rows, BLOCK_H), tl.num_programs(1)):
        rows = tile * BLOCK_H + tl.arange(0, BLOCK_H).to(tl.int64)
        batch = tl.minimum(rows // H, B - 1)  # rows past the end read (in-bounds) data of the last sample
        ys = rows % H
        acc = tl.zeros((BLOCK_H, BLOCK_W), r0_ptr.dtype.element_ty) + tl.load(bias_ptr).to(r0_ptr.dtype.element_ty)
        acc = _add_scale(acc, r0_ptr, h0, w0, H, W, batch, ys, xs)
        if NUM_SCALES > 1:
            acc = _add_scale(acc, r1_ptr, h1, w1, H, W, batch, ys, xs)
        if NUM_SCALES > 2:
            acc = _add_scale(acc, r2_ptr, h2, w2, H, W, batch, ys, xs)
        if NUM_SCALES > 3:
            acc = _add_scale(acc, r3_ptr, h3, w3, H, W, batch, ys, xs)
        offsets = rows[:, None] * W + xs[None, :]
        inside = (rows < num_rows)[:, None] & (xs < W)[None, :]
        tl.store(logits_ptr + offsets, acc.to(logits_ptr.dtype.element_ty), mask=inside)
        tl.store(gam_ptr + offsets, stable_sigmoid(acc).to(gam_ptr.dtype.element_ty), mask=inside)


@tuned(_ELEMENTWISE_CONFIGS, key=["n"], interpreter={"BLOCK": 4096})
def logit_grad_kernel(grad_logits_ptr, grad_gam_ptr, gam_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out = dlogits + dG * G * (1 - G), in the accumulation type; all four (n,) flat."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    g = upcast(tl.load(gam_ptr + offsets, mask=mask))
    grad_logits = upcast(tl.load(grad_logits_ptr + offsets, mask=mask))
    dz = grad_logits + upcast(tl.load(grad_gam_ptr + offsets, mask=mask)) * g * (1.0 - g)
    tl.store(out_ptr + offsets, dz.to(out_ptr.dtype.element_ty), mask=mask)


@tuned(_GATHER_CONFIGS, key=["N", "M", "low", "high"], interpreter={"BLOCK_I": 32, "BLOCK_M": 256})
def resize_transpose_kernel(x_ptr, out_ptr, N, M, low, high, span,
                            x_sn, x_sm, x_sp, out_sn, out_sd, out_si, out_sm,
                            BLOCK_I: tl.constexpr, BLOCK_M: tl.constexpr):
    """Transposed linear resize along one axis, for the three shifts of a 3x3 tap, as a gather:

        out[n, d, i, m] = sum_P weight(P + d - 1 -> i) * x[n, m, P]     d = 0, 1, 2

    where weight(Q -> i) is the weight with which full-resolution coordinate Q (of `high`) reads
    low-resolution index i (of `low`) in the forward resize, 0 for Q outside [0, high). Each i sums
    the `span` coordinates P from a little before i * high / low. Strides are in elements; a tile
    covers BLOCK_I indices i and BLOCK_M of the N * M pairs (n, m); grid (pair tiles, k), each program of
    the second axis taking every k-th tile of indices i (k is capped by the grid's size limit).
    x and out share the accumulation type.
    """
    pair = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pair // M
    m = pair % M
    x_base = x_ptr + (n * x_sn + m * x_sm)[None, :]
    out_base = out_ptr + (n * out_sn + m * out_sm)[None, :]
    pair_inside = (pair < tl.cast(N, tl.int64) * M)[None, :]
    for tile in range(tl.program_id(1), tl.cdiv(low, BLOCK_I), tl.num_programs(1)):
        i = tile * BLOCK_I + tl.arange(0, BLOCK_I)
        acc0 = tl.zeros((BLOCK_I, BLOCK_M), x_ptr.dtype.element_ty)
        acc1 = acc0
        acc2 = acc0
        scale = resize_scale(low, high, acc0)
        # The first P whose shifted coordinates may read i: conservative by one (so an approximate
        # division is fine) and one more for the shift; tap_weight decides exactly.
        first = tl.maximum(tl.floor((i.to(tl.float32) - 0.5) * (high / low) - 0.5).to(tl.int32) - 1, 0) - 1
        # Weights of the three shifted coordinates p - 1, p, p + 1, slid along with p.
        weight_before = tap_weight(first - 1, i, low, high, scale)
        weight_at = tap_weight(first, i, low, high, scale)
        for k in range(0, span):
            p = first + k
            weight_after = tap_weight(p + 1, i, low, high, scale)
            value = tl.load(x_base + p.to(tl.int64)[:, None] * x_sp,
                            mask=((p >= 0) & (p < high))[:, None] & pair_inside, other=0.0)
            acc0 += weight_before[:, None] * value
            acc1 += weight_at[:, None] * value
            acc2 += weight_after[:, None] * value
            weight_before = weight_at
            weight_at = weight_after
        out = out_base + i.to(tl.int64)[:, None] * out_si
        inside = (i < low)[:, None] & pair_inside
        tl.store(out, acc0, mask=inside)
        tl.store(out + out_sd, acc1, mask=inside)
        tl.store(out + 2 * out_sd, acc2, mask=inside)
