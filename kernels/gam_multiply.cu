// CUDA kernels of paanet_fast::gam_multiply and paanet_fast::gam_multiply_backward (design 2.2).
//
// Forward: one launch for all scales; each block takes one low-res row segment of one sample of
// one scale, computes its pooled GAM on the fly in shared memory (window row sums in parallel,
// added in paanet::window_mean's order), then multiplies every channel of the segment with
// 16-byte loads and stores where alignment allows.
// Backward: dF_v = dP_v * a_v is the same launch; dG is a gather: the channel sums
// sum_c dP_v F_v are computed once per low-res pixel, then one thread per GAM pixel adds its
// windows' shares over the scales and writes dG once (deterministic, no atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "checks.h"
#include "common.cuh"
#include "cpu/cpu_common.h"
#include "paanet_math.h"

namespace paanet {
namespace cuda {
namespace {

constexpr int64_t kMaxTile = 256;        // low-res columns per block
constexpr int64_t kRowSumBudget = 2048;  // window row sums in shared memory per round

// How a (B, C, h, w) tensor and its partners (sharing its strides) are walked.
struct Layout {
  int64_t sb, sc, sy, sx;  // effective element strides (0 for size-1 dimensions)
  bool channels_inner;     // the channels are the stride-1 dimension (NHWC) rather than the width
  bool packed;             // every 16-byte pack along the stride-1 dimension is aligned
};

// The layout of `like`, packed only when every tensor in `partners` (which share its strides) is
// 16-byte aligned and the stride-1 dimension divides into packs.
template <typename scalar_t>
Layout layout_of(const at::Tensor& like, std::initializer_list<const at::Tensor*> partners) {
  constexpr int64_t N = Pack<scalar_t>::kSize;
  Layout l{effective_stride(like, 0), effective_stride(like, 1), effective_stride(like, 2), effective_stride(like, 3),
           false, false};
  l.channels_inner = like.size(1) > 1 && like.stride(1) == 1;
  bool aligned = true;
  for (const at::Tensor* t : partners) aligned = aligned && is_aligned16(t->const_data_ptr());
  if (l.channels_inner) {
    l.packed = like.size(1) % N == 0 && l.sb % N == 0 && l.sy % N == 0 && l.sx % N == 0;
  } else {
    l.packed = like.size(3) % N == 0 && l.sx == 1 && l.sb % N == 0 && l.sc % N == 0 && l.sy % N == 0;
  }
  l.packed = l.packed && aligned;
  return l;
}

// `t` itself when its strides match `like`'s, else a copy with them (kernels address a tensor and
// its partners with one set of strides).
at::Tensor with_strides_of(const at::Tensor& t, const at::Tensor& like) {
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (effective_stride(t, d) != effective_stride(like, d)) return at::empty_like(like).copy_(t);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// out = in * a_v (forward: F_v -> P_v; backward: dP_v -> dF_v)

template <typename scalar_t>
struct MultiplyScale {
  const scalar_t* in;
  scalar_t* out;
  Layout layout;
  int64_t channels, h, w;
  int64_t win_y, win_x;  // GAM pixels per low-res pixel
  int64_t tile_w, tiles_x, rows_per_round;
};

// a[xl] = attention of the low-res pixels (y, x0 + xl), xl < nx: window row sums in parallel,
// then each column's sums added top to bottom (paanet::window_mean's order).
template <typename scalar_t, typename acc_t>
__device__ void pooled_attention_row(const MapView<scalar_t>& gam, const MultiplyScale<scalar_t>& s, int64_t b,
                                     int64_t y, int64_t x0, int64_t nx, bool reverse, acc_t* row_sums, acc_t* a) {
  const scalar_t* top = gam.data + b * gam.sb + y * s.win_y * gam.sy + x0 * s.win_x * gam.sx;
  for (int64_t r0 = 0; r0 < s.win_y; r0 += s.rows_per_round) {
    const int64_t rows = s.win_y - r0 < s.rows_per_round ? s.win_y - r0 : s.rows_per_round;
    for (int64_t k = threadIdx.x; k < rows * nx; k += blockDim.x) {
      const int64_t i = k / nx, xl = k % nx;
      row_sums[k] = window_row_sum<acc_t>(top + (r0 + i) * gam.sy + xl * s.win_x * gam.sx, gam.sx, s.win_x);
    }
    __syncthreads();
    for (int64_t xl = threadIdx.x; xl < nx; xl += blockDim.x) {
      acc_t sum = r0 == 0 ? static_cast<acc_t>(0) : a[xl];
      for (int64_t i = 0; i < rows; ++i) sum += row_sums[i * nx + xl];
      a[xl] = sum;
    }
    __syncthreads();
  }
  for (int64_t xl = threadIdx.x; xl < nx; xl += blockDim.x) {
    a[xl] = attention(window_average(a[xl], s.win_y, s.win_x), reverse);
  }
  __syncthreads();
}

// N consecutive elements of the stride-1 dimension; lane j is scaled by a[j * a_step].
template <int N, typename scalar_t, typename acc_t>
__device__ __forceinline__ void multiply_pack(const scalar_t* in, scalar_t* out, const acc_t* a, int a_step) {
  if constexpr (N == 1) {
    *out = static_cast<scalar_t>(static_cast<acc_t>(*in) * a[0]);
  } else {
    Pack<scalar_t> p = *reinterpret_cast<const Pack<scalar_t>*>(in);
#pragma unroll
    for (int j = 0; j < N; ++j) p.v[j] = static_cast<scalar_t>(static_cast<acc_t>(p.v[j]) * a[j * a_step]);
    *reinterpret_cast<Pack<scalar_t>*>(out) = p;
  }
}

// All channels of the low-res pixels (y, x0 .. x0 + nx - 1), N elements per item.
template <int N, typename scalar_t, typename acc_t>
__device__ void multiply_segment(const MultiplyScale<scalar_t>& s, int64_t b, int64_t y, int64_t x0, int64_t nx,
                                 const acc_t* a) {
  const Layout& l = s.layout;
  const int64_t base = b * l.sb + y * l.sy;
  if (l.channels_inner) {
    const int64_t packs = s.channels / N;
    for (int64_t q = threadIdx.x; q < nx * packs; q += blockDim.x) {
      const int64_t xl = q / packs, c = (q % packs) * N;
      const int64_t off = base + (x0 + xl) * l.sx + c * l.sc;
      multiply_pack<N>(s.in + off, s.out + off, a + xl, 0);
    }
  } else {
    const int64_t packs = nx / N;
    for (int64_t q = threadIdx.x; q < s.channels * packs; q += blockDim.x) {
      const int64_t c = q / packs, xl = (q % packs) * N;
      const int64_t off = base + c * l.sc + (x0 + xl) * l.sx;
      multiply_pack<N>(s.in + off, s.out + off, a + xl, 1);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) multiply_by_pooled_gam_kernel(
    const __grid_constant__ ScaleBatch<MultiplyScale<scalar_t>> batch, MapView<scalar_t> gam, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t row_sums[kRowSumBudget];
  __shared__ acc_t a[kMaxTile];
  const int v = batch.scale_of(blockIdx.x);
  const MultiplyScale<scalar_t>& s = batch.scale[v];
  const int64_t local = blockIdx.x - batch.start[v];
  const int64_t tile = local % s.tiles_x, y = (local / s.tiles_x) % s.h, b = local / (s.tiles_x * s.h);
  const int64_t x0 = tile * s.tile_w, nx = s.w - x0 < s.tile_w ? s.w - x0 : s.tile_w;
  pooled_attention_row(gam, s, b, y, x0, nx, reverse, row_sums, a);
  if (s.layout.packed) {
    multiply_segment<Pack<scalar_t>::kSize>(s, b, y, x0, nx, a);
  } else {
    multiply_segment<1>(s, b, y, x0, nx, a);
  }
}

template <typename scalar_t>
void launch_multiply(const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& outputs,
                     const at::Tensor& gam, bool reverse) {
  std::vector<MultiplyScale<scalar_t>> descs;
  std::vector<int64_t> blocks;
  int64_t total = 0;
  for (size_t v = 0; v < inputs.size(); ++v) {
    const at::Tensor &in = inputs[v], &out = outputs[v];
    const int64_t h = in.size(2), w = in.size(3), tile_w = std::min(w, kMaxTile);
    const int64_t win_y = gam.size(2) / h;
    MultiplyScale<scalar_t> s{in.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                              layout_of<scalar_t>(out, {&in, &out}), in.size(1), h, w, win_y, gam.size(3) / w,
                              tile_w, (w + tile_w - 1) / tile_w,
                              std::max<int64_t>(1, std::min(win_y, kRowSumBudget / tile_w))};
    descs.push_back(s);
    blocks.push_back(in.size(0) * h * s.tiles_x);
    total += blocks.back();
  }
  if (total == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const MapView<scalar_t> g = map_view<scalar_t>(gam);
  for_each_batch(descs, blocks, [&](const ScaleBatch<MultiplyScale<scalar_t>>& batch, bool, bool) {
    TORCH_CHECK_VALUE(batch.total() <= INT32_MAX, "paanet_fast.gam_multiply: too many feature rows for one launch");
    if (batch.total() == 0) return;
    multiply_by_pooled_gam_kernel<scalar_t><<<static_cast<unsigned int>(batch.total()), kThreads, 0, stream>>>(
        batch, g, reverse);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::vector<at::Tensor> gam_multiply_cuda(at::TensorList features, const at::Tensor& gam, bool reverse) {
  check_gam_multiply_args(features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const c10::cuda::CUDAGuard guard(features[0].device());
  std::vector<at::Tensor> inputs, outputs;
  for (const auto& f : features) {
    outputs.push_back(cpu::poisoned_if_testing(at::empty_like(f)));
    inputs.push_back(with_strides_of(f, outputs.back()));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(), "gam_multiply_cuda", [&] {
    launch_multiply<scalar_t>(inputs, outputs, gam, reverse);
  });
  return outputs;
}

// ---------------------------------------------------------------------------------------------
// Backward: dot[b, y, x] = sum_c dP_v[b, c, y, x] F_v[b, c, y, x], then dG

// Work items of a scale: packs of N pixels along the width when the width is the packed
// dimension, single pixels otherwise. Every path adds the channels in order c = 0, 1, ..., so the
// sums do not depend on the layout.
template <typename scalar_t, typename acc_t>
struct DotScale {
  const scalar_t* grad;  // dP_v
  const scalar_t* feat;  // F_v, with dP_v's strides
  acc_t* out;            // (B, h, w) contiguous
  Layout layout;
  int64_t channels, h, w;

  static constexpr int N = Pack<scalar_t>::kSize;

  int64_t items(int64_t B) const { return layout.packed && !layout.channels_inner ? B * h * (w / N) : B * h * w; }

  __device__ void run(int64_t local) const {
    const Layout& l = layout;
    if (l.packed && !l.channels_inner) {  // N neighbouring pixels per thread
      const int64_t packs = w / N;
      const int64_t x = (local % packs) * N, row = local / packs, y = row % h, b = row / h;
      const int64_t base = b * l.sb + y * l.sy + x;
      acc_t sum[N];
#pragma unroll
      for (int j = 0; j < N; ++j) sum[j] = static_cast<acc_t>(0);
      for (int64_t c = 0; c < channels; ++c) {
        const Pack<scalar_t> g = *reinterpret_cast<const Pack<scalar_t>*>(grad + base + c * l.sc);
        const Pack<scalar_t> f = *reinterpret_cast<const Pack<scalar_t>*>(feat + base + c * l.sc);
#pragma unroll
        for (int j = 0; j < N; ++j) sum[j] += static_cast<acc_t>(g.v[j]) * static_cast<acc_t>(f.v[j]);
      }
#pragma unroll
      for (int j = 0; j < N; ++j) out[row * w + x + j] = sum[j];
      return;
    }
    const int64_t x = local % w, row = local / w, y = row % h, b = row / h;
    const int64_t base = b * l.sb + y * l.sy + x * l.sx;
    acc_t sum = static_cast<acc_t>(0);
    if (l.packed) {  // channels inner: N channels per load
      for (int64_t c = 0; c < channels; c += N) {
        const Pack<scalar_t> g = *reinterpret_cast<const Pack<scalar_t>*>(grad + base + c);
        const Pack<scalar_t> f = *reinterpret_cast<const Pack<scalar_t>*>(feat + base + c);
#pragma unroll
        for (int j = 0; j < N; ++j) sum += static_cast<acc_t>(g.v[j]) * static_cast<acc_t>(f.v[j]);
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) {
        sum += static_cast<acc_t>(grad[base + c * l.sc]) * static_cast<acc_t>(feat[base + c * l.sc]);
      }
    }
    out[local] = sum;
  }
};

// The channel sums of one scale, (B, h, w), and its GAM windows.
template <typename acc_t>
struct WindowGrad {
  const acc_t* dot;
  int64_t h, w, win_y, win_x;
};

// dG(b, Y, X) = sum_v sign * dot_v(b, Y / win_y, X / win_x) / (win_y * win_x), added over the scales
// in order; with more scales than one launch carries, the partial sums travel in `carry`.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) gam_grad_kernel(const __grid_constant__ ScaleBatch<WindowGrad<acc_t>> batch,
                                                            int64_t B, int64_t H, int64_t W, bool reverse,
                                                            const acc_t* carry_in, acc_t* carry_out, scalar_t* dgam,
                                                            int64_t sb, int64_t sy, int64_t sx) {
  const acc_t sign = attention_grad_sign<acc_t>(reverse);
  const int64_t n = B * H * W;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t X = i % W, Y = (i / W) % H, b = i / (H * W);
    acc_t sum = carry_in != nullptr ? carry_in[i] : static_cast<acc_t>(0);
    for (int v = 0; v < batch.count; ++v) {
      const WindowGrad<acc_t>& s = batch.scale[v];
      const acc_t dot = s.dot[(b * s.h + Y / s.win_y) * s.w + X / s.win_x];
      sum += sign * window_average(dot, s.win_y, s.win_x);
    }
    if (carry_out != nullptr) {
      carry_out[i] = sum;
    } else {
      dgam[b * sb + Y * sy + X * sx] = static_cast<scalar_t>(sum);
    }
  }
}

template <typename scalar_t>
void launch_gam_grad(const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& feats, const at::Tensor& gam,
                     bool reverse, at::Tensor& dgam) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = gam.size(0), H = gam.size(2), W = gam.size(3);
  if (dgam.numel() == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<DotScale<scalar_t, acc_t>> dots;
  std::vector<WindowGrad<acc_t>> windows;
  std::vector<int64_t> items;
  std::vector<at::Tensor> buffers;  // keep the channel sums alive until the dG launches are queued
  for (size_t v = 0; v < grads.size(); ++v) {
    const at::Tensor& g = grads[v];
    const int64_t h = g.size(2), w = g.size(3);
    buffers.push_back(cpu::poisoned_if_testing(at::empty({B, h, w}, gam.options().dtype(compute_dtype(gam.scalar_type())))));
    const Layout l = layout_of<scalar_t>(g, {&g, &feats[v]});
    dots.push_back({g.const_data_ptr<scalar_t>(), feats[v].const_data_ptr<scalar_t>(),
                    buffers.back().mutable_data_ptr<acc_t>(), l, g.size(1), h, w});
    windows.push_back({buffers.back().const_data_ptr<acc_t>(), h, w, H / h, W / w});
    items.push_back(dots.back().items(B));
  }
  launch_per_item(dots, items);
  at::Tensor carry;
  if (windows.size() > static_cast<size_t>(kMaxScalesPerLaunch)) carry = at::empty({B, H, W}, buffers[0].options());
  acc_t* carry_ptr = carry.defined() ? carry.mutable_data_ptr<acc_t>() : nullptr;
  for_each_batch(windows, std::vector<int64_t>(windows.size(), 0),
                 [&](const ScaleBatch<WindowGrad<acc_t>>& batch, bool first, bool last) {
    gam_grad_kernel<scalar_t, acc_t><<<grid_for(B * H * W), kThreads, 0, stream>>>(
        batch, B, H, W, reverse, first ? nullptr : carry_ptr, last ? nullptr : carry_ptr,
        dgam.mutable_data_ptr<scalar_t>(), dgam.stride(0), dgam.stride(2), dgam.stride(3));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<std::vector<at::Tensor>, at::Tensor> gam_multiply_backward_cuda(at::TensorList grad_outputs,
                                                                          at::TensorList features,
                                                                          const at::Tensor& gam, bool reverse) {
  check_gam_multiply_backward_args(grad_outputs, features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const c10::cuda::CUDAGuard guard(features[0].device());
  std::vector<at::Tensor> dfeatures, grads, feats;
  for (size_t v = 0; v < features.size(); ++v) {
    dfeatures.push_back(cpu::poisoned_if_testing(at::empty_like(features[v])));
    grads.push_back(with_strides_of(grad_outputs[v], dfeatures.back()));
    feats.push_back(with_strides_of(features[v], dfeatures.back()));
  }
  at::Tensor dgam = cpu::poisoned_if_testing(at::empty_like(gam));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features[0].scalar_type(), "gam_multiply_backward_cuda",
                                  [&] {
    launch_multiply<scalar_t>(grads, dfeatures, gam, reverse);
    launch_gam_grad<scalar_t>(grads, feats, gam, reverse, dgam);
  });
  return {dfeatures, dgam};
}

}  // namespace
}  // namespace cuda
}  // namespace paanet

TORCH_LIBRARY_IMPL(paanet_fast, CUDA, m) {
  m.impl("gam_multiply", &paanet::cuda::gam_multiply_cuda);
  m.impl("gam_multiply_backward", &paanet::cuda::gam_multiply_backward_cuda);
}
