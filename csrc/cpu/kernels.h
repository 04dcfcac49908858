// The loops of the CPU kernels, compiled once per x86-64 instruction set (cpu/kernels_*.cpp) and
// picked at run time by ATen's rule (cpu/kernel_dispatch.cpp: the CPU's features, lowered by the
// environment variable ATEN_CPU_CAPABILITY=default|avx2|avx512): one binary runs on any x86-64 and
// uses AVX2 or AVX-512 where the CPU has them. Elsewhere (another architecture, another compiler
// than GCC) only the baseline is compiled, for the build's own target.
#pragma once

#include "stable_api.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PAANET_CPU_DISPATCH 1  // GCC's `#pragma GCC target` builds the wider variants
#endif

namespace paanet {
namespace cpu {

// The entry points of one instruction set's loops. Arguments are checked and outputs allocated
// (float32 or float64, the dtype of the inputs) by the callers in cpu/*_cpu.cpp.
struct Kernels {
  const char* name;  // "default", "avx2" or "avx512", as ATEN_CPU_CAPABILITY spells them
  void (*gam_multiply)(const TensorList& features, const Tensor& gam, bool reverse, const TensorList& outputs);
  void (*gam_multiply_backward)(const TensorList& grad_outputs, const TensorList& features, const Tensor& gam,
                                bool reverse, const TensorList& grad_features, const Tensor& grad_gam);
  void (*mini_decoder)(const TensorList& planes, const Tensor& bias, Tensor& logits);
  void (*mini_decoder_backward)(const Tensor& grad_logits, const Tensor& grad_gam, const Tensor& gam,
                                const TensorList& d_planes, Tensor& dbias);
};

namespace baseline { extern const Kernels kernels; }
#ifdef PAANET_CPU_DISPATCH
namespace avx2 { extern const Kernels kernels; }
namespace avx512 { extern const Kernels kernels; }
#endif

// The loops for this CPU, chosen on the first call.
const Kernels& kernels();

}  // namespace cpu
}  // namespace paanet
