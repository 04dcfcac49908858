// Per-pixel and per-window arithmetic of the two PAANet operators, shared by the CPU kernels
// (csrc/cpu) and the CUDA kernels (kernels/), so the CPU tests exercise the math the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PAANET_HD __host__ __device__ __forceinline__
#else
#define PAANET_HD inline
#endif

namespace paanet {

// One output coordinate of a 1-D linear resize: it reads input i0 with weight w0 and i1 with w1.
template <typename acc_t, typename index_t = int64_t>
struct LinearTap {
  index_t i0;
  index_t i1;
  acc_t w0;
  acc_t w1;
};

// The tap at source coordinate `src` of an axis of in_size inputs: neighbours floor(src) and
// floor(src) + 1, clamped to the axis, src clamped below at 0.
template <typename acc_t, typename index_t>
PAANET_HD LinearTap<acc_t, index_t> tap_at_source(acc_t src, index_t in_size) {
  if (src < static_cast<acc_t>(0)) src = static_cast<acc_t>(0);
  index_t i0 = static_cast<index_t>(src);  // src >= 0, so truncation is floor
  if (i0 > in_size - 1) i0 = in_size - 1;
  const index_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  acc_t l1 = src - static_cast<acc_t>(i0);
  if (l1 > static_cast<acc_t>(1)) l1 = static_cast<acc_t>(1);
  return {i0, i1, static_cast<acc_t>(1) - l1, l1};
}

// PyTorch's bilinear resize with align_corners=False and an explicit output size:
// src = max((dst + 0.5) * in / out - 0.5, 0), neighbours floor(src) and floor(src) + 1 (clamped).
// Evaluated in the same order as ATen so that float64 results agree to rounding.
template <typename acc_t>
PAANET_HD LinearTap<acc_t> linear_tap(int64_t dst, int64_t in_size, int64_t out_size) {
  const acc_t scale = static_cast<acc_t>(in_size) / static_cast<acc_t>(out_size);
  return tap_at_source<acc_t, int64_t>(scale * (static_cast<acc_t>(dst) + static_cast<acc_t>(0.5)) - static_cast<acc_t>(0.5),
                                       in_size);
}

// The scale in / out of a resize, computed once on the host (as ATen does) for resize_tap.
template <typename acc_t>
PAANET_HD acc_t resize_scale(int64_t in_size, int64_t out_size) {
  return static_cast<acc_t>(in_size) / static_cast<acc_t>(out_size);
}

PAANET_HD float fused_multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
PAANET_HD double fused_multiply_add(double a, double b, double c) { return fma(a, b, c); }

// linear_tap for the CUDA kernels: 32-bit indices, the scale from resize_scale, and the source
// coordinate as one explicit fused multiply-add, so that the host (which sizes the shared-memory
// windows) and the device (which fills them) round it alike whatever either compiler contracts.
// It differs from linear_tap by at most one rounding of src, where the resize is continuous.
template <typename acc_t>
PAANET_HD LinearTap<acc_t, int32_t> resize_tap(int32_t dst, int32_t in_size, acc_t scale) {
  const acc_t centre = static_cast<acc_t>(dst) + static_cast<acc_t>(0.5);
  return tap_at_source<acc_t, int32_t>(fused_multiply_add(scale, centre, static_cast<acc_t>(-0.5)), in_size);
}

// A range [lo, hi) of output coordinates that contains every output whose LinearTap reads input
// index `src_index` (as i0 or i1). Conservative: callers recompute the tap and compare, which
// turns the transposed resize into a gather (deterministic, no atomics).
PAANET_HD void linear_tap_sources(int64_t src_index, int64_t in_size, int64_t out_size,
                                  int64_t* lo, int64_t* hi) {
  const double inv_scale = static_cast<double>(out_size) / static_cast<double>(in_size);
  int64_t a = static_cast<int64_t>(floor((static_cast<double>(src_index) - 0.5) * inv_scale - 0.5)) - 1;
  int64_t b = static_cast<int64_t>(ceil((static_cast<double>(src_index) + 1.5) * inv_scale - 0.5)) + 2;
  if (src_index == 0) a = 0;                    // clamped sources all read index 0
  if (src_index == in_size - 1) b = out_size;   // and the last index
  *lo = a < 0 ? 0 : a;
  *hi = b > out_size ? out_size : b;
}

// The output coordinates [lo, hi) whose resize_tap reads input `src_index` (as i0 or i1): the taps
// never move backwards, so they are a range. Estimated from the inverse scale, then settled
// against resize_tap itself: a few tap evaluations, no division, and exact.
template <typename acc_t>
PAANET_HD void resize_tap_sources(int32_t src_index, int32_t in_size, int32_t out_size, acc_t scale,
                                  acc_t inv_scale, int32_t* lo, int32_t* hi) {
  const acc_t out = static_cast<acc_t>(out_size);
  acc_t first = (static_cast<acc_t>(src_index) - static_cast<acc_t>(0.5)) * inv_scale - static_cast<acc_t>(0.5);
  int32_t a = static_cast<int32_t>(first < static_cast<acc_t>(0) ? static_cast<acc_t>(0) : (first > out ? out : first));
  while (a > 0 && resize_tap(a - 1, in_size, scale).i1 >= src_index) --a;
  while (a < out_size && resize_tap(a, in_size, scale).i1 < src_index) ++a;
  acc_t last = (static_cast<acc_t>(src_index) + static_cast<acc_t>(1.5)) * inv_scale - static_cast<acc_t>(0.5);
  int32_t b = static_cast<int32_t>(last < static_cast<acc_t>(0) ? static_cast<acc_t>(0) : (last > out ? out : last));
  if (b < a) b = a;
  while (b > a && resize_tap(b - 1, in_size, scale).i0 > src_index) --b;
  while (b < out_size && resize_tap(b, in_size, scale).i0 <= src_index) ++b;
  *lo = a;
  *hi = b;
}

// The weight with which output coordinate `dst` reads input `src_index` (0 if it does not).
template <typename acc_t, typename index_t>
PAANET_HD acc_t linear_tap_weight(const LinearTap<acc_t, index_t>& t, index_t src_index) {
  acc_t w = static_cast<acc_t>(0);
  if (t.i0 == src_index) w += t.w0;
  if (t.i1 == src_index) w += t.w1;
  return w;
}

// Bilinear sample of a 2-D plane (row stride `ry`, column stride `rx`) at separable taps ty, tx.
template <typename acc_t, typename scalar_t, typename index_t>
PAANET_HD acc_t bilinear_sample(const scalar_t* plane, index_t ry, index_t rx,
                                const LinearTap<acc_t, index_t>& ty, const LinearTap<acc_t, index_t>& tx) {
  const scalar_t* r0 = plane + ty.i0 * ry;
  const scalar_t* r1 = plane + ty.i1 * ry;
  return ty.w0 * (tx.w0 * static_cast<acc_t>(r0[tx.i0 * rx]) + tx.w1 * static_cast<acc_t>(r0[tx.i1 * rx])) +
         ty.w1 * (tx.w0 * static_cast<acc_t>(r1[tx.i0 * rx]) + tx.w1 * static_cast<acc_t>(r1[tx.i1 * rx]));
}

// The 3x3 tap t = 0..8 of a padding-1 convolution reads the input at (y + dy, x + dx).
PAANET_HD int tap_dy(int t) { return t / 3 - 1; }
PAANET_HD int tap_dx(int t) { return t % 3 - 1; }

// sigmoid(z) without overflow: 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0, both from
// one exponential and one division.
template <typename acc_t>
PAANET_HD acc_t stable_sigmoid(acc_t z) {
  const acc_t e = exp(z >= static_cast<acc_t>(0) ? -z : z);
  const acc_t r = static_cast<acc_t>(1) / (static_cast<acc_t>(1) + e);
  return z >= static_cast<acc_t>(0) ? r : e * r;
}

// dL/dZ from the gradients of both outputs of the mini-decoder (logits Z and G = sigmoid(Z)).
template <typename acc_t>
PAANET_HD acc_t logit_grad(acc_t grad_logits, acc_t grad_gam, acc_t gam) {
  return grad_logits + grad_gam * gam * (static_cast<acc_t>(1) - gam);
}

// The weight of each GAM pixel in the mean of its sy x sx window, 1 / (sy * sx): computed once per
// scale (on the host for the CUDA kernels), so that the per-pixel work multiplies, never divides.
template <typename acc_t>
PAANET_HD acc_t window_weight(int64_t sy, int64_t sx) {
  return static_cast<acc_t>(1) / static_cast<acc_t>(sy * sx);
}

// The mean of a window from the sum of its values and its window_weight.
template <typename acc_t>
PAANET_HD acc_t window_average(acc_t sum, acc_t weight) {
  return sum * weight;
}

// The attention factor applied to the features: the pooled GAM, or its complement in a reverse block.
template <typename acc_t>
PAANET_HD acc_t attention(acc_t pooled, bool reverse) {
  return reverse ? static_cast<acc_t>(1) - pooled : pooled;
}

// d(attention)/d(pooled) = +1 or -1; each GAM pixel of a window receives this / (sy * sx).
template <typename acc_t>
PAANET_HD acc_t attention_grad_sign(bool reverse) {
  return reverse ? static_cast<acc_t>(-1) : static_cast<acc_t>(1);
}

}  // namespace paanet
