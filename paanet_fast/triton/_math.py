"""Per-element math shared by the Triton kernels: the Triton twin of csrc/paanet_math.h (same
formulas, same evaluation order, so the Triton, C++ and CUDA kernels agree with ATen to rounding),
and the block layout the kernels share.
"""
import triton
import triton.language as tl


@triton.jit
def upcast(x):
    """The accumulation type of a value: float64 stays float64, every other float becomes float32."""
    if x.dtype == tl.float64:
        y = x
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def exact_div(num, den):
    """IEEE-rounded num / den for two scalars (Triton's float32 `/` may be approximate on GPUs)."""
    if num.dtype == tl.float64:
        q = num / den
    else:
        q = tl.math.div_rn(num, den)
    return q


@triton.jit
def resize_scale(in_size, out_size, like):
    """ATen's in / out ratio of a linear resize with an explicit output size, in `like`'s float type."""
    return exact_div(tl.cast(in_size, like.dtype), tl.cast(out_size, like.dtype))


@triton.jit
def linear_tap(dst, in_size, out_size, scale):
    """Source taps of output coordinates `dst` (an int vector) in a linear resize, align_corners=False.

    src = max((dst + 0.5) * scale - 0.5, 0); i0 = floor(src) (at most in_size - 1), i1 = i0 + 1 clamped.
    Returns (i0, i1, w0, w1). Coordinates outside [0, out_size) - the 3x3 convolution's zero padding -
    get zero weights and in-range indices, so callers load without masks.
    """
    inside = (dst >= 0) & (dst < out_size)
    src = scale * (dst.to(scale.dtype) + 0.5) - 0.5
    src = tl.maximum(src, 0.0)
    i0 = tl.minimum(src.to(tl.int32), in_size - 1)  # src >= 0, so truncation is floor
    i1 = tl.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = tl.minimum(src - i0.to(scale.dtype), 1.0)
    w0 = tl.where(inside, 1.0 - l1, 0.0)
    w1 = tl.where(inside, l1, 0.0)
    return i0, i1, w0, w1


@triton.jit
def tap_weight(dst, src_index, in_size, out_size, scale):
    """The weight with which output coordinate `dst` reads input `src_index` (0 if it does not)."""
    i0, i1, w0, w1 = linear_tap(dst, in_size, out_size, scale)
    return tl.where(i0 == src_index, w0, 0.0) + tl.where(i1 == src_index, w1, 0.0)


@triton.jit
def divide(n, magic, shift):
    """n // d for int32 n in [0, 2^31) and a divisor d given by its (magic, shift) from the host's
    host.divider: a multiply-high, an add and a shift (kernels/common.cuh's Divider) instead of an
    integer division, which Triton compiles to a few dozen instructions per element."""
    n = n.to(tl.uint32)
    return ((tl.umulhi(n, tl.cast(magic, tl.uint32)) + n) >> tl.cast(shift, tl.uint32)).to(tl.int32)


@triton.jit
def stable_sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def plane_blocks(B, plane, BLOCK: tl.constexpr):
    """Programs for B planes of `plane` elements in blocks of BLOCK, no block straddling two planes."""
    return B * tl.cdiv(plane, BLOCK)


@triton.jit
def plane_block(block, plane, BLOCK: tl.constexpr):
    """Plane (sample), in-plane indices (int32) and mask of block `block` of plane_blocks."""
    blocks_per_plane = tl.cdiv(plane, BLOCK)
    index = (block % blocks_per_plane) * BLOCK + tl.arange(0, BLOCK)
    return block // blocks_per_plane, index, index < plane


@triton.jit
def program_scale(pid, end0, end1, end2, NUM_SCALES: tl.constexpr):
    """The scale s of program `pid` of a grid laid out scale after scale (scale s's programs end at
    end_s, the last scale's at the grid's end), and its first program. With pick, a kernel runs every
    scale through one copy of its body (compiled once, not once a scale)."""
    s = 0
    if NUM_SCALES > 1:
        s = (pid >= end0).to(tl.int32)
    if NUM_SCALES > 2:
        s += (pid >= end1).to(tl.int32)
    if NUM_SCALES > 3:
        s += (pid >= end2).to(tl.int32)
    return s, pick(s, 0, end0, end1, end2, NUM_SCALES)


@triton.jit
def plane_program(B, p0, p1, p2, BLOCK: tl.constexpr, NUM_SCALES: tl.constexpr):
    """(scale, block of that scale) of this program, in a grid of every scale's plane_blocks (planes of
    p_v elements) laid out scale after scale."""
    pid = tl.program_id(0)
    end0 = plane_blocks(B, p0, BLOCK)
    end1 = end0 + plane_blocks(B, p1, BLOCK)
    end2 = end1 + plane_blocks(B, p2, BLOCK)
    s, first = program_scale(pid, end0, end1, end2, NUM_SCALES)
    return s, pid - first


@triton.jit
def pick(s, v0, v1, v2, v3, NUM_SCALES: tl.constexpr):
    """v_s, for a scale s < NUM_SCALES <= 4 (the values of the others are never read)."""
    v = v0
    if NUM_SCALES > 1:
        v = tl.where(s == 1, v1, v)
    if NUM_SCALES > 2:
        v = tl.where(s == 2, v2, v)
    if NUM_SCALES > 3:
        v = tl.where(s == 3, v3, v)
    return v
