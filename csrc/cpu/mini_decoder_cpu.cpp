// Entry points of paanet_fast::mini_decoder and paanet_fast::mini_decoder_backward on the CPU:
// checks, dtypes, the low-resolution matmuls (low_res.h) and outputs; the full-resolution loops
// are in cpu/mini_decoder_kernels.inc.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"
#include "cpu/kernels.h"
#include "low_res.h"

namespace paanet {
namespace {

std::tuple<at::Tensor, at::Tensor> mini_decoder_cpu(at::TensorList features, const at::Tensor& weight,
                                                    const at::Tensor& bias, c10::SymIntArrayRef sym_size) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(sym_size);
  check_mini_decoder_args(features, weight, bias, size);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    auto [logits, gam] = mini_decoder_cpu(cpu::to_dtype(features, at::kFloat), weight.to(at::kFloat),
                                          bias.to(at::kFloat), sym_size);
    return {logits.to(dtype), gam.to(dtype)};
  }
  const int64_t B = features[0].size(0), H = size[0], W = size[1];
  std::vector<at::Tensor> planes;
  int64_t offset = 0;
  for (const auto& f : features) {
    planes.push_back(reduce_channels(f, scale_weight(weight, offset, f.size(1))));
    offset += f.size(1);
  }
  at::Tensor logits = cpu::poisoned_if_testing(at::empty({B, 1, H, W}, features[0].options()));
  at::Tensor gam = cpu::poisoned_if_testing(at::empty({B, 1, H, W}, features[0].options()));
  cpu::kernels().mini_decoder(planes, bias, logits);
  // ATen's vectorised sigmoid (the function the reference calls): a scalar exp per pixel in the
  // kernel would cost more than the rest of the full-resolution pass.
  at::sigmoid_out(gam, logits);
  return {logits, gam};
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> mini_decoder_backward_cpu(
    const at::Tensor& grad_logits, const at::Tensor& grad_gam, const at::Tensor& gam,
    at::TensorList features, const at::Tensor& weight) {
  check_mini_decoder_backward_args(grad_logits, grad_gam, gam, features, weight);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    auto [dfeatures, dweight, dbias] = mini_decoder_backward_cpu(
        grad_logits.to(at::kFloat), grad_gam.to(at::kFloat), gam.to(at::kFloat),
        cpu::to_dtype(features, at::kFloat), weight.to(at::kFloat));
    return {cpu::with_layouts_of(cpu::to_dtype(dfeatures, dtype), features),
            cpu::with_layout_of(dweight.to(dtype), weight), dbias.to(dtype)};
  }
  std::vector<at::Tensor> d_planes;
  for (const auto& f : features) {
    const auto format = is_channels_last(f) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    d_planes.push_back(cpu::poisoned_if_testing(
        at::empty({f.size(0), kTaps, f.size(2), f.size(3)}, f.options().memory_format(format))));
  }
  at::Tensor dbias = at::empty({1}, weight.options());
  cpu::kernels().mini_decoder_backward(grad_logits, grad_gam, gam, d_planes, dbias);
  std::vector<at::Tensor> dfeatures, dweights;
  int64_t offset = 0;
  for (size_t v = 0; v < features.size(); ++v) {
    const int64_t channels = features[v].size(1);
    auto [df, dw] = feature_and_weight_grads(features[v], scale_weight(weight, offset, channels), d_planes[v]);
    dfeatures.push_back(cpu::with_layout_of(df, features[v]));
    dweights.push_back(dw);
    offset += channels;
  }
  const at::Tensor dweight = at::cat(dweights, 0).view({1, offset, 3, 3});
  return {dfeatures, cpu::with_layout_of(dweight, weight), dbias};
}

}  // namespace
}  // namespace paanet

TORCH_LIBRARY_IMPL(paanet_fast, CPU, m) {
  m.impl("mini_decoder", &paanet::mini_decoder_cpu);
  m.impl("mini_decoder_backward", &paanet::mini_decoder_backward_cpu);
}
