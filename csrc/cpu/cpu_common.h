// Helpers shared by the CPU kernels of both operators: the compute dtype, output layouts that
// match the Python fake kernels exactly, test-time poisoning, and flat task indices over scales.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

namespace paanet {
namespace cpu {

// float16 and bfloat16 are computed in float32: the kernels are memory-light, so the cast is cheap
// and every accumulation keeps float32 precision.
inline bool is_reduced_precision(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

inline std::vector<at::Tensor> to_dtype(at::TensorList tensors, at::ScalarType dtype) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.to(dtype));
  return out;
}

// `computed` with the strides of at::empty_like(like), which is what the fake kernels in
// paanet_fast/_compiled.py promise (torch.compile plans its buffers from those strides).
inline at::Tensor with_layout_of(const at::Tensor& computed, const at::Tensor& like) {
  at::Tensor out = at::empty_like(like, computed.options());
  if (out.strides() == computed.strides()) return computed;
  out.copy_(computed);
  return out;
}

inline std::vector<at::Tensor> with_layouts_of(at::TensorList computed, at::TensorList like) {
  std::vector<at::Tensor> out;
  out.reserve(computed.size());
  for (size_t i = 0; i < computed.size(); ++i) out.push_back(with_layout_of(computed[i], like[i]));
  return out;
}

// With PAANET_FAST_POISON set (the tests set it), freshly allocated outputs are filled with NaN
// before a kernel writes them, so an element the kernel forgets shows up as NaN, never as stale
// memory that happens to hold the right value.
inline at::Tensor poisoned_if_testing(at::Tensor t) {
  if (std::getenv("PAANET_FAST_POISON") != nullptr) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// Work items of all scales in one flat range, sample by sample: item i is item k of scale v of
// sample b. at::parallel_for splits a range statically into equal counts; in sample-major order
// each thread gets whole samples' worth of every scale, so the split stays balanced although items
// of different scales cost differently.
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

// at::parallel_for grain for items that cost about `work_per_item` element operations each.
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kWorkPerTask = 32768;
  return std::max<int64_t>(1, kWorkPerTask / std::max<int64_t>(1, work_per_item));
}

}  // namespace cpu
}  // namespace paanet
