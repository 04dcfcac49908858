// Just enough of the CUDA runtime to run the kernels of kernels/*.cu on the CPU, for the tests of
// a machine without a GPU (tests/test_cuda_emulated.py). A launch runs one std::thread per CUDA
// thread of a block, so __syncthreads is a real barrier between concurrently running threads, and
// runs the blocks one after another, so a block's __shared__ arrays can be function statics.
// Every launch is also logged (kernel, grid, block, dynamic shared memory), and with `dry_run` set
// only logged, so that benchmarks/gpu_static.py can count the launches of the host code and read
// its launch configurations at full size without running the kernels. It stands in for
// kernels/runtime.cuh (the device guard, the current stream and the launch check).
#pragma once

#include <atomic>
#include <barrier>
#include <cstdint>
#include <exception>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "stable_api.h"

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void*;
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static

// The high 32 bits of the 64-bit product, as the device intrinsic gives them.
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return static_cast<unsigned int>((static_cast<uint64_t>(a) * b) >> 32);
}

namespace emulation {

inline std::barrier<>* block_barrier = nullptr;
inline std::vector<unsigned char> dynamic_shared_storage;
inline unsigned char* dynamic_shared = nullptr;

// The launch log: one line per launch, "launch signature|grid x,y,z|block x,y,z|shared bytes", the
// signature naming the kernel's instantiation (kKernel = ...) and its type (Kernel = void (*)(...)).
inline std::vector<std::string> launch_log;
inline bool dry_run = false;
// The grid's limit along y and z as the host code sees it (a test lowers it, so that small
// batches take the kernels' loops over the samples beyond the grid).
inline unsigned int max_grid_yz = 65535;

// The blocks of a grid in the order a launch runs them: shuffled, so that a kernel that counts on
// block 0 running first or the last block index finishing last fails its tests here. The seed is
// the number of launches run before, so that a test fails the same way each time it runs alone.
inline std::uint64_t launches_run = 0;

inline std::vector<dim3> block_order(dim3 grid) {
  std::vector<dim3> order;
  order.reserve(static_cast<size_t>(grid.x) * grid.y * grid.z);
  for (unsigned int z = 0; z < grid.z; ++z) {
    for (unsigned int y = 0; y < grid.y; ++y) {
      for (unsigned int x = 0; x < grid.x; ++x) order.emplace_back(x, y, z);
    }
  }
  std::mt19937_64 generator(launches_run++);
  std::shuffle(order.begin(), order.end(), generator);
  return order;
}

// `kernel<<<grid, block, shared_bytes, stream>>>(args...)` is rewritten to
// `emulation::Launch(grid, block, shared_bytes, stream).template run<kernel>(args...)`: the kernel
// a template argument, so that the log names its instantiation (two instantiations that differ
// only in a non-type template argument have the same function type).
struct Launch {
  dim3 grid, block;
  size_t shared_bytes;

  Launch(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), shared_bytes(s) {}

  template <auto kKernel, typename Kernel = decltype(kKernel), typename... Args>
  void run(Args... args) const {
    // The limits a real launch enforces.
    PAANET_CHECK(grid.x > 0 && grid.y > 0 && grid.z > 0, "launch with an empty grid");
    PAANET_CHECK(grid.y <= 65535 && grid.z <= 65535, "grid.y or grid.z over 65535");
    PAANET_CHECK(shared_bytes <= 48 * 1024, "over 48 KiB of dynamic shared memory without opting in");
    const unsigned int threads = block.x * block.y * block.z;
    PAANET_CHECK(threads > 0 && threads <= 1024, "block of ", threads, " threads");
    std::ostringstream entry;
    entry << __PRETTY_FUNCTION__ << '|' << grid.x << ',' << grid.y << ',' << grid.z << '|' << block.x
          << ',' << block.y << ',' << block.z << '|' << shared_bytes;
    launch_log.push_back(entry.str());
    if (dry_run) return;
    dynamic_shared_storage.assign(shared_bytes + 16, 0xFF);  // NaN-like garbage, not zeros
    const uintptr_t address = reinterpret_cast<uintptr_t>(dynamic_shared_storage.data());
    dynamic_shared = dynamic_shared_storage.data() + (16 - address % 16) % 16;
    const std::vector<dim3> order = block_order(grid);
    std::barrier<> barrier(threads);
    block_barrier = &barrier;
    std::exception_ptr failure;
    std::mutex failure_mutex;
    std::vector<std::thread> pool;
    for (unsigned int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
        blockDim = block;
        gridDim = grid;
        try {
          for (const dim3& b : order) {
            blockIdx = b;
            kKernel(args...);
            barrier.arrive_and_wait();  // the block is done before the next reuses its shared memory
          }
        } catch (...) {  // a failed device assertion: leave the barrier so the others finish, report it
          {
            const std::lock_guard<std::mutex> lock(failure_mutex);
            if (!failure) failure = std::current_exception();
          }
          barrier.arrive_and_drop();
        }
      });
    }
    for (auto& thread : pool) thread.join();
    if (failure) std::rethrow_exception(failure);
  }
};

}  // namespace emulation

inline void __syncthreads() { emulation::block_barrier->arrive_and_wait(); }

// The blocks run one after another, so a fence orders nothing across them; the threads of a block
// run concurrently, so the counter is a real atomic.
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
  return std::atomic_ref<unsigned int>(*address).fetch_add(value);
}

namespace paanet {
namespace cuda {

// kernels/runtime.cuh's interface: CPU tensors need no device, stream or launch check.
struct DeviceGuard {
  explicit DeviceGuard(int32_t) {}
};

inline cudaStream_t current_stream() { return nullptr; }

inline void check_launch(const char*) {}

inline unsigned int max_grid_yz() { return emulation::max_grid_yz; }

}  // namespace cuda
}  // namespace paanet
