// The low-resolution matmuls of the mini-decoder (design 2.1), device-agnostic code shared by the
// CPU and CUDA kernels: the 9 tap planes r_v = W_v . F_v before the full-resolution pass, and the
// feature and weight gradients from the tap-plane gradients D_v after the transposed pass. The
// matmuls are ATen's, called through the stable dispatcher (stable_api.h).
#pragma once

#include <cstdint>
#include <utility>

#include "stable_api.h"

namespace paanet {

constexpr int64_t kTaps = 9;

// Whether F_v is NHWC (channels-last) without being NCHW: its (B*h*w, C) matrix is then a view.
bool is_channels_last(const Tensor& f);

// The (1, sum C, 3, 3) weight as (sum C, 9): one view (or copy) for all scales, whose slices
// narrow(rows, 0, offset, C_v) are each scale's w_v, so a call makes one boxed operator call per
// scale instead of three.
Tensor weight_rows(const Tensor& weight);

// r_v[b, t, y, x] = sum_c w_v[c, t] F_v[b, c, y, x]: shape (B, 9, h, w), channels-last strides
// when F_v is channels-last, contiguous otherwise. F_v is copied only when it is neither.
Tensor reduce_channels(const Tensor& f, const Tensor& w_v);

// From D_v (B, 9, h, w), in F_v's memory format: dF_v = w_v D_v (B, C_v, h, w) and
// dW_v = sum_b F_v D_v^T (C_v, 9).
std::pair<Tensor, Tensor> feature_and_weight_grads(const Tensor& f, const Tensor& w_v, const Tensor& d);

}  // namespace paanet
