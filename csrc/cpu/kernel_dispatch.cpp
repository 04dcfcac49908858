// Picks the CPU kernel loops for this machine (see cpu/kernels.h).
#include <ATen/Version.h>

#include <string>

#include "cpu/kernels.h"

namespace paanet {
namespace cpu {
namespace {

const Kernels& choose() {
#ifdef PAANET_CPU_DISPATCH
  // ATen's own choice: its CPU test (AVX512 needs F, BW, DQ, VL and FMA), or ATEN_CPU_CAPABILITY.
  const std::string capability = at::get_cpu_capability();
  if (capability == "AVX512") return avx512::kernels;
  if (capability == "AVX2") return avx2::kernels;
#endif
  return baseline::kernels;
}

}  // namespace

const Kernels& kernels() {
  static const Kernels& chosen = choose();
  return chosen;
}

}  // namespace cpu
}  // namespace paanet
