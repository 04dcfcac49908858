// Entry points of paanet_fast::gam_multiply and paanet_fast::gam_multiply_backward on the CPU:
// checks, dtypes and outputs; the loops are in cpu/gam_multiply_kernels.inc.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"
#include "cpu/kernels.h"

namespace paanet {
namespace {

std::vector<at::Tensor> gam_multiply_cpu(at::TensorList features, const at::Tensor& gam, bool reverse) {
  check_gam_multiply_args(features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    const auto outputs = gam_multiply_cpu(cpu::to_dtype(features, at::kFloat), gam.to(at::kFloat), reverse);
    return cpu::with_layouts_of(cpu::to_dtype(outputs, dtype), features);
  }
  std::vector<at::Tensor> outputs;
  for (const auto& f : features) outputs.push_back(cpu::poisoned_if_testing(at::empty_like(f)));
  cpu::kernels().gam_multiply(features, gam, reverse, outputs);
  return outputs;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> gam_multiply_backward_cpu(
    at::TensorList grad_outputs, at::TensorList features, const at::Tensor& gam, bool reverse) {
  check_gam_multiply_backward_args(grad_outputs, features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    auto [dfeatures, dgam] = gam_multiply_backward_cpu(cpu::to_dtype(grad_outputs, at::kFloat),
                                                       cpu::to_dtype(features, at::kFloat),
                                                       gam.to(at::kFloat), reverse);
    return {cpu::with_layouts_of(cpu::to_dtype(dfeatures, dtype), features),
            cpu::with_layout_of(dgam.to(dtype), gam)};
  }
  std::vector<at::Tensor> dfeatures;
  for (const auto& f : features) dfeatures.push_back(cpu::poisoned_if_testing(at::empty_like(f)));
  at::Tensor dgam = cpu::poisoned_if_testing(at::empty_like(gam));
  cpu::kernels().gam_multiply_backward(grad_outputs, features, gam, reverse, dfeatures, dgam);
  return {dfeatures, dgam};
}

}  // namespace
}  // namespace paanet

TORCH_LIBRARY_IMPL(paanet_fast, CPU, m) {
  m.impl("gam_multiply", &paanet::gam_multiply_cpu);
  m.impl("gam_multiply_backward", &paanet::gam_multiply_backward_cpu);
}
