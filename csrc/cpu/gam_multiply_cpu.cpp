// Entry points of paanet_fast::gam_multiply and paanet_fast::gam_multiply_backward on the CPU:
// checks, dtypes and outputs; the loops are in cpu/gam_multiply_kernels.inc.
#include <tuple>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"
#include "cpu/kernels.h"
#include "stable_api.h"

namespace paanet {
namespace {

TensorList gam_multiply_cpu(const TensorList& features, const Tensor& gam, bool reverse) {
  check_gam_multiply_args(features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const ScalarType dtype = features[0].scalar_type();
  if (is_reduced_precision(dtype)) {
    const TensorList outputs = gam_multiply_cpu(cpu::to_dtype(features, ScalarType::Float),
                                                torch::stable::to(gam, ScalarType::Float), reverse);
    return cpu::with_layouts_of(cpu::to_dtype(outputs, dtype), features);
  }
  TensorList outputs;
  for (const auto& f : features) outputs.push_back(poisoned_if_testing(torch::stable::empty_like(f)));
  cpu::kernels().gam_multiply(features, gam, reverse, outputs);
  return outputs;
}

std::tuple<TensorList, Tensor> gam_multiply_backward_cpu(const TensorList& grad_outputs, const TensorList& features,
                                                         const Tensor& gam, bool reverse) {
  check_gam_multiply_backward_args(grad_outputs, features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const ScalarType dtype = features[0].scalar_type();
  if (is_reduced_precision(dtype)) {
    auto [dfeatures, dgam] = gam_multiply_backward_cpu(cpu::to_dtype(grad_outputs, ScalarType::Float),
                                                       cpu::to_dtype(features, ScalarType::Float),
                                                       torch::stable::to(gam, ScalarType::Float), reverse);
    return {cpu::with_layouts_of(cpu::to_dtype(dfeatures, dtype), features),
            cpu::with_layout_of(torch::stable::to(dgam, dtype), gam)};
  }
  TensorList dfeatures;
  for (const auto& f : features) dfeatures.push_back(poisoned_if_testing(torch::stable::empty_like(f)));
  Tensor dgam = poisoned_if_testing(torch::stable::empty_like(gam));
  cpu::kernels().gam_multiply_backward(grad_outputs, features, gam, reverse, dfeatures, dgam);
  return {dfeatures, dgam};
}

}  // namespace
}  // namespace paanet

STABLE_TORCH_LIBRARY_IMPL(paanet_fast, CPU, m) {
  m.impl("gam_multiply", TORCH_BOX(&paanet::gam_multiply_cpu));
  m.impl("gam_multiply_backward", TORCH_BOX(&paanet::gam_multiply_backward_cpu));
}
