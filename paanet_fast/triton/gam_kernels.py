"""Triton kernels of gam_multiply (design section 2.2).

Forward and the first backward kernel run every scale in one launch, multi-tensor-apply style:
the programs are laid out scale after scale, and each computes the pooled GAM of its
low-resolution pixels on the fly (the pooled map is never stored) before looping over channels.
The second backward kernel spreads the per-window gradients back over the GAM, all scales at once.
Plain tensors are contiguous, NCHW.
"""
import triton
import triton.language as tl

from ._math import upcast
from ._runtime import tuned

_PIXEL_CONFIGS = [  # low-resolution pixels per program (each loops over its window and its channels)
    triton.Config({"BLOCK": 256}, num_warps=4),
    triton.Config({"BLOCK": 128}, num_warps=4),
    triton.Config({"BLOCK": 512}, num_warps=8),
]
_ELEMENTWISE_CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 256}, num_warps=2),
    triton.Config({"BLOCK": 2048}, num_warps=8),
]


# Columns of a GAM window row read at once: contiguous loads, and few loop trips in the interpreter.
WINDOW_CHUNK = tl.constexpr(8)


@triton.jit
def _attention(gam_ptr, batch, y, x, mask, H, W, sy, sx, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """a at low-resolution pixels (batch, y, x): the mean of their sy x sx GAM window, or 1 - it."""
    row = gam_ptr + (batch * H + y * sy) * W + x * sx  # batch, y and x are int64 (see _pixels)
    chunk = tl.arange(0, WINDOW_CHUNK)
    total = upcast(tl.zeros([BLOCK, WINDOW_CHUNK], gam_ptr.dtype.element_ty))
    for i in range(0, sy):
        for j in range(0, sx, WINDOW_CHUNK):
            columns = j + chunk
            total += upcast(tl.load(row[:, None] + columns[None, :],
                                    mask=mask[:, None] & (columns < sx)[None, :], other=0.0))
        row += W
    mean = tl.sum(total, axis=1) / tl.cast(sy * sx, total.dtype)
    if REVERSE:
        mean = 1.0 - mean
    return mean


@triton.jit
def _pixel_count(B, h, w):
    """B * h * w low-resolution pixels, in int64."""
    return tl.cast(B, tl.int64) * h * w


@triton.jit
def _pixels(block, B, h, w, BLOCK: tl.constexpr):
    """Flat index, mask, batch, in-plane offset, row and column of this block's low-resolution pixels,
    all int64: a tensor may hold 2^31 elements."""
    offsets = tl.cast(block, tl.int64) * BLOCK + tl.arange(0, BLOCK)
    plane = tl.cast(h, tl.int64) * w
    mask = offsets < B * plane
    pixel = offsets % plane
    return offsets, mask, offsets // plane, pixel, pixel // w, pixel % w


@triton.jit
def _forward_segment(block, f_ptr, out_ptr, C, h, w, gam_ptr, B, H, W,
                     REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """out = f * a for one block of one scale's pixels (all channels)."""
    offsets, mask, batch, pixel, y, x = _pixels(block, B, h, w, BLOCK)
    a = _attention(gam_ptr, batch, y, x, mask, H, W, H // h, W // w, REVERSE, BLOCK)
    plane = tl.cast(h, tl.int64) * w
    base = batch * C * plane + pixel
    for c in range(0, C):
        f = upcast(tl.load(f_ptr + base + c * plane, mask=mask))
        tl.store(out_ptr + base + c * plane, (f * a).to(out_ptr.dtype.element_ty), mask=mask)


@tuned(_PIXEL_CONFIGS, key=["B", "H", "W", "NUM_SCALES"], interpreter={"BLOCK": 1024})
def forward_kernel(gam_ptr,
                   f0_ptr, out0_ptr, c0, h0, w0, f1_ptr, out1_ptr, c1, h1, w1,
                   f2_ptr, out2_ptr, c2, h2, w2, f3_ptr, out3_ptr, c3, h3, w3,
                   B, H, W, NUM_SCALES: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """P_v = F_v * a_v for NUM_SCALES <= 4 scales (the arguments of the others are never read);
    grid: the blocks of every scale, scale after scale."""
    pid = tl.program_id(0)
    end0 = tl.cdiv(_pixel_count(B, h0, w0), BLOCK)
    end1 = end0 + tl.cdiv(_pixel_count(B, h1, w1), BLOCK)
    end2 = end1 + tl.cdiv(_pixel_count(B, h2, w2), BLOCK)
    if pid < end0:
        _forward_segment(pid, f0_ptr, out0_ptr, c0, h0, w0, gam_ptr, B, H, W, REVERSE, BLOCK)
    if NUM_SCALES > 1:
        if (pid >= end0) & (pid < end1):
            _forward_segment(pid - end0, f1_ptr, out1_ptr, c1, h1, w1, gam_ptr, B, H, W, REVERSE, BLOCK)
    if NUM_SCALES > 2:
        if (pid >= end1) & (pid < end2):
            _forward_segment(pid - end1, f2_ptr, out2_ptr, c2, h2, w2, gam_ptr, B, H, W, REVERSE, BLOCK)
    if NUM_SCALES > 3:
        if pid >= end2:
            _forward_segment(pid - end2, f3_ptr, out3_ptr, c3, h3, w3, gam_ptr, B, H, W, REVERSE, BLOCK)


@triton.jit
def _backward_segment(block, f_ptr, grad_out_ptr, grad_f_ptr, grad_pool_ptr, C, h, w, gam_ptr, B, H, W,
                      REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """dF = dP * a and the gradient of each GAM window's pixels, sum_c dP * F * (+-1) / (sy * sx)."""
    offsets, mask, batch, pixel, y, x = _pixels(block, B, h, w, BLOCK)
    sy = H // h
    sx = W // w
    a = _attention(gam_ptr, batch, y, x, mask, H, W, sy, sx, REVERSE, BLOCK)
    plane = tl.cast(h, tl.int64) * w
    base = batch * C * plane + pixel
    grad_a = tl.zeros_like(a)
    for c in range(0, C):
        grad_out = upcast(tl.load(grad_out_ptr + base + c * plane, mask=mask))
        f = upcast(tl.load(f_ptr + base + c * plane, mask=mask))
        tl.store(grad_f_ptr + base + c * plane, (grad_out * a).to(grad_f_ptr.dtype.element_ty), mask=mask)
        grad_a += grad_out * f
    if REVERSE:
        grad_a = -grad_a
    tl.store(grad_pool_ptr + offsets, grad_a / tl.cast(sy * sx, grad_a.dtype), mask=mask)


@tuned(_PIXEL_CONFIGS, key=["B", "H", "W", "NUM_SCALES"], interpreter={"BLOCK": 1024})
def backward_kernel(gam_ptr,
                    f0_ptr, g0_ptr, gf0_ptr, gp0_ptr, c0, h0, w0, f1_ptr, g1_ptr, gf1_ptr, gp1_ptr, c1, h1, w1,
                    f2_ptr, g2_ptr, gf2_ptr, gp2_ptr, c2, h2, w2, f3_ptr, g3_ptr, gf3_ptr, gp3_ptr, c3, h3, w3,
                    B, H, W, NUM_SCALES: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """For NUM_SCALES <= 4 scales: dF_v (like F_v) and the per-window GAM gradient (B, h_v, w_v) in the
    accumulation type; grid as forward_kernel's."""
    pid = tl.program_id(0)
    end0 = tl.cdiv(_pixel_count(B, h0, w0), BLOCK)
    end1 = end0 + tl.cdiv(_pixel_count(B, h1, w1), BLOCK)
    end2 = end1 + tl.cdiv(_pixel_count(B, h2, w2), BLOCK)
    if pid < end0:
        _backward_segment(pid, f0_ptr, g0_ptr, gf0_ptr, gp0_ptr, c0, h0, w0, gam_ptr, B, H, W, REVERSE, BLOCK)
    if NUM_SCALES > 1:
        if (pid >= end0) & (pid < end1):
            _backward_segment(pid - end0, f1_ptr, g1_ptr, gf1_ptr, gp1_ptr, c1, h1, w1, gam_ptr, B, H, W,
                              REVERSE, BLOCK)
    if NUM_SCALES > 2:
        if (pid >= end1) & (pid < end2):
            _backward_segment(pid - end1, f2_ptr, g2_ptr, gf2_ptr, gp2_ptr, c2, h2, w2, gam_ptr, B, H, W,
                              REVERSE, BLOCK)
    if NUM_SCALES > 3:
        if pid >= end2:
            _backward_segment(pid - end2, f3_ptr, g3_ptr, gf3_ptr, gp3_ptr, c3, h3, w3, gam_ptr, B, H, W,
                              REVERSE, BLOCK)


@triton.jit
def _window_grad(grad_pool_ptr, h, w, H, W, batch, y, x, mask):
    """The per-window gradient of scale (h, w) read at full-resolution pixels (batch, y, x)."""
    return tl.load(grad_pool_ptr + (batch * h + y // (H // h)) * w + x // (W // w), mask=mask, other=0.0)


@tuned(_ELEMENTWISE_CONFIGS, key=["n"], interpreter={"BLOCK": 4096})
def gam_grad_kernel(gp0_ptr, h0, w0, gp1_ptr, h1, w1, gp2_ptr, h2, w2, gp3_ptr, h3, w3, out_ptr, H, W, n,
                    NUM_SCALES: tl.constexpr, BLOCK: tl.constexpr):
    """dG (B, 1, H, W), n = B * H * W: the sum over scales of the gradient of the window holding each pixel."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = offsets % W
    row = offsets // W
    y = row % H
    batch = row // H  # not offsets // (H * W): that product is int32
    total = _window_grad(gp0_ptr, h0, w0, H, W, batch, y, x, mask)
    if NUM_SCALES > 1:
        total += _window_grad(gp1_ptr, h1, w1, H, W, batch, y, x, mask)
    if NUM_SCALES > 2:
        total += _window_grad(gp2_ptr, h2, w2, H, W, batch, y, x, mask)
    if NUM_SCALES > 3:
        total += _window_grad(gp3_ptr, h3, w3, H, W, batch, y, x, mask)
    tl.store(out_ptr + offsets, total.to(out_ptr.dtype.element_ty), mask=mask)
