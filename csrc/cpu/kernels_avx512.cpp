// The CPU kernel loops for AVX-512 (F, BW, DQ, VL, as ATen's AVX512 capability requires), picked by
// cpu/kernel_dispatch.cpp.
#include "cpu/kernel_includes.h"  // first: see there

#ifdef PAANET_CPU_DISPATCH
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#define PAANET_CPU_KERNELS_NAME "avx512"
namespace paanet::cpu::avx512 {
#include "cpu/kernels.inc"
}  // namespace paanet::cpu::avx512
#endif
