"""Triton kernels of gam_multiply (design section 2.2).

Forward and the first backward kernel run every scale in one launch, multi-tensor-apply style:
the programs are laid out scale after scale, each taking one block of one sample's low-resolution
pixels, computing their pooled GAM on the fly (the pooled map is never stored), then streaming
the channels in (pixels, channels) tiles, so that a whole tile's loads are in flight at once
(Triton knows nothing of aliasing and would otherwise wait for each channel's store before the
next channel's load). The second backward kernel spreads the per-window gradients back over the
GAM, all scales at once. Where every window's sides are powers of two (PAANet's strides),
`region_kernel` runs either direction instead: one window of the coarsest scale per program, with
every scale's pixels inside it, reading its GAM once and writing P (forward), or dF and dG
(backward, one launch instead of two), there. Plain tensors are contiguous, NCHW; offsets within
one sample are int32 (the host checks that a sample fits), the sample's own offset int64.

Each kernel has one configuration, not an autotuned choice: the window means and the channel sums
are reductions whose order follows the tile layout, so a tuned choice could change the last bits
of the results from one run (or one tuning) to the next.
"""
import triton
import triton.language as tl

from ._math import divide, pick, plane_block, plane_program, upcast
from ._runtime import tuned

# 64 pixels per program: at the model's shapes (B=8, 32 channels at strides 4-32 of 256x256) 680
# programs, five per SM of a 132-SM card.
PIXEL_CONFIG = triton.Config({"BLOCK": 64}, num_warps=4)
ROW_CONFIG = triton.Config({"BLOCK": 256}, num_warps=2)  # full-resolution columns per program

# Channels per tile: one trip for the model's 32-channel maps.
CHANNEL_TILE = tl.constexpr(16)
# A GAM window is read in (2 rows x 8 columns) chunks, all of a chunk's loads in flight at once: the
# loop's trips wait on each other (the sum carries over), so a 32 x 32 window takes 64 trips, not 128
# (4 rows would halve that again at 110 registers in float32, 168 in float64).
WINDOW_ROWS = tl.constexpr(2)
WINDOW_COLUMNS = tl.constexpr(8)


@triton.jit
def _attention(gam_ptr, batch, pixel, mask, w, H, W, REVERSE: tl.constexpr, BLOCK: tl.constexpr, sy, sx):
    """a at the low-resolution pixels `pixel` of sample `batch`: the mean of their sy x sx GAM window,
    or 1 - it."""
    corner = gam_ptr + tl.cast(batch, tl.int64) * H * W + (pixel // w) * sy * W + (pixel % w) * sx
    chunk = tl.arange(0, WINDOW_ROWS * WINDOW_COLUMNS)
    chunk_row = chunk // WINDOW_COLUMNS
    chunk_column = chunk % WINDOW_COLUMNS
    total = upcast(tl.zeros([BLOCK, WINDOW_ROWS * WINDOW_COLUMNS], gam_ptr.dtype.element_ty))
    for i in range(0, sy, WINDOW_ROWS):
        for j in range(0, sx, WINDOW_COLUMNS):
            rows = i + chunk_row
            columns = j + chunk_column
            total += upcast(tl.load(corner[:, None] + (rows * W + columns)[None, :],
                                    mask=mask[:, None] & ((rows < sy) & (columns < sx))[None, :], other=0.0))
    mean = tl.sum(total, axis=1) / tl.cast(sy * sx, total.dtype)
    if REVERSE:
        mean = 1.0 - mean
    return mean


@triton.jit
def _channel_tile(c0, C, pixel, mask, plane):
    """In-sample offsets (BLOCK, CHANNEL_TILE) of channels c0.. at `pixel`, and their mask."""
    channels = c0 + tl.arange(0, CHANNEL_TILE)
    return pixel[:, None] + (channels * plane)[None, :], mask[:, None] & (channels < C)[None, :]


@triton.jit
def _forward_segment(block, f_ptr, out_ptr, C, h, w, plane, gam_ptr, H, W, REVERSE: tl.constexpr,
                     BLOCK: tl.constexpr):
    """out = f * a for one block of one sample's pixels of one scale (all channels); plane = h * w."""
    batch, pixel, mask = plane_block(block, plane, BLOCK)
    a = _attention(gam_ptr, batch, pixel, mask, w, H, W, REVERSE, BLOCK, H // h, W // w)
    sample = tl.cast(batch, tl.int64) * C * plane
    for c0 in range(0, C, CHANNEL_TILE):
        offsets, inside = _channel_tile(c0, C, pixel, mask, plane)
        f = upcast(tl.load(f_ptr + sample + offsets, mask=inside))
        tl.store(out_ptr + sample + offsets, (f * a[:, None]).to(out_ptr.dtype.element_ty), mask=inside)


@tuned([PIXEL_CONFIG], key=[], interpreter={"BLOCK": 1024})
def forward_kernel(gam_ptr,
                   f0_ptr, out0_ptr, c0, h0, w0, p0, f1_ptr, out1_ptr, c1, h1, w1, p1,
                   f2_ptr, out2_ptr, c2, h2, w2, p2, f3_ptr, out3_ptr, c3, h3, w3, p3,
                   B, H, W, NUM_SCALES: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """P_v = F_v * a_v for NUM_SCALES <= 4 scales (the arguments of the others are never read);
    grid: the blocks of every scale, scale after scale. p_v = h_v * w_v: an argument of its own, so
    that Triton knows when every plane is a multiple of 16 (the 16-byte loads and stores)."""
    s, block = plane_program(B, p0, p1, p2, BLOCK, NUM_SCALES)
    _forward_segment(block, pick(s, f0_ptr, f1_ptr, f2_ptr, f3_ptr, NUM_SCALES),
                     pick(s, out0_ptr, out1_ptr, out2_ptr, out3_ptr, NUM_SCALES), pick(s, c0, c1, c2, c3, NUM_SCALES),
                     pick(s, h0, h1, h2, h3, NUM_SCALES), pick(s, w0, w1, w2, w3, NUM_SCALES),
                     pick(s, p0, p1, p2, p3, NUM_SCALES), gam_ptr, H, W, REVERSE, BLOCK)


@triton.jit
def _backward_segment(block, f_ptr, grad_out_ptr, grad_f_ptr, grad_pool_ptr, C, h, w, plane, gam_ptr, H, W,
                      REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """dF = dP * a and the gradient of each GAM window's pixels, sum_c dP * F * (+-1) / (sy * sx)."""
    batch, pixel, mask = plane_block(block, plane, BLOCK)
    sy = H // h
    sx = W // w
    a = _attention(gam_ptr, batch, pixel, mask, w, H, W, REVERSE, BLOCK, sy, sx)
    sample = tl.cast(batch, tl.int64) * C * plane
    grad_a = tl.zeros_like(a)
    for c0 in range(0, C, CHANNEL_TILE):
        offsets, inside = _channel_tile(c0, C, pixel, mask, plane)
        grad_out = upcast(tl.load(grad_out_ptr + sample + offsets, mask=inside, other=0.0))
        f = upcast(tl.load(f_ptr + sample + offsets, mask=inside, other=0.0))
        tl.store(grad_f_ptr + sample + offsets, (grad_out * a[:, None]).to(grad_f_ptr.dtype.element_ty), mask=inside)
        grad_a += tl.sum(grad_out * f, axis=1)
    if REVERSE:
        grad_a = -grad_a
    tl.store(grad_pool_ptr + tl.cast(batch, tl.int64) * plane + pixel, grad_a / tl.cast(sy * sx, grad_a.dtype),
             mask=mask)


@tuned([PIXEL_CONFIG], key=[], interpreter={"BLOCK": 1024})
def backward_kernel(gam_ptr,
                    f0_ptr, g0_ptr, gf0_ptr, gp0_ptr, c0, h0, w0, p0, f1_ptr, g1_ptr, gf1_ptr, gp1_ptr, c1, h1, w1, p1,
                    f2_ptr, g2_ptr, gf2_ptr, gp2_ptr, c2, h2, w2, p2, f3_ptr, g3_ptr, gf3_ptr, gp3_ptr, c3, h3, w3, p3,
                    B, H, W, NUM_SCALES: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """For NUM_SCALES <= 4 scales: dF_v (like F_v) and the per-window GAM gradient (B, h_v, w_v) in the
    accumulation type; grid and p_v as forward_kernel's."""
    s, block = plane_program(B, p0, p1, p2, BLOCK, NUM_SCALES)
    _backward_segment(block, pick(s, f0_ptr, f1_ptr, f2_ptr, f3_ptr, NUM_SCALES),
                      pick(s, g0_ptr, g1_ptr, g2_ptr, g3_ptr, NUM_SCALES),
                      pick(s, gf0_ptr, gf1_ptr, gf2_ptr, gf3_ptr, NUM_SCALES),
                      pick(s, gp0_ptr, gp1_ptr, gp2_ptr, gp3_ptr, NUM_SCALES), pick(s, c0, c1, c2, c3, NUM_SCALES),
                      pick(s, h0, h1, h2, h3, NUM_SCALES), pick(s, w0, w1, w2, w3, NUM_SCALES),
                      pick(s, p0, p1, p2, p3, NUM_SCALES), gam_ptr, H, W, REVERSE, BLOCK)


@triton.jit
def _window_grad(grad_pool_ptr, h, w, magic, shift, H, batch, y, xs, mask):
    """The per-window gradient of scale (h, w) read at full-resolution row y, columns xs of sample
    `batch`; (magic, shift): the divisor W / w of the columns (see divide)."""
    window_row = grad_pool_ptr + (tl.cast(batch, tl.int64) * h + y // (H // h)) * w
    return tl.load(window_row + divide(xs, magic, shift), mask=mask, other=0.0)


@tuned([ROW_CONFIG], key=[], interpreter={"BLOCK": 4096})
def gam_grad_kernel(gp0_ptr, h0, w0, m0, s0, gp1_ptr, h1, w1, m1, s1, gp2_ptr, h2, w2, m2, s2,
                    gp3_ptr, h3, w3, m3, s3, out_ptr, B, H, W, NUM_SCALES: tl.constexpr, BLOCK: tl.constexpr):
    """dG (B, 1, H, W): the sum over scales of the gradient of the window holding each pixel;
    (m_v, s_v): the divider of W / w_v; grid: cdiv(W, BLOCK) programs per row of the B * H rows."""
    pid = tl.program_id(0)
    blocks_per_row = tl.cdiv(W, BLOCK)
    row = pid // blocks_per_row
    xs = (pid % blocks_per_row) * BLOCK + tl.arange(0, BLOCK)
    mask = xs < W
    batch = row // H
    y = row % H
    total = _window_grad(gp0_ptr, h0, w0, m0, s0, H, batch, y, xs, mask)
    if NUM_SCALES > 1:
        total += _window_grad(gp1_ptr, h1, w1, m1, s1, H, batch, y, xs, mask)
    if NUM_SCALES > 2:
        total += _window_grad(gp2_ptr, h2, w2, m2, s2, H, batch, y, xs, mask)
    if NUM_SCALES > 3:
        total += _window_grad(gp3_ptr, h3, w3, m3, s3, H, batch, y, xs, mask)
    tl.store(out_ptr + tl.cast(row, tl.int64) * W + xs, total.to(out_ptr.dtype.element_ty), mask=mask)


# The region kernel: one program per region of the GAM that is one window of the
# coarsest scale (in each axis), when every window's sides are powers of two and a region has at most
# REGION_PIXELS pixels (32 x 32: PAANet's strides 4 to 32 at any input size). The region's GAM (and
# dG) tiles and each scale's (channels, pixels) tile stay in registers: TILE_ELEMENTS at most.
REGION_CONFIG = triton.Config({}, num_warps=4)
REGION_PIXELS = 1024
TILE_ELEMENTS = 2048


@triton.jit
def _region_scale(total, g, x_ptr, f_ptr, y_ptr, C, h, w, batch, ry, rx, BACKWARD: tl.constexpr,
                  REVERSE: tl.constexpr, RY: tl.constexpr, RX: tl.constexpr, SY: tl.constexpr, SX: tl.constexpr,
                  CH: tl.constexpr):
    """One scale of a region. g: the region's GAM (RY, RX); the scale's windows SY x SX, so (RY / SY,
    RX / SX) of its pixels lie in the region. Writes y = x * a there (CH channels a tile): P from F
    forward, dF from dP backward. Backward, also returns total (RY, RX) plus each pixel's window
    gradient, sum_c dP F (+-1) / (SY SX), over its window (forward: total as it came)."""
    NY: tl.constexpr = RY // SY
    NX: tl.constexpr = RX // SX
    area: tl.constexpr = SY * SX
    a = tl.sum(tl.sum(tl.reshape(g, (NY, SY, NX, SX)), axis=3), axis=1) / area
    if REVERSE:
        a = 1.0 - a
    pixel = ((ry * NY + tl.arange(0, NY)) * w)[:, None] + (rx * NX + tl.arange(0, NX))[None, :]
    plane = h * w
    sample = tl.cast(batch, tl.int64) * C * plane
    grad_a = tl.zeros((NY, NX), a.dtype)
    for c0 in range(0, C, CH):
        channels = c0 + tl.arange(0, CH)
        offsets = (channels * plane)[:, None, None] + pixel[None, :, :]
        inside = (channels < C)[:, None, None]
        x = upcast(tl.load(x_ptr + sample + offsets, mask=inside, other=0.0))
        if BACKWARD:  # loaded before the store, which Triton would otherwise wait for
            f = upcast(tl.load(f_ptr + sample + offsets, mask=inside, other=0.0))
        tl.store(y_ptr + sample + offsets, (x * a[None, :, :]).to(y_ptr.dtype.element_ty), mask=inside)
        if BACKWARD:
            grad_a += tl.sum(x * f, axis=0)
    if not BACKWARD:
        return total
    if REVERSE:
        grad_a = -grad_a
    spread = tl.broadcast_to((grad_a / area)[:, None, :, None], (NY, SY, NX, SX))
    return total + tl.reshape(spread, (RY, RX))


@tuned([REGION_CONFIG], key=[], interpreter={})
def region_kernel(gam_ptr, grad_gam_ptr,
                  x0_ptr, f0_ptr, y0_ptr, c0, h0, w0, x1_ptr, f1_ptr, y1_ptr, c1, h1, w1,
                  x2_ptr, f2_ptr, y2_ptr, c2, h2, w2, x3_ptr, f3_ptr, y3_ptr, c3, h3, w3, H, W,
                  NUM_SCALES: tl.constexpr, BACKWARD: tl.constexpr, REVERSE: tl.constexpr,
                  RY: tl.constexpr, RX: tl.constexpr,
                  SY0: tl.constexpr, SX0: tl.constexpr, CH0: tl.constexpr,
                  SY1: tl.constexpr, SX1: tl.constexpr, CH1: tl.constexpr,
                  SY2: tl.constexpr, SX2: tl.constexpr, CH2: tl.constexpr,
                  SY3: tl.constexpr, SX3: tl.constexpr, CH3: tl.constexpr):
    """y_v = x_v * a_v (like F_v) for NUM_SCALES <= 4 scales of windows SY_v x SX_v: forward x = F
    and y = P; backward x = dP and y = dF, and dG (B, 1, H, W) into grad_gam_ptr from f_v = F_v (both
    unused forward). One program per RY x RX region of one sample (RY = max SY_v, RX = max SX_v);
    grid: B * (H / RY) * (W / RX), the regions of each sample row by row. Backward, the scales'
    window gradients are added in scale order, each spread over its window's pixels (no per-window
    buffer, no second launch)."""
    pid = tl.program_id(0)
    regions_x = W // RX
    regions = (H // RY) * regions_x
    batch = pid // regions
    ry = pid % regions // regions_x
    rx = pid % regions % regions_x
    offsets = tl.cast(batch, tl.int64) * H * W + ((ry * RY + tl.arange(0, RY)) * W)[:, None] \
        + (rx * RX + tl.arange(0, RX))[None, :]
    g = upcast(tl.load(gam_ptr + offsets))
    total = tl.zeros((RY, RX), g.dtype)
    total = _region_scale(total, g, x0_ptr, f0_ptr, y0_ptr, c0, h0, w0, batch, ry, rx, BACKWARD, REVERSE, RY, RX,
                          SY0, SX0, CH0)
    if NUM_SCALES > 1:
        total = _region_scale(total, g, x1_ptr, f1_ptr, y1_ptr, c1, h1, w1, batch, ry, rx, BACKWARD, REVERSE, RY,
                              RX, SY1, SX1, CH1)
    if NUM_SCALES > 2:
        total = _region_scale(total, g, x2_ptr, f2_ptr, y2_ptr, c2, h2, w2, batch, ry, rx, BACKWARD, REVERSE, RY,
                              RX, SY2, SX2, CH2)
    if NUM_SCALES > 3:
        total = _region_scale(total, g, x3_ptr, f3_ptr, y3_ptr, c3, h3, w3, batch, ry, rx, BACKWARD, REVERSE, RY,
                              RX, SY3, SX3, CH3)
    if BACKWARD:
        tl.store(grad_gam_ptr + offsets, total.to(grad_gam_ptr.dtype.element_ty))
