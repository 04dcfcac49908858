// The CPU kernel loops for the build's baseline target (any x86-64: SSE2), the fallback of cpu/kernels.h.
#include "cpu/kernel_includes.h"

#define PAANET_CPU_KERNELS_NAME "default"
namespace paanet::cpu::baseline {
#include "cpu/kernels.inc"
}  // namespace paanet::cpu::baseline
