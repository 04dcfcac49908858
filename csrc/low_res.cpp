#include "low_res.h"

namespace paanet {

using torch::stable::reshape;
using torch::stable::transpose;
using torch::stable::view;

bool is_channels_last(const Tensor& f) { return !f.is_contiguous() && is_channels_last_contiguous(f); }

Tensor weight_rows(const Tensor& weight) { return reshape(weight, {weight.size(1), kTaps}); }

Tensor reduce_channels(const Tensor& f, const Tensor& w_v) {
  const int64_t B = f.size(0), C = f.size(1), h = f.size(2), w = f.size(3);
  if (is_channels_last(f)) {
    return permuted(view(mm(reshape(permuted(f, {0, 2, 3, 1}), {B * h * w, C}), w_v), {B, h, w, kTaps}),
                   {0, 3, 1, 2});
  }
  // Explicit bmm rather than matmul, which picks its algorithm by requires_grad: eager calls and
  // torch.compile's (which differ in that) would otherwise round differently.
  return view(bmm(expand(transpose(w_v, 0, 1), {B, kTaps, C}), reshape(f, {B, C, h * w})), {B, kTaps, h, w});
}

std::pair<Tensor, Tensor> feature_and_weight_grads(const Tensor& f, const Tensor& w_v, const Tensor& d) {
  const int64_t B = f.size(0), C = f.size(1), h = f.size(2), w = f.size(3);
  if (is_channels_last(f)) {  // both are (B*h*w, .) matrices without a copy
    const Tensor f_mat = reshape(permuted(f, {0, 2, 3, 1}), {B * h * w, C});
    const Tensor d_mat = reshape(permuted(d, {0, 2, 3, 1}), {B * h * w, kTaps});
    Tensor df = permuted(view(mm(d_mat, transpose(w_v, 0, 1)), {B, h, w, C}), {0, 3, 1, 2});
    return {df, mm(transpose(f_mat, 0, 1), d_mat)};
  }
  const Tensor d_mat = reshape(d, {B, kTaps, h * w});
  Tensor df = view(bmm(expand(w_v, {B, C, kTaps}), d_mat), {B, C, h, w});
  Tensor dw = torch::stable::sum(bmm(reshape(f, {B, C, h * w}), transpose(d_mat, 1, 2)), std::vector<int64_t>{0});
  return {df, dw};
}

}  // namespace paanet
