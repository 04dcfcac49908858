// Helpers shared by the CPU kernels of both operators: the compute dtype, output layouts that
// match the Python fake kernels exactly, and flat task indices over scales.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "stable_api.h"

namespace paanet {
namespace cpu {

// float16 and bfloat16 are computed in float32: the kernels are memory-light, so the cast is cheap
// and every accumulation keeps float32 precision.
inline TensorList to_dtype(const TensorList& tensors, ScalarType dtype) {
  TensorList out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(torch::stable::to(t, dtype));
  return out;
}

// `computed` with the strides of empty_like(like), which is what the fake kernels in
// paanet_fast/_compiled.py promise (torch.compile plans its buffers from those strides).
inline Tensor with_layout_of(const Tensor& computed, const Tensor& like) {
  Tensor out = empty_like(like, computed.scalar_type());
  if (out.strides().equals(computed.strides())) return computed;
  torch::stable::copy_(out, computed);
  return out;
}

inline TensorList with_layouts_of(const TensorList& computed, const TensorList& like) {
  TensorList out;
  out.reserve(computed.size());
  for (size_t i = 0; i < computed.size(); ++i) out.push_back(with_layout_of(computed[i], like[i]));
  return out;
}

// ceil(a / b) for a >= 0, b > 0.
inline int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Work items of all scales in one flat range, sample by sample: item i is item k of scale v of
// sample b. parallel_for (ATen's, behind torch::stable::parallel_for) splits a range statically
// into equal counts; in sample-major order each thread gets whole samples' worth of every scale,
// so the split stays balanced although items of different scales cost differently.
class SampleMajorItems {
 public:
  struct Item {
    int64_t b;
    size_t v;
    int64_t k;
  };

  explicit SampleMajorItems(int64_t batch) : batch_(batch) {}
  void add_scale(int64_t items_per_sample) { starts_.push_back(per_sample() + items_per_sample); }
  int64_t per_sample() const { return starts_.back(); }
  int64_t total() const { return batch_ * per_sample(); }
  // Flat index of item 0 of scale v of sample b.
  int64_t first(int64_t b, size_t v) const { return b * per_sample() + starts_[v]; }

  Item locate(int64_t i) const {
    const int64_t b = i / per_sample(), r = i % per_sample();
    const size_t v = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), r) - starts_.begin()) - 1;
    return {b, v, r - starts_[v]};
  }

 private:
  int64_t batch_;
  std::vector<int64_t> starts_{0};
};

// parallel_for grain for items that cost about `work_per_item` element operations each.
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kWorkPerTask = 32768;
  return std::max<int64_t>(1, kWorkPerTask / std::max<int64_t>(1, work_per_item));
}

}  // namespace cpu
}  // namespace paanet
