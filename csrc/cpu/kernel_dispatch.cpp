// Picks the CPU kernel loops for this machine (see cpu/kernels.h) by ATen's rule for its own CPU
// kernels, without ATen (at::get_cpu_capability is not part of PyTorch's stable ABI).
#include <cstdlib>
#include <cstring>

#include "cpu/kernels.h"

namespace paanet {
namespace cpu {
namespace {

#ifdef PAANET_CPU_DISPATCH
// The instruction sets, each including the ones before it.
enum class Level { kDefault, kAvx2, kAvx512 };

// What this CPU and its operating system support. GCC's __builtin_cpu_supports also reads the
// XCR0 register (xgetbv), so a feature whose registers the kernel does not save counts as absent.
// ATen's tests (cpuinfo): AVX-512 needs F, BW, DQ, VL and FMA; AVX2 needs AVX2 and FMA.
Level cpu_level() {
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return Level::kAvx512;
  }
  if (fma && __builtin_cpu_supports("avx2")) return Level::kAvx2;
  return Level::kDefault;
}

// ATEN_CPU_CAPABILITY, spelled as ATen accepts it (exactly, lower case), lowers the choice. ATen
// ignores any other value (and warns about it itself); it would also run loops wider than the CPU
// has when asked to, which here instead stay at what the CPU has rather than stop on an illegal
// instruction.
Level chosen_level() {
  const Level cpu = cpu_level();
  const char* requested = std::getenv("ATEN_CPU_CAPABILITY");
  if (requested == nullptr) return cpu;
  Level level = cpu;
  if (std::strcmp(requested, "default") == 0) {
    level = Level::kDefault;
  } else if (std::strcmp(requested, "avx2") == 0) {
    level = Level::kAvx2;
  } else if (std::strcmp(requested, "avx512") == 0) {
    level = Level::kAvx512;
  }
  return level < cpu ? level : cpu;
}
#endif

const Kernels& choose() {
#ifdef PAANET_CPU_DISPATCH
  switch (chosen_level()) {
    case Level::kAvx512: return avx512::kernels;
    case Level::kAvx2: return avx2::kernels;
    case Level::kDefault: break;
  }
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
