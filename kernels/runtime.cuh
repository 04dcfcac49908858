// The CUDA state the kernels' host code uses: the device guard, the current stream, the launch
// check. torch is reached only through its stable ABI: the device guard of torch/csrc/stable, and
// the current stream from the AOTI C shim, looked up at run time in the torch_cuda library that
// torch has loaded (the module links neither c10_cuda nor torch_cuda, so that it also loads into a
// CPU-only torch and into a torch built with another CUDA major). The CUDA runtime is linked
// statically; the stream torch gives is a driver stream, valid for it too.
// tests/cuda_emulation/cuda_emulation.h stands in for this header when the kernels run on the CPU.
#pragma once

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <torch/csrc/stable/accelerator.h>

#include <cstdint>

#include "stable_api.h"

namespace paanet {
namespace cuda {

// Makes a device current for the scope of an operator call (restoring the previous one after).
using DeviceGuard = torch::stable::accelerator::DeviceGuard;

// torch's current CUDA stream of the current device. The stable accelerator API returns the stream's
// native handle only from torch 2.13 (Stream::nativeHandle), so below that the one way through the
// stable surface is the AOTI shim's aoti_torch_get_current_cuda_stream. It lives in libtorch_cuda,
// which torch loads privately (RTLD_LOCAL): it is looked up once in that already loaded library.
inline cudaStream_t current_stream() {
  using GetStream = AOTITorchError (*)(int32_t device_index, void** ret_stream);
  static const GetStream get_stream = [] {
    void* torch_cuda = dlopen("libtorch_cuda.so", RTLD_LAZY | RTLD_NOLOAD);
    return torch_cuda == nullptr
               ? nullptr
               : reinterpret_cast<GetStream>(dlsym(torch_cuda, "aoti_torch_get_current_cuda_stream"));
  }();
  PAANET_CHECK(get_stream != nullptr,
               "paanet_fast: aoti_torch_get_current_cuda_stream was not found in a loaded libtorch_cuda.so "
               "(a CUDA tensor needs a CUDA build of torch)");
  void* stream = nullptr;
  PAANET_CHECK(get_stream(torch::stable::accelerator::getCurrentDeviceIndex(), &stream) == AOTI_TORCH_SUCCESS,
               "paanet_fast: torch could not give its current CUDA stream");
  return static_cast<cudaStream_t>(stream);
}

// The most blocks a launch takes along y or z (the kernels that lay the samples out there loop over
// those beyond).
inline unsigned int max_grid_yz() { return 65535; }

// After a launch: a launch that failed (a bad configuration, no kernel image for this card) raises.
inline void check_launch(const char* kernel) {
  const cudaError_t error = cudaGetLastError();
  PAANET_CHECK(error == cudaSuccess, "paanet_fast: launching the CUDA kernel ", kernel, " failed: ",
               cudaGetErrorString(error));
}

}  // namespace cuda
}  // namespace paanet
