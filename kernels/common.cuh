// Launch plumbing shared by the CUDA kernels of both operators: per-scale descriptors passed by
// value (as in multi-tensor apply), 16-byte packs, the compute dtype, and division by a divisor
// fixed at launch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime.cuh"
#include "stable_api.h"

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

// Division by a divisor fixed for a launch, for values below 2^31: one multiply-high, an add and a
// shift instead of the division loop (the round-up method of Granlund and Montgomery). With
// shift = ceil(log2 d) and magic = floor(2^32 (2^shift - d) / d) + 1, n / d = (umulhi(n, magic) + n)
// >> shift exactly for every n < 2^32 when the sum is taken in 33 bits; n < 2^31 keeps it in 32.
struct Divider {
  unsigned int magic = 1, shift = 0;  // by default the divider by 1 (a ScaleBatch's unused slots)

  Divider() = default;

  // d in [1, 2^31].
  explicit Divider(unsigned int d) {
    PAANET_CHECK(d >= 1 && d <= (1u << 31), "paanet_fast: divisor ", d, " outside [1, 2^31]");
    while ((uint64_t{1} << shift) < d) ++shift;
    magic = static_cast<unsigned int>((((uint64_t{1} << shift) - d) << 32) / d + 1);
  }

  // n / divisor, for n < 2^31.
  __device__ __forceinline__ unsigned int div(unsigned int n) const { return (__umulhi(n, magic) + n) >> shift; }
};

// A (B, 1, H, W) map of any strides (the GAM, its gradients, the logits' gradient).
template <typename T>
struct MapView {
  const T* data;
  int64_t sb, sy, sx;

  __device__ __forceinline__ T at(int64_t b, int64_t y, int64_t x) const { return data[b * sb + y * sy + x * sx]; }
};

template <typename T>
MapView<T> map_view(const Tensor& t) {
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
inline ScalarType compute_dtype(ScalarType t) {
  return t == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

// The stride of dimension d, or 0 where it has size 1 (such strides address nothing and may hold
// any value in a contiguous tensor).
inline int64_t effective_stride(const Tensor& t, int64_t d) { return t.size(d) == 1 ? 0 : t.stride(d); }

}  // namespace cuda
}  // namespace paanet
