// Entry points of paanet_fast::mini_decoder and paanet_fast::mini_decoder_backward on the CPU:
// checks, dtypes, the low-resolution matmuls (low_res.h) and outputs; the full-resolution loops
// are in cpu/mini_decoder_kernels.inc.
#include <tuple>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"
#include "cpu/kernels.h"
#include "low_res.h"
#include "stable_api.h"

namespace paanet {
namespace {

std::tuple<Tensor, Tensor> mini_decoder_cpu(const TensorList& features, const Tensor& weight, const Tensor& bias,
                                            IntList size) {
  check_mini_decoder_args(features, weight, bias, size);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const ScalarType dtype = features[0].scalar_type();
  if (is_reduced_precision(dtype)) {
    auto [logits, gam] = mini_decoder_cpu(cpu::to_dtype(features, ScalarType::Float),
                                          torch::stable::to(weight, ScalarType::Float),
                                          torch::stable::to(bias, ScalarType::Float), size);
    return {torch::stable::to(logits, dtype), torch::stable::to(gam, dtype)};
  }
  const int64_t B = features[0].size(0), H = size[0], W = size[1];
  Tensor rows = weight_rows(weight);  // not const: torch::stable::narrow takes a reference
  TensorList planes;
  int64_t offset = 0;
  for (const auto& f : features) {
    planes.push_back(reduce_channels(f, torch::stable::narrow(rows, 0, offset, f.size(1))));
    offset += f.size(1);
  }
  Tensor logits = poisoned_if_testing(empty({B, 1, H, W}, dtype, features[0].device()));
  Tensor gam = poisoned_if_testing(empty({B, 1, H, W}, dtype, features[0].device()));
  cpu::kernels().mini_decoder(planes, bias, logits);
  // ATen's vectorised sigmoid (the function the reference calls): a scalar exp per pixel in the
  // kernel would cost more than the rest of the full-resolution pass.
  call_op("aten::sigmoid", "out", logits, gam);
  return {logits, gam};
}

std::tuple<TensorList, Tensor, Tensor> mini_decoder_backward_cpu(const Tensor& grad_logits, const Tensor& grad_gam,
                                                                 const Tensor& gam, const TensorList& features,
                                                                 const Tensor& weight) {
  check_mini_decoder_backward_args(grad_logits, grad_gam, gam, features, weight);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const ScalarType dtype = features[0].scalar_type();
  if (is_reduced_precision(dtype)) {
    auto [dfeatures, dweight, dbias] = mini_decoder_backward_cpu(
        torch::stable::to(grad_logits, ScalarType::Float), torch::stable::to(grad_gam, ScalarType::Float),
        torch::stable::to(gam, ScalarType::Float), cpu::to_dtype(features, ScalarType::Float),
        torch::stable::to(weight, ScalarType::Float));
    return {cpu::with_layouts_of(cpu::to_dtype(dfeatures, dtype), features),
            cpu::with_layout_of(torch::stable::to(dweight, weight.scalar_type()), weight),
            torch::stable::to(dbias, weight.scalar_type())};
  }
  TensorList d_planes;
  for (const auto& f : features) {
    const auto format = is_channels_last(f) ? torch::headeronly::MemoryFormat::ChannelsLast
                                            : torch::headeronly::MemoryFormat::Contiguous;
    d_planes.push_back(poisoned_if_testing(empty({f.size(0), kTaps, f.size(2), f.size(3)}, dtype, f.device(), format)));
  }
  Tensor dbias = empty({1}, dtype, weight.device());
  cpu::kernels().mini_decoder_backward(grad_logits, grad_gam, gam, d_planes, dbias);
  Tensor rows = weight_rows(weight);  // not const: torch::stable::narrow takes a reference
  TensorList dfeatures, dweights;
  int64_t offset = 0;
  for (size_t v = 0; v < features.size(); ++v) {
    const int64_t channels = features[v].size(1);
    auto [df, dw] = feature_and_weight_grads(features[v], torch::stable::narrow(rows, 0, offset, channels),
                                             d_planes[v]);
    dfeatures.push_back(cpu::with_layout_of(df, features[v]));
    dweights.push_back(dw);
    offset += channels;
  }
  const Tensor dweight = torch::stable::view(cat(dweights, 0), {1, offset, 3, 3});
  return {dfeatures, cpu::with_layout_of(dweight, weight), dbias};
}

}  // namespace
}  // namespace paanet

STABLE_TORCH_LIBRARY_IMPL(paanet_fast, CPU, m) {
  m.impl("mini_decoder", TORCH_BOX(&paanet::mini_decoder_cpu));
  m.impl("mini_decoder_backward", TORCH_BOX(&paanet::mini_decoder_backward_cpu));
}
