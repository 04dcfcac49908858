// The emulation's launch log as operators of torch.ops.paanet_cuda_emulated (benchmarks/gpu_static.py).
#include <torch/library.h>

#include "cuda_emulation.h"

namespace {

// Sets the multiprocessor count the host code sees and whether launches only log, and clears the log.
void configure(int64_t multiprocessor_count, bool dry_run) {
  TORCH_CHECK(multiprocessor_count > 0, "multiprocessor_count must be positive, got ", multiprocessor_count);
  emulation::multiprocessor_count = static_cast<int>(multiprocessor_count);
  emulation::dry_run = dry_run;
  emulation::launch_log.clear();
}

// The launches logged since the last call (or configure), one per line; clears the log.
std::string take_launches() {
  std::string text;
  for (const auto& entry : emulation::launch_log) text += entry + "\n";
  emulation::launch_log.clear();
  return text;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(paanet_cuda_emulated, m) {
  m.def("emulation_configure(int multiprocessor_count, bool dry_run) -> ()", &configure);
  m.def("emulation_take_launches() -> str", &take_launches);
}
