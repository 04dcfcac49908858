// Launch plumbing shared by the CUDA kernels of both operators: per-scale descriptors passed by
// value (as in multi-tensor apply), 16-byte packs, and the compute dtype.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace paanet {
namespace cuda {

constexpr int kThreads = 256;

// Descriptors of up to this many scales travel in one launch's parameters (well under the 4 KiB
// limit); longer lists of scales run in several launches.
constexpr int kMaxScalesPerLaunch = 16;

// A group of per-scale descriptors for one launch. Scale v owns the work items (or blocks)
// [start[v], start[v + 1]) of the launch.
template <typename Desc>
struct ScaleBatch {
  Desc scale[kMaxScalesPerLaunch];
  int64_t start[kMaxScalesPerLaunch + 1];
  int count;

  // The scale that owns work item `item` (a short linear scan: count <= 16).
  __device__ __forceinline__ int scale_of(int64_t item) const {
    int v = 0;
    while (v + 1 < count && item >= start[v + 1]) ++v;
    return v;
  }
  __host__ __device__ int64_t total() const { return start[count]; }
};

// Calls launch(batch, first, last) for consecutive groups of at most kMaxScalesPerLaunch
// descriptors; items[v] is the number of work items of scale v.
template <typename Desc, typename Launch>
void for_each_batch(const std::vector<Desc>& descs, const std::vector<int64_t>& items, Launch&& launch) {
  const size_t n = descs.size();
  for (size_t begin = 0; begin < n; begin += kMaxScalesPerLaunch) {
    const size_t end = std::min(n, begin + kMaxScalesPerLaunch);
    ScaleBatch<Desc> batch{};
    batch.count = static_cast<int>(end - begin);
    batch.start[0] = 0;
    for (size_t v = begin; v < end; ++v) {
      batch.scale[v - begin] = descs[v];
      batch.start[v - begin + 1] = batch.start[v - begin] + items[v];
    }
    launch(batch, begin == 0, end == n);
  }
}

// Blocks for a grid-stride loop over `items` work items (at least one block).
inline unsigned int grid_for(int64_t items) {
  const int64_t cap = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((items + kThreads - 1) / kThreads, cap)));
}

// One thread per work item, all scales of a batch in one grid-stride loop: item i of scale v runs
// batch.scale[v].run(i - start[v]). Work is a descriptor with a `__device__ void run(int64_t) const`.
template <typename Work>
__global__ void __launch_bounds__(kThreads) per_item_kernel(const __grid_constant__ ScaleBatch<Work> batch) {
  const int64_t n = batch.total();
  for (int64_t item = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; item < n;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int v = batch.scale_of(item);
    batch.scale[v].run(item - batch.start[v]);
  }
}

// Launches per_item_kernel over work[v] with items[v] work items each, on the current stream.
template <typename Work>
void launch_per_item(const std::vector<Work>& work, const std::vector<int64_t>& items) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for_each_batch(work, items, [&](const ScaleBatch<Work>& batch, bool, bool) {
    if (batch.total() == 0) return;
    per_item_kernel<Work><<<grid_for(batch.total()), kThreads, 0, stream>>>(batch);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// A (B, 1, H, W) map of any strides (the GAM, its gradients, the logits' gradient).
template <typename T>
struct MapView {
  const T* data;
  int64_t sb, sy, sx;

  __device__ __forceinline__ T at(int64_t b, int64_t y, int64_t x) const { return data[b * sb + y * sy + x * sx]; }
};

template <typename T>
MapView<T> map_view(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.stride(0), t.stride(2), t.stride(3)};
}

// 16 bytes of T, loaded and stored as one vector instruction.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

inline bool is_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// float16, bfloat16 and float32 are computed in float32, float64 in float64.
inline at::ScalarType compute_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The stride of dimension d, or 0 where it has size 1 (such strides address nothing and may hold
// any value in a contiguous tensor).
inline int64_t effective_stride(const at::Tensor& t, int64_t d) { return t.size(d) == 1 ? 0 : t.stride(d); }

}  // namespace cuda
}  // namespace paanet
