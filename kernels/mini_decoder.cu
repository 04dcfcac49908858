// CUDA kernels of paanet_fast::mini_decoder and paanet_fast::mini_decoder_backward (design 2.1).
//
// Forward: the channels are reduced at low resolution to 9 tap planes per scale,
// r_v[t] = sum_c W[c_v, t] F_v[c] (an ATen matmul), then one full-resolution kernel computes
//   Z(Y, X) = b + sum_v sum_t valid(Y + dy_t, X + dx_t) * bilinear(r_v[t])(Y + dy_t, X + dx_t)
// from tiles of the tap planes staged in shared memory, and writes only Z and G = sigmoid(Z).
// Backward: dZ at full resolution, then the transposed resize of each tap as two gathers (rows,
// then columns), each output element summed by one thread in a fixed order: deterministic, no
// atomics. The feature and weight gradients are low-resolution matmuls.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "checks.h"
#include "common.cuh"
#include "cpu/cpu_common.h"
#include "low_res.h"
#include "paanet_math.h"

namespace paanet {
namespace cuda {
namespace {

// Output tile of one forward block: one thread per pixel.
constexpr int kTileW = 32;
constexpr int kTileH = 8;
// Shared memory for staged tap planes; scales that do not fit are sampled from global memory.
constexpr int64_t kStageBudgetBytes = 48 * 1024;

// ---------------------------------------------------------------------------------------------
// Forward

// The tap planes r_v (B, 9, h, w) of one scale, any strides, and where the forward kernel stages
// them: each tap's window at stage + stage_offset + t * stage_rows * stage_cols, row stride
// stage_cols; stage_offset < 0 means the scale is sampled from global memory.
template <typename acc_t>
struct TapPlanes {
  const acc_t* data;
  int64_t sb, st, sy, sx, h, w;
  int64_t stage_offset, stage_rows, stage_cols;
};

// The bilinear taps of the three coordinates centre - 1, centre, centre + 1 of one axis, with
// source indices shifted by `origin` (the first staged index) and a flag for the 3x3
// convolution's zero padding.
template <typename acc_t>
struct NeighbourTaps {
  LinearTap<acc_t> tap[3];
  bool valid[3];
};

template <typename acc_t>
__device__ __forceinline__ NeighbourTaps<acc_t> neighbour_taps(int64_t centre, int64_t in_size, int64_t out_size,
                                                               int64_t origin) {
  NeighbourTaps<acc_t> n;
  for (int k = 0; k < 3; ++k) {
    const int64_t p = centre + k - 1;
    n.valid[k] = p >= 0 && p < out_size;
    LinearTap<acc_t> t = linear_tap<acc_t>(n.valid[k] ? p : 0, in_size, out_size);
    t.i0 -= origin;
    t.i1 -= origin;
    n.tap[k] = t;
  }
  return n;
}

// The largest window of source indices that the tap of `tile` consecutive output coordinates,
// with a one-pixel halo on each side, can read: floor(scale * (tile + 1)) + 3 in exact
// arithmetic; three more absorb rounding of the source coordinate on host and device.
int64_t window_capacity(int64_t in_size, int64_t out_size, int64_t tile) {
  const double span = static_cast<double>(in_size) / static_cast<double>(out_size) * static_cast<double>(tile + 1);
  return std::min<int64_t>(in_size, static_cast<int64_t>(span) + 6);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTileW* kTileH) mini_decoder_forward_kernel(
    const __grid_constant__ ScaleBatch<TapPlanes<acc_t>> batch, int64_t B, int64_t H, int64_t W,
    const scalar_t* __restrict__ bias, const acc_t* carry_in, acc_t* carry_out, scalar_t* __restrict__ logits,
    scalar_t* __restrict__ gam) {
  extern __shared__ __align__(16) unsigned char stage_bytes[];
  acc_t* stage = reinterpret_cast<acc_t*>(stage_bytes);
  const int tid = threadIdx.y * kTileW + threadIdx.x;
  const int64_t X0 = static_cast<int64_t>(blockIdx.x) * kTileW, Y0 = static_cast<int64_t>(blockIdx.y) * kTileH;
  const int64_t X = X0 + threadIdx.x, Y = Y0 + threadIdx.y;
  const bool inside = X < W && Y < H;
  // The first and last coordinates that the tile's 3x3 taps read (the halo clipped to the image).
  const int64_t ya = Y0 > 0 ? Y0 - 1 : 0, yb = Y0 + kTileH < H ? Y0 + kTileH : H - 1;
  const int64_t xa = X0 > 0 ? X0 - 1 : 0, xb = X0 + kTileW < W ? X0 + kTileW : W - 1;

  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    for (int v = 0; v < batch.count; ++v) {
      const TapPlanes<acc_t>& s = batch.scale[v];
      if (s.stage_offset < 0) continue;
      const int64_t y_lo = linear_tap<acc_t>(ya, s.h, H).i0, rows = linear_tap<acc_t>(yb, s.h, H).i1 - y_lo + 1;
      const int64_t x_lo = linear_tap<acc_t>(xa, s.w, W).i0, cols = linear_tap<acc_t>(xb, s.w, W).i1 - x_lo + 1;
      CUDA_KERNEL_ASSERT(rows <= s.stage_rows && cols <= s.stage_cols);
      const acc_t* src = s.data + b * s.sb + y_lo * s.sy + x_lo * s.sx;
      acc_t* dst = stage + s.stage_offset;
      const int64_t plane = rows * cols;
      for (int64_t k = tid; k < kTaps * plane; k += kTileW * kTileH) {
        const int64_t t = k / plane, yy = (k % plane) / cols, xx = k % cols;
        dst[(t * s.stage_rows + yy) * s.stage_cols + xx] = src[t * s.st + yy * s.sy + xx * s.sx];
      }
    }
    __syncthreads();
    if (inside) {
      const int64_t o = (b * H + Y) * W + X;
      acc_t z = carry_in != nullptr ? carry_in[o] : static_cast<acc_t>(bias[0]);
      for (int v = 0; v < batch.count; ++v) {
        const TapPlanes<acc_t>& s = batch.scale[v];
        const bool staged = s.stage_offset >= 0;
        const int64_t y_lo = staged ? linear_tap<acc_t>(ya, s.h, H).i0 : 0;
        const int64_t x_lo = staged ? linear_tap<acc_t>(xa, s.w, W).i0 : 0;
        const NeighbourTaps<acc_t> ty = neighbour_taps<acc_t>(Y, s.h, H, y_lo);
        const NeighbourTaps<acc_t> tx = neighbour_taps<acc_t>(X, s.w, W, x_lo);
        const acc_t* base = staged ? stage + s.stage_offset : s.data + b * s.sb;
        const int64_t plane = staged ? s.stage_rows * s.stage_cols : s.st;
        const int64_t ry = staged ? s.stage_cols : s.sy, rx = staged ? 1 : s.sx;
#pragma unroll
        for (int t = 0; t < kTaps; ++t) {
          const int ky = tap_dy(t) + 1, kx = tap_dx(t) + 1;
          if (ty.valid[ky] && tx.valid[kx]) z += bilinear_sample<acc_t>(base + t * plane, ry, rx, ty.tap[ky], tx.tap[kx]);
        }
      }
      if (carry_out != nullptr) {
        carry_out[o] = z;
      } else {
        logits[o] = static_cast<scalar_t>(z);
        gam[o] = static_cast<scalar_t>(stable_sigmoid<acc_t>(z));
      }
    }
    __syncthreads();  // the next sample restages the shared tiles
  }
}

// Decides which scales of a launch stage their tap windows in shared memory; returns its bytes.
template <typename acc_t>
int64_t plan_staging(ScaleBatch<TapPlanes<acc_t>>& batch, int64_t H, int64_t W) {
  int64_t used = 0;  // in acc_t elements
  for (int v = 0; v < batch.count; ++v) {
    TapPlanes<acc_t>& s = batch.scale[v];
    s.stage_rows = window_capacity(s.h, H, kTileH);
    s.stage_cols = window_capacity(s.w, W, kTileW);
    const int64_t need = kTaps * s.stage_rows * s.stage_cols;
    if ((used + need) * static_cast<int64_t>(sizeof(acc_t)) <= kStageBudgetBytes) {
      s.stage_offset = used;
      used += need;
    } else {
      s.stage_offset = -1;
    }
  }
  return used * static_cast<int64_t>(sizeof(acc_t));
}

template <typename scalar_t>
void launch_forward(const std::vector<at::Tensor>& planes, const at::Tensor& bias, at::Tensor& logits,
                    at::Tensor& gam) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = logits.size(0), H = logits.size(2), W = logits.size(3);
  if (B == 0) return;
  const int64_t tiles_x = (W + kTileW - 1) / kTileW, tiles_y = (H + kTileH - 1) / kTileH;
  TORCH_CHECK_VALUE(tiles_x <= INT32_MAX && tiles_y <= 65535, "paanet_fast.mini_decoder: output size (", H, ", ",
                    W, ") is too large for the CUDA kernel");
  std::vector<TapPlanes<acc_t>> descs;
  for (const auto& p : planes) {
    descs.push_back({p.const_data_ptr<acc_t>(), p.stride(0), p.stride(1), p.stride(2), p.stride(3), p.size(2),
                     p.size(3), -1, 0, 0});
  }
  // More scales than one launch carries: the partial sums of Z travel between launches.
  at::Tensor carry;
  if (descs.size() > static_cast<size_t>(kMaxScalesPerLaunch)) {
    carry = at::empty({B, H, W}, planes[0].options());
  }
  acc_t* carry_ptr = carry.defined() ? carry.mutable_data_ptr<acc_t>() : nullptr;
  const dim3 grid(static_cast<unsigned int>(tiles_x), static_cast<unsigned int>(tiles_y),
                  static_cast<unsigned int>(std::min<int64_t>(B, 65535)));
  const dim3 block(kTileW, kTileH);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for_each_batch(descs, std::vector<int64_t>(descs.size(), 0), [&](ScaleBatch<TapPlanes<acc_t>> batch, bool first,
                                                                    bool last) {
    const int64_t smem = plan_staging(batch, H, W);
    mini_decoder_forward_kernel<scalar_t, acc_t><<<grid, block, smem, stream>>>(
        batch, B, H, W, bias.const_data_ptr<scalar_t>(), first ? nullptr : carry_ptr, last ? nullptr : carry_ptr,
        logits.mutable_data_ptr<scalar_t>(), gam.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> mini_decoder_cuda(at::TensorList features, const at::Tensor& weight,
                                                     const at::Tensor& bias, c10::SymIntArrayRef sym_size) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(sym_size);
  check_mini_decoder_args(features, weight, bias, size);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const c10::cuda::CUDAGuard guard(features[0].device());
  const at::ScalarType dtype = features[0].scalar_type(), acc = compute_dtype(dtype);
  const at::Tensor weight_acc = weight.to(acc);
  std::vector<at::Tensor> planes;
  int64_t offset = 0;
  for (const auto& f : features) {
    planes.push_back(reduce_channels(f.to(acc), scale_weight(weight_acc, offset, f.size(1))));
    offset += f.size(1);
  }
  const int64_t B = features[0].size(0), H = size[0], W = size[1];
  at::Tensor logits = cpu::poisoned_if_testing(at::empty({B, 1, H, W}, features[0].options()));
  at::Tensor gam = cpu::poisoned_if_testing(at::empty({B, 1, H, W}, features[0].options()));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "mini_decoder_cuda", [&] {
    launch_forward<scalar_t>(planes, bias, logits, gam);
  });
  return {logits, gam};
}

// ---------------------------------------------------------------------------------------------
// Backward

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) logit_grad_kernel(MapView<scalar_t> grad_logits, MapView<scalar_t> grad_gam,
                                                               MapView<scalar_t> gam, int64_t B, int64_t H, int64_t W,
                                                               acc_t* __restrict__ dz) {
  const int64_t n = B * H * W;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t X = i % W, Y = (i / W) % H, b = i / (H * W);
    dz[i] = logit_grad<acc_t>(static_cast<acc_t>(grad_logits.at(b, Y, X)), static_cast<acc_t>(grad_gam.at(b, Y, X)),
                              static_cast<acc_t>(gam.at(b, Y, X)));
  }
}

// Rows pass of the transposed resize of one scale, one thread per output element:
//   V[b, dy + 1, i, X] = sum_{P reading row i, Y = P - dy in [0, H)} wy(P, i) dZ[b, Y, X]
// V is (B, 3, h, W) contiguous.
template <typename acc_t>
struct RowsPass {
  const acc_t* dz;  // (B, H, W)
  acc_t* out;
  int64_t h, H, W;

  __device__ void run(int64_t local) const {
    const int64_t X = local % W, i = (local / W) % h, dy = (local / (W * h)) % 3 - 1, b = local / (3 * W * h);
    int64_t lo, hi;
    linear_tap_sources(i, h, H, &lo, &hi);
    const acc_t* column = dz + b * H * W + X;
    acc_t sum = static_cast<acc_t>(0);
    for (int64_t P = lo; P < hi; ++P) {
      const int64_t Y = P - dy;
      if (Y < 0 || Y >= H) continue;
      const acc_t w = linear_tap_weight(linear_tap<acc_t>(P, h, H), i);
      if (w != static_cast<acc_t>(0)) sum += w * column[Y * W];
    }
    out[local] = sum;
  }
};

// Columns pass, one thread per output element:
//   D[b, t, i, j] = sum_{Q reading column j, X = Q - dx_t in [0, W)} wx(Q, j) V[b, dy_t + 1, i, X]
// written through D's strides (D has the memory format of F_v).
template <typename acc_t>
struct ColumnsPass {
  const acc_t* rows;  // V of RowsPass
  acc_t* d;
  int64_t h, w, W;
  int64_t sb, st, sy, sx;

  __device__ void run(int64_t local) const {
    const int64_t j = local % w, i = (local / w) % h, t = (local / (w * h)) % kTaps, b = local / (kTaps * w * h);
    const int64_t dx = tap_dx(static_cast<int>(t));
    const acc_t* row = rows + ((b * 3 + tap_dy(static_cast<int>(t)) + 1) * h + i) * W;
    int64_t lo, hi;
    linear_tap_sources(j, w, W, &lo, &hi);
    acc_t sum = static_cast<acc_t>(0);
    for (int64_t Q = lo; Q < hi; ++Q) {
      const int64_t X = Q - dx;
      if (X < 0 || X >= W) continue;
      const acc_t wx = linear_tap_weight(linear_tap<acc_t>(Q, w, W), j);
      if (wx != static_cast<acc_t>(0)) sum += wx * row[X];
    }
    d[b * sb + t * st + i * sy + j * sx] = sum;
  }
};

// dZ (B, H, W) in the compute dtype.
at::Tensor logit_grads(const at::Tensor& grad_logits, const at::Tensor& grad_gam, const at::Tensor& gam,
                       at::ScalarType acc) {
  const int64_t B = gam.size(0), H = gam.size(2), W = gam.size(3);
  at::Tensor dz = at::empty({B, H, W}, gam.options().dtype(acc));
  if (dz.numel() == 0) return dz;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gam.scalar_type(), "mini_decoder_logit_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    logit_grad_kernel<scalar_t, acc_t><<<grid_for(dz.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        map_view<scalar_t>(grad_logits), map_view<scalar_t>(grad_gam), map_view<scalar_t>(gam), B, H, W,
        dz.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dz;
}

// Fills the tap-plane gradients D_v = upsample_bilinear^T(shift_t(dZ)) (B, 9, h_v, w_v).
template <typename acc_t>
void launch_transposed_resize(const at::Tensor& dz, const std::vector<at::Tensor>& d_planes) {
  const int64_t B = dz.size(0), H = dz.size(1), W = dz.size(2);
  std::vector<int64_t> row_items, column_items;
  int64_t total_rows = 0;
  for (const auto& d : d_planes) {
    row_items.push_back(B * 3 * d.size(2) * W);
    column_items.push_back(d.numel());
    total_rows += row_items.back();
  }
  const at::Tensor rows = cpu::poisoned_if_testing(at::empty({total_rows}, dz.options()));
  std::vector<RowsPass<acc_t>> row_passes;
  std::vector<ColumnsPass<acc_t>> column_passes;
  int64_t offset = 0;
  for (size_t v = 0; v < d_planes.size(); ++v) {
    const at::Tensor& d = d_planes[v];
    acc_t* out = rows.mutable_data_ptr<acc_t>() + offset;
    row_passes.push_back({dz.const_data_ptr<acc_t>(), out, d.size(2), H, W});
    column_passes.push_back({out, d.mutable_data_ptr<acc_t>(), d.size(2), d.size(3), W, d.stride(0), d.stride(1),
                             d.stride(2), d.stride(3)});
    offset += row_items[v];
  }
  launch_per_item(row_passes, row_items);
  launch_per_item(column_passes, column_items);
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> mini_decoder_backward_cuda(
    const at::Tensor& grad_logits, const at::Tensor& grad_gam, const at::Tensor& gam, at::TensorList features,
    const at::Tensor& weight) {
  check_mini_decoder_backward_args(grad_logits, grad_gam, gam, features, weight);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const c10::cuda::CUDAGuard guard(features[0].device());
  const at::ScalarType dtype = features[0].scalar_type(), acc = compute_dtype(dtype);

  const at::Tensor dz = logit_grads(grad_logits, grad_gam, gam, acc);
  const at::Tensor dbias = dz.sum().to(dtype).reshape({1});

  std::vector<at::Tensor> features_acc, d_planes;
  for (const auto& f : features) {
    features_acc.push_back(f.to(acc));
    const auto format = is_channels_last(f) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    d_planes.push_back(cpu::poisoned_if_testing(
        at::empty({f.size(0), kTaps, f.size(2), f.size(3)}, dz.options().memory_format(format))));
  }
  AT_DISPATCH_FLOATING_TYPES(acc, "mini_decoder_backward_cuda", [&] {
    launch_transposed_resize<scalar_t>(dz, d_planes);
  });

  const at::Tensor weight_acc = weight.to(acc);
  std::vector<at::Tensor> dfeatures, dweights;
  int64_t offset = 0;
  for (size_t v = 0; v < features.size(); ++v) {
    const int64_t channels = features[v].size(1);
    auto [df, dw] = feature_and_weight_grads(features_acc[v], scale_weight(weight_acc, offset, channels), d_planes[v]);
    dfeatures.push_back(cpu::with_layout_of(df.to(dtype), features[v]));
    dweights.push_back(dw);
    offset += channels;
  }
  const at::Tensor dweight = at::cat(dweights, 0).view({1, offset, 3, 3}).to(dtype);
  return {dfeatures, cpu::with_layout_of(dweight, weight), dbias};
}

}  // namespace
}  // namespace cuda
}  // namespace paanet

TORCH_LIBRARY_IMPL(paanet_fast, CUDA, m) {
  m.impl("mini_decoder", &paanet::cuda::mini_decoder_cuda);
  m.impl("mini_decoder_backward", &paanet::cuda::mini_decoder_backward_cuda);
}
