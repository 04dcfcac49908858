#include "low_res.h"

#include <ATen/ATen.h>

namespace paanet {

bool is_channels_last(const at::Tensor& f) {
  return !f.is_contiguous() && f.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::Tensor scale_weight(const at::Tensor& weight, int64_t offset, int64_t channels) {
  return weight[0].narrow(0, offset, channels).reshape({channels, kTaps});
}

at::Tensor reduce_channels(const at::Tensor& f, const at::Tensor& w_v) {
  const int64_t B = f.size(0), C = f.size(1), h = f.size(2), w = f.size(3);
  if (is_channels_last(f)) {
    return at::mm(f.permute({0, 2, 3, 1}).reshape({B * h * w, C}), w_v)
        .view({B, h, w, kTaps})
        .permute({0, 3, 1, 2});
  }
  // Explicit bmm rather than at::matmul, which picks its algorithm by requires_grad: eager calls
  // and torch.compile's (which differ in that) would otherwise round differently.
  return at::bmm(w_v.t().expand({B, kTaps, C}), f.reshape({B, C, h * w})).view({B, kTaps, h, w});
}

std::pair<at::Tensor, at::Tensor> feature_and_weight_grads(const at::Tensor& f, const at::Tensor& w_v,
                                                           const at::Tensor& d) {
  const int64_t B = f.size(0), C = f.size(1), h = f.size(2), w = f.size(3);
  if (is_channels_last(f)) {  // both are (B*h*w, .) matrices without a copy
    const at::Tensor f_mat = f.permute({0, 2, 3, 1}).reshape({B * h * w, C});
    const at::Tensor d_mat = d.permute({0, 2, 3, 1}).reshape({B * h * w, kTaps});
    at::Tensor df = at::mm(d_mat, w_v.t()).view({B, h, w, C}).permute({0, 3, 1, 2});
    return {df, at::mm(f_mat.t(), d_mat)};
  }
  const at::Tensor d_mat = d.reshape({B, kTaps, h * w});
  at::Tensor df = at::bmm(w_v.expand({B, C, kTaps}), d_mat).view({B, C, h, w});
  at::Tensor dw = at::bmm(f.reshape({B, C, h * w}), d_mat.transpose(1, 2)).sum(0);
  return {df, dw};
}

}  // namespace paanet
