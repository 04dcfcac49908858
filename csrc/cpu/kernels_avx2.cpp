// The CPU kernel loops for AVX2 with FMA (x86-64-v3), picked by cpu/kernel_dispatch.cpp.
#include "cpu/kernel_includes.h"  // first: see there

#ifdef PAANET_CPU_DISPATCH
#pragma GCC target("avx2,fma")
#define PAANET_CPU_KERNELS_NAME "avx2"
namespace paanet::cpu::avx2 {
#include "cpu/kernels.inc"
}  // namespace paanet::cpu::avx2
#endif
