// The emulation's launch log as operators of torch.ops.paanet_cuda_emulated (benchmarks/gpu_static.py),
// the kernels' fast divider on the CPU (tests/test_cuda_emulated.py checks it against division), the
// order the emulation runs blocks in, and
// a kernel with a defect planted on request, which tests/test_cuda_sanitized.py expects the
// sanitizers to report (so that their silence on the real kernels means something).
#include <torch/csrc/stable/library.h>

#include <cstdint>
#include <string>

#include "common.cuh"  // the emulation build's copy, on cuda_emulation.h
#include "cuda_emulation.h"
#include "stable_api.h"

namespace {

// Sets whether launches only log, and clears the log.
void configure(bool dry_run) {
  emulation::dry_run = dry_run;
  emulation::launch_log.clear();
}

// Sets the grid's limit along y and z that the host code sees (65535 on a GPU).
void limit_grid(int64_t max_yz) {
  PAANET_CHECK_VALUE(max_yz >= 1 && max_yz <= 65535, "emulation_limit_grid: ", max_yz, " outside [1, 65535]");
  emulation::max_grid_yz = static_cast<unsigned int>(max_yz);
}

// The launches logged since the last call (or configure), one per line; clears the log.
std::string take_launches() {
  std::string text;
  for (const auto& entry : emulation::launch_log) text += entry + "\n";
  emulation::launch_log.clear();
  return text;
}

// numerators / divisor through paanet::cuda::Divider, for int64 numerators in [0, 2^31).
paanet::Tensor divide(const paanet::Tensor& numerators, int64_t divisor) {
  PAANET_CHECK_VALUE(numerators.scalar_type() == paanet::ScalarType::Long && numerators.is_contiguous(),
                     "emulation_divide: numerators must be a contiguous int64 tensor");
  PAANET_CHECK_VALUE(divisor >= 1 && divisor <= (int64_t{1} << 31), "emulation_divide: divisor ", divisor,
                     " outside [1, 2^31]");
  const paanet::cuda::Divider divider(static_cast<unsigned int>(divisor));
  paanet::Tensor quotients = paanet::empty_like(numerators, paanet::ScalarType::Long);
  const int64_t* n = numerators.const_data_ptr<int64_t>();
  int64_t* q = quotients.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < numerators.numel(); ++i) {
    PAANET_CHECK_VALUE(n[i] >= 0 && n[i] <= INT32_MAX, "emulation_divide: numerator ", n[i], " outside [0, 2^31)");
    q[i] = divider.div(static_cast<unsigned int>(n[i]));
  }
  return quotients;
}

constexpr int kMaxNeighbours = 1024;

// out[t] = t + 1 (mod threads), through shared memory. Without the barrier, thread t reads a value
// that thread t + 1 writes with nothing ordering the two (a race); out of bounds, thread t writes
// out[t + 1], so the last thread writes past the end of the tensor (an overflow).
__global__ void neighbour_kernel(float* out, bool synchronized, bool in_bounds) {
  __shared__ float values[kMaxNeighbours];
  values[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (synchronized) __syncthreads();
  out[in_bounds ? threadIdx.x : threadIdx.x + 1] = values[(threadIdx.x + 1) % blockDim.x];
}

paanet::Tensor neighbours(int64_t threads, bool synchronized, bool in_bounds) {
  PAANET_CHECK_VALUE(threads >= 1 && threads <= kMaxNeighbours, "emulation_neighbours: threads ", threads,
                     " outside [1, ", kMaxNeighbours, "]");
  paanet::Tensor out = paanet::empty({threads}, paanet::ScalarType::Float,
                                     torch::stable::Device(torch::headeronly::DeviceType::CPU));
  emulation::Launch(dim3(1), dim3(static_cast<unsigned int>(threads)))
      .run<neighbour_kernel>(out.mutable_data_ptr<float>(), synchronized, in_bounds);
  return out;
}

// out = the 16-byte pack at `in`, loaded as the kernels load packs (common.cuh): a GPU faults on a
// pack that is not 16-byte aligned, and UndefinedBehaviorSanitizer reports it.
__global__ void pack_kernel(const float* in, float* out) {
  const paanet::cuda::Pack<float> pack = *reinterpret_cast<const paanet::cuda::Pack<float>*>(in);
  for (int j = 0; j < paanet::cuda::Pack<float>::kSize; ++j) out[j] = pack.v[j];
}

paanet::Tensor pack_load(const paanet::Tensor& values, int64_t offset) {
  constexpr int64_t N = paanet::cuda::Pack<float>::kSize;
  PAANET_CHECK_VALUE(values.scalar_type() == paanet::ScalarType::Float && values.dim() == 1 &&
                     values.is_contiguous(), "emulation_pack_load: values must be a contiguous 1-d float32 tensor");
  PAANET_CHECK_VALUE(offset >= 0 && offset + N <= values.numel(), "emulation_pack_load: offset ", offset,
                     " leaves no pack of ", N, " in ", values.numel(), " values");
  paanet::Tensor out = paanet::empty({N}, paanet::ScalarType::Float, values.device());
  emulation::Launch(dim3(1), dim3(1)).run<pack_kernel>(values.const_data_ptr<float>() + offset,
                                                      out.mutable_data_ptr<float>());
  return out;
}

// The blocks' indices in the order the emulation ran them.
__global__ void order_kernel(int64_t* out, unsigned int* ran) {
  if (threadIdx.x == 0) out[(*ran)++] = blockIdx.x;
}

paanet::Tensor ran_blocks(int64_t blocks) {
  PAANET_CHECK_VALUE(blocks >= 1 && blocks <= INT32_MAX, "emulation_ran_blocks: blocks ", blocks, " outside [1, 2^31)");
  paanet::Tensor out = paanet::empty({blocks}, paanet::ScalarType::Long,
                                     torch::stable::Device(torch::headeronly::DeviceType::CPU));
  unsigned int ran = 0;
  emulation::Launch(dim3(static_cast<unsigned int>(blocks)), dim3(32))
      .run<order_kernel>(out.mutable_data_ptr<int64_t>(), &ran);
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_FRAGMENT(paanet_cuda_emulated, m) {
  m.def("emulation_configure(bool dry_run) -> ()");
  m.def("emulation_limit_grid(int max_yz) -> ()");
  m.def("emulation_take_launches() -> str");
  m.def("emulation_divide(Tensor numerators, int divisor) -> Tensor");
  m.def("emulation_neighbours(int threads, bool synchronized, bool in_bounds) -> Tensor");
  m.def("emulation_pack_load(Tensor values, int offset) -> Tensor");
  m.def("emulation_ran_blocks(int blocks) -> Tensor");
}

// CompositeExplicitAutograd: the operators without tensor arguments dispatch there too.
STABLE_TORCH_LIBRARY_IMPL(paanet_cuda_emulated, CompositeExplicitAutograd, m) {
  m.impl("emulation_configure", TORCH_BOX(&configure));
  m.impl("emulation_limit_grid", TORCH_BOX(&limit_grid));
  m.impl("emulation_take_launches", TORCH_BOX(&take_launches));
  m.impl("emulation_divide", TORCH_BOX(&divide));
  m.impl("emulation_neighbours", TORCH_BOX(&neighbours));
  m.impl("emulation_pack_load", TORCH_BOX(&pack_load));
  m.impl("emulation_ran_blocks", TORCH_BOX(&ran_blocks));
}
