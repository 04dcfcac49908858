"""Triton kernels of mini_decoder (design section 2.1), on the low-resolution formulation.

Forward, two launches: `reduce_kernel` computes r_v (B, 9, h_v, w_v) = W_v . F_v for every scale,
then `forward_kernel` makes Z = b + sum_v sum_t bilinear(r_v[t])(P + d_t) and G = sigmoid(Z) in one
full-resolution pass over all scales, separably (the column resize of a tile's source rows, then a
gather across them) where a scale is resized up.

Backward, three launches. The transposed resize D_v[t] = upsample^T(shift_t(dZ)) is separable like
the resize, and each axis is a gather in which every low-resolution index sums the coordinates that
read it (deterministic, no atomics): `rows_kernel` transposes along the rows, computing dZ =
dlogits + dG * G * (1 - G) as it reads it; `columns_kernel` transposes along the columns, keeps the
9 taps D_v of a block of pixels in registers and from them writes dF_v = W_v^T D_v and each
program's share of dW_v = sum F_v D_v (and of db = sum D_1[centre] = sum dZ: each coordinate's
weights sum to one); `sum_kernel` adds up those shares in a fixed order.

Every scale of a kernel runs in the same launch, the programs laid out scale after scale. Plain
tensors are contiguous, NCHW; offsets within one sample are int32 (the host checks that a sample
fits), a sample's own offset int64. The reductions of the backward's fixed-configuration kernels
(`columns_kernel`, `sum_kernel`) follow their tile layout; every other kernel sums each output in
an order fixed by its loops, so no configuration changes a result's bits.
"""
import triton
import triton.language as tl

from ._math import (linear_tap, pick, plane_block, plane_program, program_scale, resize_scale, stable_sigmoid,
                    tap_weight, upcast)
from ._runtime import tuned

# (rows, columns) of a 2-D tile of the forward, 16 rows in every config: the host sizes the source-row
# windows of the separable resize by them (_add_scale_separable).
_TILE_CONFIGS = [
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}, num_warps=4),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 64}, num_warps=4),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 32}, num_warps=2),
    triton.Config({"BLOCK_H": 16, "BLOCK_W": 64}, num_warps=8),
]
_GATHER_CONFIGS = [  # (low-resolution index, full-resolution column) tiles; each element loops over its window
    triton.Config({"BLOCK_I": 8, "BLOCK_M": 32}, num_warps=4),
    triton.Config({"BLOCK_I": 4, "BLOCK_M": 64}, num_warps=4),
    triton.Config({"BLOCK_I": 16, "BLOCK_M": 32}, num_warps=8),
    triton.Config({"BLOCK_I": 8, "BLOCK_M": 16}, num_warps=2),
]
REDUCE_CONFIG = triton.Config({"BLOCK": 128}, num_warps=4)  # low-resolution pixels per program
# Pixels and channels per tile. 64 pixels: 680 programs at the model's shapes (five an SM of a 132-SM
# card), each writing one share of dW (C x 12 values) for the sum: half the shares of 32 pixels, and
# their sums over the pixels (cross-thread reductions) made for twice the pixels.
COLUMNS_CONFIG = triton.Config({"BLOCK_P": 64, "BLOCK_C": 8}, num_warps=4)
SUM_CONFIG = triton.Config({"BLOCK_R": 64}, num_warps=2)  # programs' shares added per step

# The 9 taps t = 3 dy + dx of a 3x3 kernel in a 16-row tile (rows 9-15 masked).
TAPS = tl.constexpr(16)
# The shifts dy of a tap row in a 4-column tile (column 3 masked), and its (dx, dy) shares in 12 slots.
SHIFTS = tl.constexpr(4)
SHARE = tl.constexpr(12)
# Coordinates of a gather whose loads are issued together (rows_kernel, columns_kernel). One at a time,
# each waited for the last: a tile of the stride-32 scale sums ~67 coordinates, and on an H200 the rows
# pass took 23 us and the columns pass 35 us. Past the end of a window the loads are masked off. Eight
# in the columns pass (72-79 registers, its grid still one wave on an H200); the rows pass, with three
# loads a coordinate, would take about 100 registers for eight and two waves.
ROWS_UNROLL = tl.constexpr(4)
COLUMNS_UNROLL = tl.constexpr(8)
# Channels of reduce_kernel, and BLOCK_R steps of sum_kernel, whose loads are issued together: one at a
# time, a thread of the channel reduction waited on 32 round trips (8.0 us on an H200, 4.1 for the CUDA
# kernel, which keeps eight channels in flight), and one of the sum on up to 8 (9.9 us for 129 programs).
CHANNEL_UNROLL = tl.constexpr(8)
SUM_UNROLL = tl.constexpr(4)


@triton.jit
def _reduce_segment(block, weight_ptr, channel_offset, f_ptr, r_ptr, C, plane, BLOCK: tl.constexpr):
    """r[b, t, p] = sum_c W[channel_offset + c, t] F[b, c, p] for one block of one sample's pixels
    (plane of them a sample)."""
    batch, pixel, mask = plane_block(block, plane, BLOCK)
    taps = tl.arange(0, TAPS)
    acc = tl.zeros((TAPS, BLOCK), r_ptr.dtype.element_ty)
    f_row = f_ptr + tl.cast(batch, tl.int64) * C * plane + pixel
    w_row = weight_ptr + channel_offset * 9 + taps
    for c0 in range(0, C, CHANNEL_UNROLL):
        for u in tl.static_range(0, CHANNEL_UNROLL):
            c = c0 + u
            weights = upcast(tl.load(w_row + c * 9, mask=(taps < 9) & (c < C), other=0.0))
            acc += weights[:, None] * upcast(tl.load(f_row + c * plane, mask=mask & (c < C), other=0.0))[None, :]
    r = r_ptr + tl.cast(batch, tl.int64) * 9 * plane + (taps * plane)[:, None] + pixel[None, :]
    tl.store(r, acc, mask=(taps < 9)[:, None] & mask[None, :])


@tuned([REDUCE_CONFIG], key=[], interpreter={"BLOCK": 1024})
def reduce_kernel(weight_ptr, f0_ptr, r0_ptr, c0, p0, f1_ptr, r1_ptr, c1, p1, f2_ptr, r2_ptr, c2, p2,
                  f3_ptr, r3_ptr, c3, p3, B, NUM_SCALES: tl.constexpr, BLOCK: tl.constexpr):
    """Reduced features r_v (B, 9, h_v, w_v) in the accumulation type from F_v (B, C_v, h_v, w_v) and the
    weight (1, sum C_v, 3, 3) for NUM_SCALES <= 4 scales, p_v = h_v * w_v (an argument of its own, so
    that Triton knows when every plane is a multiple of 16); grid: the blocks of every scale in turn."""
    s, block = plane_program(B, p0, p1, p2, BLOCK, NUM_SCALES)
    _reduce_segment(block, weight_ptr, pick(s, 0, c0, c0 + c1, c0 + c1 + c2, NUM_SCALES),
                    pick(s, f0_ptr, f1_ptr, f2_ptr, f3_ptr, NUM_SCALES),
                    pick(s, r0_ptr, r1_ptr, r2_ptr, r3_ptr, NUM_SCALES),
                    pick(s, c0, c1, c2, c3, NUM_SCALES), pick(s, p0, p1, p2, p3, NUM_SCALES), BLOCK)


@triton.jit
def _add_scale_per_pixel(acc, sample, plane, h, w, H, W, scale_y, scale_x, ys, xs):
    """acc (BLOCK_H, BLOCK_W) + sum over the 9 taps of bilinear samples of one sample's tap planes
    (9, h, w) at (ys + dy, xs + dx); ys index the tile's rows, xs its columns: one bilinear sample per
    tap and pixel, for scales resized down (more source rows than a tile's window holds). Each
    column's taps are computed once per dx, each row's once per tap."""
    for dx in range(0, 3):  # run-time loops: unrolling 4 scales x 9 taps makes compilation slow
        ix0, ix1, wx0, wx1 = linear_tap(xs + (dx - 1), w, W, scale_x)
        for dy in range(0, 3):
            iy0, iy1, wy0, wy1 = linear_tap(ys + (dy - 1), h, H, scale_y)
            tap = sample + (dy * 3 + dx) * plane
            row0 = (iy0 * w)[:, None]
            row1 = (iy1 * w)[:, None]
            left = tap + ix0[None, :]
            right = tap + ix1[None, :]
            top = wx0[None, :] * tl.load(left + row0) + wx1[None, :] * tl.load(right + row0)
            bottom = wx0[None, :] * tl.load(left + row1) + wx1[None, :] * tl.load(right + row1)
            acc += wy0[:, None] * top + wy1[:, None] * bottom
    return acc


@triton.jit
def _add_scale_separable(acc, sample, plane, h, w, H, W, scale_y, scale_x, y0, ys, xs, SPAN: tl.constexpr,
                         BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """What _add_scale_per_pixel adds, separably as the CUDA kernel: for each tap row dy, the SPAN
    source rows from the one that row y0 - 1 reads (all that rows y0 - 1 to y0 + BLOCK_H read, the
    host guarantees) resized along the columns with their three taps dx summed, then each pixel's two
    rows of those picked (a gather across the tile's rows) and weighted. One sample per tap and pixel
    took 36 gathers a pixel and scale, ~1,000 SASS instructions a pixel on sm_90 and 32 us on an H200
    at the benchmark shapes. Taps in the zero padding add nothing, rather than 0 times a value that
    may be an Inf."""
    first = linear_tap(y0 - 1, h, H, scale_y)[0]
    rows = tl.minimum(first + tl.arange(0, SPAN), h - 1)  # the rows past the plane's last are never picked
    for dy in range(0, 3):
        tap_row = sample + 3 * dy * plane + (rows * w)[:, None]
        resized = tl.zeros((SPAN, BLOCK_W), acc.dtype)
        for dx in range(0, 3):
            x = xs + (dx - 1)
            i0, i1, w0, w1 = linear_tap(x, w, W, scale_x)
            tap = tap_row + dx * plane
            value = w0[None, :] * tl.load(tap + i0[None, :]) + w1[None, :] * tl.load(tap + i1[None, :])
            resized += tl.where(((x >= 0) & (x < W))[None, :], value, 0.0)
        y = ys + (dy - 1)
        i0, i1, w0, w1 = linear_tap(y, h, H, scale_y)
        top = tl.gather(resized, tl.broadcast_to((i0 - first)[:, None], (BLOCK_H, BLOCK_W)), axis=0)
        bottom = tl.gather(resized, tl.broadcast_to((i1 - first)[:, None], (BLOCK_H, BLOCK_W)), axis=0)
        acc += tl.where(((y >= 0) & (y < H))[:, None], w0[:, None] * top + w1[:, None] * bottom, 0.0)
    return acc


@triton.jit
def _add_scale(acc, r_ptr, h, w, H, W, batch, y0, ys, xs, SPAN: tl.constexpr, BLOCK_H: tl.constexpr,
               BLOCK_W: tl.constexpr):
    """acc + the bilinear samples of a scale's 9 tap planes: separably where the host sized a window
    of SPAN source rows for the scale, else per pixel (SPAN = 0)."""
    scale_y = resize_scale(h, H, acc)
    scale_x = resize_scale(w, W, acc)
    plane = h * w
    sample = r_ptr + tl.cast(batch, tl.int64) * 9 * plane
    if SPAN == 0:
        acc = _add_scale_per_pixel(acc, sample, plane, h, w, H, W, scale_y, scale_x, ys, xs)
    else:
        acc = _add_scale_separable(acc, sample, plane, h, w, H, W, scale_y, scale_x, y0, ys, xs, SPAN, BLOCK_H,
                                   BLOCK_W)
    return acc


@tuned(_TILE_CONFIGS, key=["size_class", "NUM_SCALES"], interpreter={"BLOCK_H": 32, "BLOCK_W": 32})
def forward_kernel(r0_ptr, h0, w0, r1_ptr, h1, w1, r2_ptr, h2, w2, r3_ptr, h3, w3,
                   bias_ptr, logits_ptr, gam_ptr, B, H, W, size_class,
                   NUM_SCALES: tl.constexpr, SPAN0: tl.constexpr, SPAN1: tl.constexpr, SPAN2: tl.constexpr,
                   SPAN3: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Logits and GAM (B, 1, H, W), in (BLOCK_H, BLOCK_W) tiles of one sample, a program a tile; grid:
    the B * cdiv(H, BLOCK_H) rows of tiles, cdiv(W, BLOCK_W) tiles a row, along one axis (2^31 - 1
    programs: the outputs of that many tiles would not fit in memory). `size_class` is the autotuning
    key only. A grid of rows along its second axis (at most 65535 programs) had each program loop over
    rows of tiles, and ptxas held every scale's column taps across that loop in registers (128-202
    a thread, not 59-96) for a loop that ran once at any realistic size.

    r*_ptr: reduced features (B, 9, h, w) in the accumulation type, scales beyond NUM_SCALES unused;
    SPAN*: the source rows of each scale's window (_add_scale_separable), 0 for per-pixel samples.
    """
    column_tiles = tl.cdiv(W, BLOCK_W)
    tiles_per_sample = tl.cdiv(H, BLOCK_H)
    row_tile = tl.program_id(0) // column_tiles
    batch = row_tile // tiles_per_sample
    xs = (tl.program_id(0) - row_tile * column_tiles) * BLOCK_W + tl.arange(0, BLOCK_W)
    y0 = (row_tile - batch * tiles_per_sample) * BLOCK_H
    ys = y0 + tl.arange(0, BLOCK_H)
    acc = tl.zeros((BLOCK_H, BLOCK_W), r0_ptr.dtype.element_ty) + tl.load(bias_ptr).to(r0_ptr.dtype.element_ty)
    acc = _add_scale(acc, r0_ptr, h0, w0, H, W, batch, y0, ys, xs, SPAN0, BLOCK_H, BLOCK_W)
    if NUM_SCALES > 1:
        acc = _add_scale(acc, r1_ptr, h1, w1, H, W, batch, y0, ys, xs, SPAN1, BLOCK_H, BLOCK_W)
    if NUM_SCALES > 2:
        acc = _add_scale(acc, r2_ptr, h2, w2, H, W, batch, y0, ys, xs, SPAN2, BLOCK_H, BLOCK_W)
    if NUM_SCALES > 3:
        acc = _add_scale(acc, r3_ptr, h3, w3, H, W, batch, y0, ys, xs, SPAN3, BLOCK_H, BLOCK_W)
    offsets = tl.cast(batch, tl.int64) * H * W + (ys * W)[:, None] + xs[None, :]
    inside = (ys < H)[:, None] & (xs < W)[None, :]
    tl.store(logits_ptr + offsets, acc.to(logits_ptr.dtype.element_ty), mask=inside)
    tl.store(gam_ptr + offsets, stable_sigmoid(acc).to(gam_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _gather_start(i, low, high, scale):
    """Where the transposed resize of low-resolution indices i starts: the first coordinate P whose
    shifted coordinates may read i (conservative by one, so an approximate division is fine, and one
    more for the shift; tap_weight decides exactly), and the weights with which P - 1 and P read i."""
    first = tl.maximum(tl.floor((i.to(tl.float32) - 0.5) * (high / low) - 0.5).to(tl.int32) - 1, 0) - 1
    return first, tap_weight(first - 1, i, low, high, scale), tap_weight(first, i, low, high, scale)


@triton.jit
def _gather_shifts(acc0, acc1, acc2, weight_before, weight_at, weight_after, value):
    """Adds `value`, read at coordinate p, to the gathers of the shifts d = 0, 1, 2 (coordinates p - 1,
    p, p + 1 reading i with these weights)."""
    return acc0 + weight_before * value, acc1 + weight_at * value, acc2 + weight_after * value


@triton.jit
def _rows_segment(block, grad_logits_ptr, gl_sb, gl_sy, gl_sx, grad_gam_ptr, gg_sb, gg_sy, gg_sx, gam_ptr,
                  out_ptr, h, span, H, W, BLOCK_I: tl.constexpr, BLOCK_M: tl.constexpr):
    """out[b, d, i, X] = sum_P weight(P + d - 1 -> i) dZ[b, P, X] (d = 0, 1, 2) for one tile of (i, X) of
    one sample, where weight(Q -> i) is the weight with which full-resolution row Q (of H) reads row i
    (of h) in the forward resize, 0 for Q outside [0, H); each i sums `span` rows P from a little
    before i * H / h. dZ = dlogits + dG * G * (1 - G), read through the gradients' strides."""
    column_tiles = tl.cdiv(W, BLOCK_M)
    tiles = column_tiles * tl.cdiv(h, BLOCK_I)
    batch = tl.cast(block // tiles, tl.int64)
    xs = (block % tiles % column_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    # A column of the tile, as every per-row value of the loop (the columns pass's per-pixel values alike).
    i = ((block % tiles // column_tiles) * BLOCK_I + tl.arange(0, BLOCK_I))[:, None]
    columns_inside = (xs < W)[None, :]
    gl = grad_logits_ptr + batch * gl_sb + (xs * gl_sx)[None, :]
    gg = grad_gam_ptr + batch * gg_sb + (xs * gg_sx)[None, :]
    g_row = gam_ptr + batch * H * W + xs[None, :]
    acc0 = tl.zeros((BLOCK_I, BLOCK_M), out_ptr.dtype.element_ty)
    acc1 = acc0
    acc2 = acc0
    scale = resize_scale(h, H, acc0)
    # The weights of the three shifted coordinates p - 1, p, p + 1 slide along with p.
    first, weight_before, weight_at = _gather_start(i, h, H, scale)
    for k0 in range(0, span, ROWS_UNROLL):
        for u in tl.static_range(0, ROWS_UNROLL):
            p = first + (k0 + u)
            weight_after = tap_weight(p + 1, i, h, H, scale)
            inside = (p >= 0) & (p < H) & (k0 + u < span) & columns_inside
            g = upcast(tl.load(g_row + p * W, mask=inside, other=0.0))
            dz = upcast(tl.load(gl + p * gl_sy, mask=inside, other=0.0)) \
                + upcast(tl.load(gg + p * gg_sy, mask=inside, other=0.0)) * g * (1.0 - g)
            acc0, acc1, acc2 = _gather_shifts(acc0, acc1, acc2, weight_before, weight_at, weight_after, dz)
            weight_before = weight_at
            weight_at = weight_after
    out = out_ptr + batch * 3 * h * W + i * W + xs[None, :]
    inside = (i < h) & columns_inside
    tl.store(out, acc0, mask=inside)
    tl.store(out + h * W, acc1, mask=inside)
    tl.store(out + 2 * h * W, acc2, mask=inside)


@triton.jit
def _rows_programs(B, h, W, BLOCK_I: tl.constexpr, BLOCK_M: tl.constexpr):
    return B * tl.cdiv(W, BLOCK_M) * tl.cdiv(h, BLOCK_I)


@tuned(_GATHER_CONFIGS, key=["size_class", "NUM_SCALES"], interpreter={"BLOCK_I": 32, "BLOCK_M": 256})
def rows_kernel(grad_logits_ptr, gl_sb, gl_sy, gl_sx, grad_gam_ptr, gg_sb, gg_sy, gg_sx, gam_ptr,
                out0_ptr, h0, span0, out1_ptr, h1, span1, out2_ptr, h2, span2, out3_ptr, h3, span3,
                B, H, W, size_class, NUM_SCALES: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_M: tl.constexpr):
    """The rows pass of every scale's transposed resize: out_v (B, 3, h_v, W) in the accumulation type, from
    dlogits and dG (B, 1, H, W, strides in elements) and G (contiguous); grid: the (i, X) tiles of every
    scale in turn. `size_class` is the autotuning key only."""
    pid = tl.program_id(0)
    end0 = _rows_programs(B, h0, W, BLOCK_I, BLOCK_M)
    end1 = end0 + _rows_programs(B, h1, W, BLOCK_I, BLOCK_M)
    end2 = end1 + _rows_programs(B, h2, W, BLOCK_I, BLOCK_M)
    s, first = program_scale(pid, end0, end1, end2, NUM_SCALES)
    _rows_segment(pid - first, grad_logits_ptr, gl_sb, gl_sy, gl_sx, grad_gam_ptr, gg_sb, gg_sy, gg_sx, gam_ptr,
                  pick(s, out0_ptr, out1_ptr, out2_ptr, out3_ptr, NUM_SCALES), pick(s, h0, h1, h2, h3, NUM_SCALES),
                  pick(s, span0, span1, span2, span3, NUM_SCALES), H, W, BLOCK_I, BLOCK_M)


@triton.jit
def _columns_segment(block, rows_ptr, f_ptr, grad_f_ptr, share_ptr, bias_share_ptr, weight_ptr, channel_offset,
                     C, h, w, plane, span, W, with_bias, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """For one block of one sample's pixels p = (iy, ix) of one scale: the taps D[dy, dx, p] = sum_Q
    weight(Q + dx - 1 -> ix) rows[b, dy, iy, Q] (the columns pass, as in _rows_segment), then
    dF[b, c, p] = sum_t W[c, t] D[t, p], this block's share of dW[c, t] = sum_p F[b, c, p] D[t, p]
    (share_ptr: (programs, C, dx, dy) in 12 slots) and, with_bias, of db = sum_p D[1, 1, p]."""
    batch, pixel, mask = plane_block(block, plane, BLOCK_P)
    ix = (pixel % w)[:, None]  # a column, as every per-pixel value of the loop
    shifts = tl.arange(0, SHIFTS)
    row = rows_ptr + tl.cast(batch, tl.int64) * 3 * h * W + (pixel // w * W)[:, None] + (shifts * h * W)[None, :]
    row_inside = mask[:, None] & (shifts < 3)[None, :]
    acc0 = tl.zeros((BLOCK_P, SHIFTS), rows_ptr.dtype.element_ty)  # [p, dy] for dx = 0, 1, 2
    acc1 = acc0
    acc2 = acc0
    scale = resize_scale(w, W, acc0)
    first, weight_before, weight_at = _gather_start(ix, w, W, scale)
    for k0 in range(0, span, COLUMNS_UNROLL):
        for u in tl.static_range(0, COLUMNS_UNROLL):
            q = first + (k0 + u)
            weight_after = tap_weight(q + 1, ix, w, W, scale)
            value = tl.load(row + q, mask=row_inside & (q >= 0) & (q < W) & (k0 + u < span), other=0.0)
            acc0, acc1, acc2 = _gather_shifts(acc0, acc1, acc2, weight_before, weight_at, weight_after, value)
            weight_before = weight_at
            weight_at = weight_after
    if with_bias:
        tl.store(bias_share_ptr + block, tl.sum(tl.sum(tl.where((shifts == 1)[None, :], acc1, 0.0), axis=1), axis=0))
    sample = tl.cast(batch, tl.int64) * C * plane
    for c0 in range(0, C, BLOCK_C):
        channels = c0 + tl.arange(0, BLOCK_C)
        channel_inside = channels < C
        w_tile = weight_ptr + ((channel_offset + channels) * 9)[:, None] + (shifts * 3)[None, :]
        w_inside = channel_inside[:, None] & (shifts < 3)[None, :]
        w0 = upcast(tl.load(w_tile, mask=w_inside, other=0.0))[:, None, :]  # [c, 1, dy]
        w1 = upcast(tl.load(w_tile + 1, mask=w_inside, other=0.0))[:, None, :]
        w2 = upcast(tl.load(w_tile + 2, mask=w_inside, other=0.0))[:, None, :]
        grad_f = tl.sum(w0 * acc0[None, :, :] + w1 * acc1[None, :, :] + w2 * acc2[None, :, :], axis=2)
        offsets = (channels * plane)[:, None] + pixel[None, :]
        inside = channel_inside[:, None] & mask[None, :]
        tl.store(grad_f_ptr + sample + offsets, grad_f.to(grad_f_ptr.dtype.element_ty), mask=inside)
        f = upcast(tl.load(f_ptr + sample + offsets, mask=inside, other=0.0))[:, :, None]
        share = share_ptr + ((block * C + channels) * SHARE)[:, None] + shifts[None, :]
        tl.store(share, tl.sum(f * acc0[None, :, :], axis=1), mask=w_inside)
        tl.store(share + SHIFTS, tl.sum(f * acc1[None, :, :], axis=1), mask=w_inside)
        tl.store(share + 2 * SHIFTS, tl.sum(f * acc2[None, :, :], axis=1), mask=w_inside)


@tuned([COLUMNS_CONFIG], key=[], interpreter={"BLOCK_P": 256, "BLOCK_C": 8})
def columns_kernel(weight_ptr, bias_share_ptr,
                   rows0_ptr, f0_ptr, gf0_ptr, share0_ptr, c0, h0, w0, p0, span0,
                   rows1_ptr, f1_ptr, gf1_ptr, share1_ptr, c1, h1, w1, p1, span1,
                   rows2_ptr, f2_ptr, gf2_ptr, share2_ptr, c2, h2, w2, p2, span2,
                   rows3_ptr, f3_ptr, gf3_ptr, share3_ptr, c3, h3, w3, p3, span3,
                   B, W, NUM_SCALES: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """The columns pass and the channel gradients of every scale (see _columns_segment); the bias
    shares come from the first scale; p_v = h_v * w_v as in reduce_kernel. Grid: the pixel blocks of
    every scale in turn."""
    s, block = plane_program(B, p0, p1, p2, BLOCK_P, NUM_SCALES)
    _columns_segment(block, pick(s, rows0_ptr, rows1_ptr, rows2_ptr, rows3_ptr, NUM_SCALES),
                     pick(s, f0_ptr, f1_ptr, f2_ptr, f3_ptr, NUM_SCALES),
                     pick(s, gf0_ptr, gf1_ptr, gf2_ptr, gf3_ptr, NUM_SCALES),
                     pick(s, share0_ptr, share1_ptr, share2_ptr, share3_ptr, NUM_SCALES), bias_share_ptr, weight_ptr,
                     pick(s, 0, c0, c0 + c1, c0 + c1 + c2, NUM_SCALES), pick(s, c0, c1, c2, c3, NUM_SCALES),
                     pick(s, h0, h1, h2, h3, NUM_SCALES), pick(s, w0, w1, w2, w3, NUM_SCALES),
                     pick(s, p0, p1, p2, p3, NUM_SCALES), pick(s, span0, span1, span2, span3, NUM_SCALES), W,
                     s == 0, BLOCK_P, BLOCK_C)


@triton.jit
def _sum_shares(share_ptr, c, C, programs, grad_weight_ptr, channel, BLOCK_R: tl.constexpr):
    """dW[channel, t] = the sum over `programs` shares of channel c (of C) of one scale."""
    slots = tl.arange(0, 16)
    total = tl.zeros((BLOCK_R, 16), share_ptr.dtype.element_ty)
    for r0 in range(0, programs, SUM_UNROLL * BLOCK_R):
        for u in tl.static_range(0, SUM_UNROLL):
            r = r0 + u * BLOCK_R + tl.arange(0, BLOCK_R)
            offsets = ((r * C + c) * SHARE)[:, None] + slots[None, :]
            total += tl.load(share_ptr + offsets, mask=(r < programs)[:, None] & (slots < SHARE)[None, :], other=0.0)
    dx = slots // SHIFTS
    dy = slots % SHIFTS
    tl.store(grad_weight_ptr + channel * 9 + dy * 3 + dx, tl.sum(total, axis=0).to(grad_weight_ptr.dtype.element_ty),
             mask=(slots < SHARE) & (dy < 3))


@tuned([SUM_CONFIG], key=[], interpreter={"BLOCK_R": 64})
def sum_kernel(share0_ptr, c0, n0, share1_ptr, c1, n1, share2_ptr, c2, n2, share3_ptr, c3, n3,
               bias_share_ptr, grad_weight_ptr, grad_bias_ptr, NUM_SCALES: tl.constexpr, BLOCK_R: tl.constexpr):
    """dW (1, sum C_v, 3, 3) and db (1,) from columns_kernel's shares (n_v programs of scale v, n_0 bias
    shares); grid: one program per channel, then one for the bias."""
    pid = tl.program_id(0)
    end0 = c0
    end1 = end0 + c1
    end2 = end1 + c2
    end3 = end2 + c3
    if pid < end3:
        s, first = program_scale(pid, end0, end1, end2, NUM_SCALES)
        _sum_shares(pick(s, share0_ptr, share1_ptr, share2_ptr, share3_ptr, NUM_SCALES), pid - first,
                    pick(s, c0, c1, c2, c3, NUM_SCALES), pick(s, n0, n1, n2, n3, NUM_SCALES), grad_weight_ptr, pid,
                    BLOCK_R)
    if pid == end3:
        total = tl.zeros((BLOCK_R,), bias_share_ptr.dtype.element_ty)
        for r0 in range(0, n0, SUM_UNROLL * BLOCK_R):
            for u in tl.static_range(0, SUM_UNROLL):
                r = r0 + u * BLOCK_R + tl.arange(0, BLOCK_R)
                total += tl.load(bias_share_ptr + r, mask=r < n0, other=0.0)
        tl.store(grad_bias_ptr, tl.sum(total, axis=0).to(grad_bias_ptr.dtype.element_ty))
