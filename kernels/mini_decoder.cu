// CUDA kernels of paanet_fast::mini_decoder and paanet_fast::mini_decoder_backward (design 2.1).
//
// Forward, two launches whatever the number of scales (up to kMaxScalesPerLaunch):
//   1. the channels of every scale are reduced at low resolution to 9 tap planes,
//      r_v[t] = sum_c W[c_v, t] F_v[c], into one float buffer;
//   2. one full-resolution kernel computes
//        Z(Y, X) = b + sum_v sum_t valid(Y + dy_t, X + dx_t) * bilinear(r_v[t])(Y + dy_t, X + dx_t)
//      separably (the column resize of each tap row's three taps, summed, for the source rows a
//      tile reads, in shared memory; then the row resize per pixel), and writes only Z and
//      G = sigmoid(Z).
// Backward, two launches: the transposed resize of each tap as two gathers, rows (with dZ
// recomputed from the incoming gradients, and per-block shares of db) then columns, which also
// apply the weights to give dF and leave per-block shares of dW, which the last block of each
// scale to finish adds up. Every output element is summed by one thread, or by one block in an
// order fixed by the shapes alone: deterministic, with atomics only to count finished blocks.
//
// The kernels read the input dtype and compute in float32 (float64 for float64 inputs); the weight
// and bias are of the features' dtype or float32 beside half features (weight_t), read as they are;
// the resize taps come from scales computed on the host, in 32-bit index arithmetic inside a sample
// (the host checks the sizes) with 64-bit offsets between samples.
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "common.cuh"
#include "low_res.h"
#include "paanet_math.h"
#include "stable_api.h"

namespace paanet {
namespace cuda {
namespace {

// Output tile of one forward block: kTileW columns x kTileH rows, one column a thread and every
// kForwardRowStep-th row of it.
constexpr int kTileW = 32;
constexpr int kTileH = 16;
constexpr int kForwardRowStep = 8;
constexpr int kRowsPerThread = kTileH / kForwardRowStep;
constexpr int kForwardThreads = kTileW * kForwardRowStep;
// The row and column taps of one forward tile and its one-pixel halo.
constexpr int kRowTaps = kTileH + 2;
constexpr int kColumnTaps = kTileW + 2;
// Source rows of one scale that a forward block resizes along its columns: a tile's halo rows read
// at most two source rows each.
constexpr int kSourceRows = 2 * kRowTaps;
// Whether a forward block holds the resize tables of four scales at once (PAANet's) and two buffers
// of resized rows, or one scale's and one buffer (a barrier more a scale): the first where a block's
// shared memory still allows four blocks an SM (float on sm_80 and newer, and in the CPU
// emulation); double, with two blocks an SM for its registers, gains little from it, and takes the
// second, which is therefore what the emulation checks for sm_75.
template <typename acc_t>
__host__ __device__ constexpr bool wide_forward() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  return false;
#else
  return sizeof(acc_t) == 4;
#endif
}
// Weights staged in shared memory per step of the channel loops.
constexpr int kWeightChunk = 64;

void check_fits_32bit(int64_t n, const char* what, const char* op) {
  PAANET_CHECK_VALUE(n <= INT32_MAX, op, ": ", what, " (", n,
                     " elements) is too large for the CUDA kernels (at most 2^31 - 1)");
}

// The (1, C, 3, 3) weight or its gradient, any strides.
template <typename T>
struct WeightView {
  T* data;
  int64_t sc, sy, sx;

  __device__ __forceinline__ T& at(int32_t c, int t) const { return data[c * sc + (t / 3) * sy + (t % 3) * sx]; }
};

template <typename T>
WeightView<T> weight_view(T* data, const Tensor& t) {
  return {data, t.stride(1), t.stride(2), t.stride(3)};
}

// A (B, C, h, w) feature map of one scale (or its gradient), any strides; its channels are
// [channel_offset, channel_offset + channels) of the weight; its tap planes (or their gradients)
// are the (B, 9, h, w) contiguous block at planes_offset of a float buffer.
template <typename T>
struct ScaleMap {
  T* data;
  int64_t sb, sc, sy, sx;
  int32_t h, w, channels, channel_offset;
  int64_t planes_offset;

  __device__ __forceinline__ int64_t offset(int64_t b, int32_t c, int32_t i, int32_t j) const {
    return b * sb + c * sc + i * sy + j * sx;
  }
};

template <typename T>
ScaleMap<T> scale_map(T* data, const Tensor& f, int64_t channel_offset, int64_t planes_offset) {
  return {data, f.stride(0), f.stride(1), f.stride(2), f.stride(3), static_cast<int32_t>(f.size(2)),
          static_cast<int32_t>(f.size(3)), static_cast<int32_t>(f.size(1)), static_cast<int32_t>(channel_offset),
          planes_offset};
}

// Blocks of kThreads work items per scale (for_each_batch's items: scale v owns the blocks
// [start[v], start[v + 1]) of a launch).
std::vector<int64_t> blocks_of(const std::vector<int64_t>& items) {
  std::vector<int64_t> blocks;
  for (int64_t n : items) blocks.push_back((n + kThreads - 1) / kThreads);
  return blocks;
}

__host__ __device__ __forceinline__ int32_t clamp_index(int32_t i, int32_t lo, int32_t hi) {
  return i < lo ? lo : (i > hi ? hi : i);
}

inline unsigned int batch_grid(int64_t B) { return static_cast<unsigned int>(std::min<int64_t>(B, max_grid_yz())); }

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls body(TypeTag<weight_t>) for the weight's type: scalar_t's, or float beside half features
// (float32 master parameters, checked by check_mini_decoder_args).
template <typename scalar_t, typename Body>
void with_weight_type(const Tensor& weight, Body&& body) {
  if constexpr (!std::is_same_v<scalar_t, float> && !std::is_same_v<scalar_t, double>) {
    if (weight.scalar_type() == ScalarType::Float) return body(TypeTag<float>{});
  }
  body(TypeTag<scalar_t>{});
}

// Copies the weights of channels [first, first + count) (count <= kWeightChunk) to `staged` in the
// compute dtype, for all threads of the block to read.
template <typename weight_t, typename acc_t>
__device__ __forceinline__ void stage_weights(const WeightView<const weight_t>& weight, int32_t first, int32_t count,
                                              acc_t (*staged)[kTaps]) {
  for (int k = threadIdx.x; k < count * kTaps; k += kThreads) {
    const int c = k / kTaps, t = k - c * kTaps;
    staged[c][t] = static_cast<acc_t>(weight.at(first + c, t));
  }
}

// Sums v[0..N) of every thread of the block into v of thread 0, in a fixed tree.
template <typename acc_t, int N>
__device__ __forceinline__ void block_sum(acc_t (&v)[N]) {
  __shared__ acc_t partial[N][kThreads];
  for (int n = 0; n < N; ++n) partial[n][threadIdx.x] = v[n];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) {
      for (int n = 0; n < N; ++n) partial[n][threadIdx.x] += partial[n][threadIdx.x + stride];
    }
    __syncthreads();
  }
  for (int n = 0; n < N; ++n) v[n] = partial[n][0];
}

// ---------------------------------------------------------------------------------------------
// Forward, launch 1: r_v[b, t, y, x] = sum_c W[c_v, t] F_v[b, c, y, x], one thread per low-res
// pixel, all scales of a batch in one launch (blockIdx.y: the sample).

template <typename scalar_t, typename weight_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 2) reduce_channels_kernel(
    const __grid_constant__ ScaleBatch<ScaleMap<const scalar_t>> batch, int64_t B,
    WeightView<const weight_t> weight, acc_t* __restrict__ planes) {
  __shared__ acc_t staged[kWeightChunk][kTaps];
  const int v = batch.scale_of(blockIdx.x);
  const ScaleMap<const scalar_t>& s = batch.scale[v];
  const int32_t plane = s.h * s.w;
  const int32_t k = static_cast<int32_t>(blockIdx.x - batch.start[v]) * kThreads + threadIdx.x;
  const bool inside = k < plane;
  const int32_t i = inside ? k / s.w : 0, j = inside ? k - i * s.w : 0;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const scalar_t* f = s.data + s.offset(b, 0, i, j);
    acc_t r[kTaps] = {};
    for (int32_t first = 0; first < s.channels; first += kWeightChunk) {
      const int32_t count = clamp_index(s.channels - first, 0, kWeightChunk);
      __syncthreads();  // the previous chunk is read by all
      stage_weights(weight, s.channel_offset + first, count, staged);
      __syncthreads();
      if (inside) {
        // Eight channels' loads in flight at once: at the model's sizes the grid has little more
        // than one block an SM (hence the registers for it: two blocks an SM at least).
#pragma unroll 8
        for (int32_t c = 0; c < count; ++c) {
          const acc_t value = static_cast<acc_t>(f[(first + c) * s.sc]);
#pragma unroll
          for (int t = 0; t < kTaps; ++t) r[t] += staged[c][t] * value;
        }
      }
    }
    if (inside) {
      acc_t* out = planes + s.planes_offset + b * (kTaps * plane) + k;
#pragma unroll
      for (int t = 0; t < kTaps; ++t) out[t * plane] = r[t];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward, launch 2: the full-resolution kernel.

// The tap planes of one scale ((B, 9, h, w) contiguous, compute dtype) and their resize scales.
template <typename acc_t>
struct ForwardScale {
  const acc_t* planes;
  acc_t scale_y, scale_x;
  int32_t h, w;
};

template <typename acc_t>
using Tap = LinearTap<acc_t, int32_t>;

template <typename scalar_t, typename weight_t, typename acc_t>
__global__ void __launch_bounds__(kForwardThreads, sizeof(acc_t) == 4 ? 4 : 2) mini_decoder_forward_kernel(
    const __grid_constant__ ScaleBatch<ForwardScale<acc_t>> batch, int64_t B, int32_t H, int32_t W,
    const weight_t* __restrict__ bias, const acc_t* carry_in, acc_t* carry_out, scalar_t* __restrict__ logits,
    scalar_t* __restrict__ gam) {
  // Per scale, separably: the column resize of each tap row dy's three taps, summed over dx, for
  // every source row the tile reads (`resized`, one slot a row), then the row resize of those sums
  // per pixel. The slots are the rows [first, first + count) that the tile's row taps span, or
  // where they span more (a scale resized down), the two rows of each halo row's tap in turn.
  // Where wide_forward(), the tables of four scales are made at once and the scales' resized rows
  // take turns in two buffers, so that a scale costs one barrier: a warp may load the next scale's
  // rows while others still read this scale's.
  constexpr int kTableScales = wide_forward<acc_t>() ? 4 : 1;
  constexpr int kBuffers = wide_forward<acc_t>() ? 2 : 1;
  __shared__ Tap<acc_t> row_taps[kTableScales][kRowTaps];  // i0, i1: the slots of the two rows, times kTileW
  __shared__ Tap<acc_t> column_taps[kTableScales][kColumnTaps];
  __shared__ int32_t slot_rows[kTableScales][kSourceRows];  // each slot's row offset in a tap plane
  __shared__ int32_t slot_count[kTableScales];
  __shared__ acc_t resized[kBuffers][3][kSourceRows * kTileW];

  const int tid = threadIdx.y * kTileW + threadIdx.x;
  const int32_t X0 = blockIdx.x * kTileW, Y0 = blockIdx.y * kTileH;
  const int32_t X = X0 + threadIdx.x;
  const bool col_valid[3] = {X > 0, true, X + 1 < W};

  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    acc_t z[kRowsPerThread];
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int32_t Y = Y0 + threadIdx.y + k * kForwardRowStep;
      const int64_t o = (b * H + Y) * W + X;
      z[k] = carry_in != nullptr && Y < H && X < W ? carry_in[o] : static_cast<acc_t>(bias[0]);
    }
    for (int group = 0; group < batch.count; group += kTableScales) {
      const int scales = batch.count - group < kTableScales ? batch.count - group : kTableScales;
      // The last group's (or sample's) tables and rows are still being read.
      if (group > 0 || b != blockIdx.z) __syncthreads();
      // Taps of rows Y0 - 1 .. Y0 + kTileH and columns X0 - 1 .. X0 + kTileW, clamped to the image
      // (the taps of coordinates outside it are never used).
      for (int k = tid; k < scales * (kRowTaps + kColumnTaps); k += kForwardThreads) {
        const int u = k / (kRowTaps + kColumnTaps), e = k - u * (kRowTaps + kColumnTaps);
        const ForwardScale<acc_t>& s = batch.scale[group + u];
        if (e < kRowTaps) {
          Tap<acc_t> t = resize_tap(clamp_index(Y0 - 1 + e, 0, H - 1), s.h, s.scale_y);
          const int32_t first = resize_tap(clamp_index(Y0 - 1, 0, H - 1), s.h, s.scale_y).i0;
          const int32_t span = resize_tap(clamp_index(Y0 + kTileH, 0, H - 1), s.h, s.scale_y).i1 - first + 1;
          const bool in_range = span <= kSourceRows;
          const int32_t slot0 = in_range ? t.i0 - first : 2 * e, slot1 = in_range ? t.i1 - first : 2 * e + 1;
          slot_rows[u][2 * e] = (in_range ? first + 2 * e : t.i0) * s.w;
          slot_rows[u][2 * e + 1] = (in_range ? first + 2 * e + 1 : t.i1) * s.w;
          if (e == 0) slot_count[u] = in_range ? span : kSourceRows;
          t.i0 = slot0 * kTileW;
          t.i1 = slot1 * kTileW;
          row_taps[u][e] = t;
        } else {
          column_taps[u][e - kRowTaps] = resize_tap(clamp_index(X0 - 1 + e - kRowTaps, 0, W - 1), s.w, s.scale_x);
        }
      }
      __syncthreads();
      for (int u = 0; u < scales; ++u) {
        const ForwardScale<acc_t>& s = batch.scale[group + u];
        acc_t(*rows)[kSourceRows * kTileW] = resized[u % kBuffers];
        if (kBuffers == 1 && u > 0) __syncthreads();  // the last scale's rows are still being read
        const int32_t plane = s.h * s.w;
        const acc_t* __restrict__ planes = s.planes + b * (kTaps * plane);
        // This thread's columns of each tap dx, as offsets from a tap row's plane of dy = 0
        // (unsigned, so that each address is one wide multiply-add).
        uint32_t columns[3][2];
        acc_t weights[3][2];
#pragma unroll
        for (int kx = 0; kx < 3; ++kx) {
          const Tap<acc_t> t = column_taps[u][threadIdx.x + kx];
          columns[kx][0] = static_cast<uint32_t>(t.i0 + kx * plane);
          columns[kx][1] = static_cast<uint32_t>(t.i1 + kx * plane);
          weights[kx][0] = t.w0;
          weights[kx][1] = t.w1;
        }
        for (int32_t slot = threadIdx.y; slot < slot_count[u]; slot += kForwardRowStep) {
#pragma unroll
          for (int ky = 0; ky < 3; ++ky) {
            const acc_t* __restrict__ row = planes + (slot_rows[u][slot] + 3 * ky * plane);
            acc_t sum = static_cast<acc_t>(0);
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
              // A tap in the padding adds nothing, even where the clamped column holds an Inf.
              const acc_t value = weights[kx][0] * row[columns[kx][0]] + weights[kx][1] * row[columns[kx][1]];
              sum += col_valid[kx] ? value : static_cast<acc_t>(0);
            }
            rows[ky][slot * kTileW + threadIdx.x] = sum;
          }
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kRowsPerThread; ++k) {
          const int e = threadIdx.y + k * kForwardRowStep;  // the halo row above this pixel's row
          const int32_t Y = Y0 + e;
          const bool row_valid[3] = {Y > 0, true, Y + 1 < H};
#pragma unroll
          for (int ky = 0; ky < 3; ++ky) {
            const Tap<acc_t> ty = row_taps[u][e + ky];
            const acc_t* column = rows[ky] + threadIdx.x;
            if (row_valid[ky]) z[k] += ty.w0 * column[ty.i0] + ty.w1 * column[ty.i1];
          }
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int32_t Y = Y0 + threadIdx.y + k * kForwardRowStep;
      if (Y >= H || X >= W) continue;
      const int64_t o = (b * H + Y) * W + X;
      if (carry_out != nullptr) {
        carry_out[o] = z[k];
      } else {
        logits[o] = static_cast<scalar_t>(z[k]);
        gam[o] = static_cast<scalar_t>(stable_sigmoid<acc_t>(z[k]));
      }
    }
  }
}

template <typename scalar_t, typename weight_t>
void launch_forward(const TensorList& features, const Tensor& weight, const Tensor& bias, const Tensor& logits,
                    const Tensor& gam) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t B = logits.size(0);
  const int32_t H = static_cast<int32_t>(logits.size(2)), W = static_cast<int32_t>(logits.size(3));
  if (B == 0) return;
  const cudaStream_t stream = current_stream();
  std::vector<ScaleMap<const scalar_t>> maps;
  std::vector<int64_t> plane_items;
  int64_t channel_offset = 0, planes_size = 0;
  for (const auto& f : features) {
    maps.push_back(scale_map(f.const_data_ptr<scalar_t>(), f, channel_offset, planes_size));
    plane_items.push_back(f.size(2) * f.size(3));
    channel_offset += f.size(1);
    planes_size += B * kTaps * plane_items.back();
  }
  const ScalarType acc_dtype = compute_dtype(logits.scalar_type());
  const Tensor planes = poisoned_if_testing(empty({planes_size}, acc_dtype, logits.device()));
  acc_t* planes_data = planes.mutable_data_ptr<acc_t>();
  const auto weights = weight_view(weight.const_data_ptr<weight_t>(), weight);
  for_each_batch(maps, blocks_of(plane_items), [&](const ScaleBatch<ScaleMap<const scalar_t>>& batch, bool,
                                                          bool) {
    reduce_channels_kernel<scalar_t, weight_t, acc_t><<<dim3(static_cast<unsigned int>(batch.total()), batch_grid(B)),
                                                        kThreads, 0, stream>>>(batch, B, weights, planes_data);
    check_launch("reduce_channels_kernel");
  });

  std::vector<ForwardScale<acc_t>> scales;
  for (const auto& m : maps) {
    scales.push_back({planes_data + m.planes_offset, resize_scale<acc_t>(m.h, H), resize_scale<acc_t>(m.w, W), m.h,
                      m.w});
  }
  // More scales than one launch carries: the partial sums of Z travel between launches.
  std::optional<Tensor> carry;
  if (scales.size() > static_cast<size_t>(kMaxScalesPerLaunch)) carry = empty({B, H, W}, acc_dtype, logits.device());
  acc_t* carry_ptr = carry ? carry->mutable_data_ptr<acc_t>() : nullptr;
  const dim3 grid(static_cast<unsigned int>((W + kTileW - 1) / kTileW),
                  static_cast<unsigned int>((H + kTileH - 1) / kTileH), batch_grid(B));
  const dim3 block(kTileW, kForwardRowStep);
  for_each_batch(scales, std::vector<int64_t>(scales.size(), 0), [&](const ScaleBatch<ForwardScale<acc_t>>& batch,
                                                                      bool first, bool last) {
    mini_decoder_forward_kernel<scalar_t, weight_t, acc_t><<<grid, block, 0, stream>>>(
        batch, B, H, W, bias.const_data_ptr<weight_t>(), first ? nullptr : carry_ptr, last ? nullptr : carry_ptr,
        logits.mutable_data_ptr<scalar_t>(), gam.mutable_data_ptr<scalar_t>());
    check_launch("mini_decoder_forward_kernel");
  });
}

// The sizes that the kernels index in 32-bit arithmetic.
void check_kernel_sizes(const TensorList& features, int64_t H, int64_t W, const char* op) {
  PAANET_CHECK_VALUE((H + kTileH - 1) / kTileH <= 65535, op, ": output height ", H,
                     " is too large for the CUDA kernel");
  check_fits_32bit(H * W, "the output map", op);
  for (const auto& f : features) {
    check_fits_32bit(kTaps * f.size(2) * f.size(3), "the tap planes of a scale", op);
    check_fits_32bit(3 * f.size(2) * W, "the row gradients of a scale", op);
    check_fits_32bit(f.size(1), "the channels of a scale", op);
  }
}

std::tuple<Tensor, Tensor> mini_decoder_cuda(const TensorList& features, const Tensor& weight, const Tensor& bias,
                                             IntList size) {
  check_mini_decoder_args(features, weight, bias, size);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const int64_t B = features[0].size(0), H = size[0], W = size[1];
  check_kernel_sizes(features, H, W, "paanet_fast.mini_decoder");
  const DeviceGuard guard(features[0].get_device_index());
  Tensor logits = poisoned_if_testing(empty({B, 1, H, W}, features[0].scalar_type(), features[0].device()));
  Tensor gam = poisoned_if_testing(empty({B, 1, H, W}, features[0].scalar_type(), features[0].device()));
  PAANET_DISPATCH_FLOATING_AND_HALF(features[0].scalar_type(), "mini_decoder_cuda", [&] {
    with_weight_type<scalar_t>(weight, [&](auto weight_type) {
      launch_forward<scalar_t, typename decltype(weight_type)::type>(features, weight, bias, logits, gam);
    });
  });
  return {logits, gam};
}

// ---------------------------------------------------------------------------------------------
// Backward

// dZ down one column (sample b, column X) of the gradients of both outputs and the GAM, read in
// their dtype and strides.
template <typename scalar_t>
struct LogitGradColumn {
  const scalar_t *grad_logits, *grad_gam, *gam;
  int64_t sy_logits, sy_grad_gam, sy_gam;
  int32_t H;

  // dZ at row Y, 0 outside the image: row 0 is read in place of the outside and dropped, so that the
  // loads have no branch around them and an unrolled loop issues several iterations' at once.
  template <typename acc_t>
  __device__ __forceinline__ acc_t dz(int32_t Y) const {
    const bool inside = Y >= 0 && Y < H;
    const int32_t y = inside ? Y : 0;
    const acc_t v = logit_grad<acc_t>(static_cast<acc_t>(grad_logits[y * sy_logits]),
                                      static_cast<acc_t>(grad_gam[y * sy_grad_gam]),
                                      static_cast<acc_t>(gam[y * sy_gam]));
    return inside ? v : static_cast<acc_t>(0);
  }
};

template <typename scalar_t>
struct LogitGradMaps {
  MapView<scalar_t> grad_logits, grad_gam, gam;
  int32_t H;

  __device__ __forceinline__ LogitGradColumn<scalar_t> column(int64_t b, int32_t X) const {
    return {grad_logits.data + b * grad_logits.sb + X * grad_logits.sx,
            grad_gam.data + b * grad_gam.sb + X * grad_gam.sx,
            gam.data + b * gam.sb + X * gam.sx,
            grad_logits.sy, grad_gam.sy, gam.sy, H};
  }
};

// One scale of the rows pass: its height, the lanes of an item's gather (log2), vertical resize
// scale and inverse, and its row gradients V (B, 3, h, W) contiguous at rows_offset of the rows
// buffer.
template <typename acc_t>
struct RowsScale {
  int32_t h, lane_shift;
  acc_t scale, inv_scale;
  int64_t rows_offset;
};

// The backward's gathers split each output's sum over 2^lane_shift threads (at most 32), so that a
// thread reads about `per_lane` coordinates. One thread an output, the threads of the stride-32
// scale looped over ~67 coordinates, each a memory round trip: on an H200 the columns pass took
// 35 us, and the rows pass 25.5 us with its loop unrolled by 4.
constexpr int kMaxLaneShift = 5;
constexpr int kThreadsShift = 8;
static_assert(kThreads == 1 << kThreadsShift, "kThreadsShift");
constexpr int kRowsPerLane = 32;    // the rows pass, unrolled by 4 (~5 rounds of loads at PAANet's strides)
constexpr int kColumnsPerLane = 8;  // the columns pass, not unrolled

// log2 of the lanes over which a gather of one of `low` source indices resized to `high` is split:
// at most 2 ceil(high / low) + 3 coordinates read one source index.
int32_t gather_lane_shift(int64_t low, int64_t high, int64_t per_lane) {
  const int64_t span = 2 * ((high + low - 1) / low) + 3;
  int32_t shift = 0;
  while (shift < kMaxLaneShift && (per_lane << shift) < span) ++shift;
  return shift;
}

// The output coordinates [lo, hi) that read source index `src` of an axis, for each thread, and
// [block_lo, block_hi) for the whole block: those of its first and last source index (the ranges
// only move forwards along the axis).
struct GatherRange {
  int32_t lo, hi, block_lo, block_hi;
};

template <typename acc_t>
__device__ __forceinline__ GatherRange gather_range(int32_t src, int32_t block_first, int32_t block_last,
                                                    int32_t in_size, int32_t out_size, acc_t scale,
                                                    acc_t inv_scale) {
  GatherRange g;
  int32_t unused;
  resize_tap_sources(src, in_size, out_size, scale, inv_scale, &g.lo, &g.hi);
  resize_tap_sources(block_first, in_size, out_size, scale, inv_scale, &g.block_lo, &unused);
  resize_tap_sources(block_last, in_size, out_size, scale, inv_scale, &unused, &g.block_hi);
  return g;
}

// Calls body(P, tap of P) for the output coordinates P = lo + lane, lo + lane + step, ... of the
// thread's range in ascending order, kUnroll at a time. The block computes the taps of its range
// once, kThreads at a time, into `table`; every thread of the block calls this (it synchronises the
// block).
template <int kUnroll, typename acc_t, typename Body>
__device__ __forceinline__ void gather_taps(Tap<acc_t>* table, const GatherRange& g, int32_t in_size, acc_t scale,
                                            int32_t lane, int32_t step, Body&& body) {
  int32_t P = g.lo + lane;
  for (int32_t first = g.block_lo; first < g.block_hi; first += kThreads) {
    __syncthreads();  // the previous chunk is read by all
    const int32_t mine = first + static_cast<int32_t>(threadIdx.x);
    if (mine < g.block_hi) table[threadIdx.x] = resize_tap(mine, in_size, scale);
    __syncthreads();
    const int32_t end = g.hi < first + kThreads ? g.hi : first + kThreads;
    // kUnroll iterations' loads at once where the body's loads do not depend on each other (the rows
    // pass: 12 loads in flight a thread, 64 registers). Not unrolled, each iteration waited for its
    // own loads: on an H200 the rows pass took 44.5 us, about the ~70 iterations of the coarsest
    // scale's threads times a memory round trip, however many warps were resident.
#pragma unroll kUnroll
    for (; P < end; P += step) body(P, table[P - first]);
  }
}

// Rows pass, kThreads >> lane_shift items (low-res row i, full-res column X) a block and sample:
//   V[b, dy + 1, i, X] = sum_{P reading row i} wy(P, i) dZ[b, P - dy, X]   (dZ = 0 outside)
// for the three dy at once, each lane of an item over one of 2^lane_shift consecutive parts of the
// rows P in ascending order, the lanes' sums then added in lane order (the items of a lane are
// adjacent threads: adjacent columns X). The threads of scale 0 also sum dZ[b, P, X] over the rows
// P of their part whose tap i0 is i, a partition of the rows; each block of scale 0 adds those sums
// up (a fixed tree) into bias_parts[b * blocks of scale 0 + block], where bias_parts is given.
// Block 0 of the first launch zeroes the columns pass's counters. Threads past the end of the
// scale's items repeat the last item without writing it (they take part in the block's table).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) rows_kernel(const __grid_constant__ ScaleBatch<RowsScale<acc_t>> batch,
                                                        LogitGradMaps<scalar_t> maps, int64_t B, int32_t W,
                                                        acc_t* __restrict__ rows, acc_t* __restrict__ bias_parts,
                                                        unsigned int* counters, int32_t counter_count) {
  __shared__ Tap<acc_t> table[kThreads];
  __shared__ acc_t lane_sums[3][kThreads];
  if (counters != nullptr && blockIdx.x == 0 && blockIdx.y == 0) {
    // At most one trip a thread (a counter a scale): unrolled, it was some 70 instructions of code.
#pragma unroll 1
    for (int32_t n = threadIdx.x; n < counter_count; n += kThreads) counters[n] = 0;
  }
  const int v = batch.scale_of(blockIdx.x);
  const RowsScale<acc_t>& s = batch.scale[v];
  const int32_t items = s.h * W, block = static_cast<int32_t>(blockIdx.x - batch.start[v]);
  const int32_t lanes = 1 << s.lane_shift, block_items = kThreads >> s.lane_shift;
  const int32_t slot = static_cast<int32_t>(threadIdx.x) & (block_items - 1);
  const int32_t lane = static_cast<int32_t>(threadIdx.x) >> (kThreadsShift - s.lane_shift);
  const int32_t first = block * block_items;
  const int32_t last = first + block_items < items ? first + block_items - 1 : items - 1;
  const bool inside = first + slot <= last;
  const int32_t k = inside ? first + slot : last;
  const int32_t i = k / W, X = k - i * W;
  GatherRange range = gather_range(i, first / W, last / W, s.h, maps.H, s.scale, s.inv_scale);
  {  // this lane's part of the item's rows
    const int32_t part = (range.hi - range.lo + lanes - 1) >> s.lane_shift;
    range.lo = range.lo + lane * part < range.hi ? range.lo + lane * part : range.hi;
    range.hi = range.lo + part < range.hi ? range.lo + part : range.hi;
  }
  const bool bias_block = v == 0 && bias_parts != nullptr;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const LogitGradColumn<scalar_t> column = maps.column(b, X);
    // dZ at rows P + 1, P and P - 1 (dy = -1, 0, 1), slid down one row per P.
    acc_t at_p = column.template dz<acc_t>(range.lo), at_prev = column.template dz<acc_t>(range.lo - 1);
    acc_t sum[3] = {}, bias_sum[1] = {static_cast<acc_t>(0)};
    gather_taps<4>(table, range, s.h, s.scale, 0, 1, [&](int32_t P, const Tap<acc_t>& tap) {
      const acc_t at_next = column.template dz<acc_t>(P + 1);
      const acc_t wy = linear_tap_weight(tap, i);
      if (wy != static_cast<acc_t>(0)) {
        sum[0] += wy * at_next;
        sum[1] += wy * at_p;
        sum[2] += wy * at_prev;
      }
      if (inside && tap.i0 == i) bias_sum[0] += at_p;
      at_prev = at_p;
      at_p = at_next;
    });
    if (lanes > 1) {
      __syncthreads();  // the previous sample's sums are read
#pragma unroll
      for (int r = 0; r < 3; ++r) lane_sums[r][threadIdx.x] = sum[r];
      __syncthreads();
      if (lane == 0) {
#pragma unroll
        for (int r = 0; r < 3; ++r) {
          sum[r] = lane_sums[r][slot];
          for (int32_t l = 1; l < lanes; ++l) sum[r] += lane_sums[r][l * block_items + slot];
        }
      }
    }
    if (inside && lane == 0) {
      acc_t* out = rows + s.rows_offset + b * (3 * items) + k;
#pragma unroll
      for (int r = 0; r < 3; ++r) out[r * items] = sum[r];
    }
    if (bias_block) {
      block_sum(bias_sum);
      if (threadIdx.x == 0) bias_parts[b * (batch.start[1] - batch.start[0]) + block] = bias_sum[0];
    }
  }
}

// Channels and pixel segments of a columns block's share of dW: lane c of segment g sums channel
// c0 + c over the g-th of kSegments equal parts of the block's pixels.
constexpr int kChannelLanes = 32;
constexpr int kSegments = kThreads / kChannelLanes;
// Parts into which the last block of a scale splits each dW element's sum over the blocks, and the
// shares of a part loaded at once.
constexpr int kBlockParts = 8;
constexpr int kSharesInFlight = 32;
// The largest share of a pixel's D a thread adds up from its lanes' parts (at least 2 lanes).
constexpr int kLaneSumsPerThread = (kTaps * kThreads / 2 + kThreads - 1) / kThreads;

// One scale of the columns pass: its features F and feature gradient dF (written), the row
// gradients V (B, 3, h, W) at rows_offset, where its blocks' shares of dW go (partials_offset: each
// block's (C_v, 9) in turn), its blocks in the launch (over all rows of the grid) and the counter of
// those finished, the lanes of a pixel's gather (log2), and the horizontal resize scale and inverse.
template <typename scalar_t, typename acc_t>
struct ColumnsScale {
  ScaleMap<const scalar_t> f;
  ScaleMap<scalar_t> df;
  int64_t rows_offset, partials_offset, blocks;
  int32_t counter, lane_shift;
  acc_t scale, inv_scale;
};

// dW[c_v, t]: the sums of the shares of the scale's blocks, each split into kBlockParts interleaved
// parts (blocks q, q + kBlockParts, ... in order) added in turn. Run by the scale's last block.
template <typename scalar_t, typename weight_t, typename acc_t>
__device__ void sum_shares(const ColumnsScale<scalar_t, acc_t>& s, int64_t blocks, const acc_t* partials,
                           WeightView<weight_t> dweight, acc_t* scratch) {
  const int32_t outputs = s.f.channels * kTaps, q = threadIdx.x % kBlockParts;
  const acc_t* shares = partials + s.partials_offset;
  for (int32_t e0 = 0; e0 < outputs; e0 += kThreads / kBlockParts) {
    const int32_t e = e0 + static_cast<int32_t>(threadIdx.x) / kBlockParts;
    acc_t sum = static_cast<acc_t>(0);
    if (e < outputs) {
      // kSharesInFlight loads, then their adds in order: one round trip for up to 8 x 32 blocks. The
      // shares past the scale's last block read as +0, which leaves a sum begun at +0 unchanged. With
      // `#pragma unroll 8` the compiler added the trip count's remainder first, one round trip a share
      // (the coarsest scale's 4 shares a part: 4 round trips, as many as the finest scale's 32 in
      // batches of 8).
      for (int64_t n0 = q; n0 < blocks; n0 += kSharesInFlight * kBlockParts) {
        acc_t part[kSharesInFlight];
#pragma unroll
        for (int k = 0; k < kSharesInFlight; ++k) {
          const int64_t n = n0 + k * kBlockParts;
          part[k] = n < blocks ? shares[n * outputs + e] : static_cast<acc_t>(0);
        }
#pragma unroll
        for (int k = 0; k < kSharesInFlight; ++k) sum += part[k];
      }
    }
    __syncthreads();  // the previous round's parts are read
    scratch[threadIdx.x] = sum;
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < kThreads / kBlockParts && e0 + static_cast<int32_t>(threadIdx.x) < outputs) {
      acc_t total = static_cast<acc_t>(0);
      for (int part = 0; part < kBlockParts; ++part) total += scratch[threadIdx.x * kBlockParts + part];
      const int32_t output = e0 + static_cast<int32_t>(threadIdx.x);
      dweight.at(s.f.channel_offset + output / kTaps, output % kTaps) = static_cast<weight_t>(total);
    }
  }
}

// Columns pass, kThreads >> lane_shift low-res pixels (i, j) a block and sample:
//   D[b, t, i, j] = sum_{Q reading column j} wx(Q, j) V[b, dy_t + 1, i, Q - dx_t]   (V = 0 outside)
// for the 9 taps at once, each lane of a pixel over every 2^lane_shift-th column Q in ascending
// order (the lanes of a pixel are adjacent threads: their reads interleave), the lanes' parts then
// added in lane order; then
//   dF[b, c, i, j] = sum_t W[c_v, t] D[b, t, i, j]   for every channel c of the scale,
// and the block's share of dW[c_v, t] = sum F[b, c] D[b, t] over its pixels and samples. The last
// block of each scale to finish adds up the shares into dW, and the last of scale 0, given
// bias_parts (the first launch), db = the sum of bias_parts[0..bias_count): one launch, in an
// order fixed by the shapes alone. Threads past the end of the plane repeat its last pixel
// without writing it. Four blocks an SM at least (three in double): at two, ptxas took 103-128
// registers (25% occupancy, the benchmark's 480 blocks in two waves on an H200) where 64 (80 in
// double) hold everything without a spill and with about as many instructions.
template <typename scalar_t, typename weight_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, sizeof(acc_t) == 4 ? 4 : 3) columns_kernel(
    const __grid_constant__ ScaleBatch<ColumnsScale<scalar_t, acc_t>> batch, int64_t B, int32_t W,
    WeightView<const weight_t> weight, const acc_t* __restrict__ rows, acc_t* __restrict__ partials,
    unsigned int* counters, WeightView<weight_t> dweight, const acc_t* __restrict__ bias_parts, int64_t bias_count,
    weight_t* __restrict__ dbias) {
  __shared__ Tap<acc_t> table[kThreads];
  __shared__ acc_t staged[kWeightChunk][kTaps];
  __shared__ acc_t scratch[kTaps * kThreads];  // the lanes' parts of D, D of the block's pixels, the segments' shares
  __shared__ bool last_block;
  const int v = batch.scale_of(blockIdx.x);
  const ColumnsScale<scalar_t, acc_t>& s = batch.scale[v];
  const ScaleMap<scalar_t>& df = s.df;
  const ScaleMap<const scalar_t>& f = s.f;
  const int64_t scale_blocks = batch.start[v + 1] - batch.start[v];
  const int64_t block = blockIdx.y * scale_blocks + (blockIdx.x - batch.start[v]);
  const int32_t lanes = 1 << s.lane_shift, pixels = kThreads >> s.lane_shift;
  const int32_t plane = df.h * df.w, first = static_cast<int32_t>(blockIdx.x - batch.start[v]) * pixels;
  const int32_t last = first + pixels < plane ? first + pixels - 1 : plane - 1;
  // The gather: pixel slot gather_slot, lane gather_lane of it.
  const int32_t gather_slot = static_cast<int32_t>(threadIdx.x) >> s.lane_shift;
  const int32_t gather_lane = static_cast<int32_t>(threadIdx.x) & (lanes - 1);
  const int32_t k = first + gather_slot <= last ? first + gather_slot : last;
  const int32_t i = k / df.w, j = k - i * df.w;
  // dF and the shares: pixel slot `slot`, channels group, group + lanes, ... (adjacent threads,
  // adjacent pixels).
  const int32_t slot = static_cast<int32_t>(threadIdx.x) & (pixels - 1);
  const int32_t group = static_cast<int32_t>(threadIdx.x) >> (kThreadsShift - s.lane_shift);
  const bool inside = first + slot <= last;
  const int32_t pixel = inside ? first + slot : last;
  const int32_t pixel_i = pixel / df.w, pixel_j = pixel - pixel_i * df.w;
  // The block's columns: from its first to its last pixel's, or all where it spans rows.
  const int32_t first_row = first / df.w, last_row = last / df.w;
  const int32_t j_first = first_row == last_row ? first - first_row * df.w : 0;
  const int32_t j_last = first_row == last_row ? last - last_row * df.w : df.w - 1;
  const GatherRange range = gather_range(j, j_first, j_last, df.w, W, s.scale, s.inv_scale);
  const int32_t row_stride = df.h * W;
  // The pixels of this thread's segment, for the share of dW.
  const int lane = threadIdx.x % kChannelLanes, segment = threadIdx.x / kChannelLanes;
  const int32_t segment_pixels = pixels / kSegments;
  const int32_t segment_first = first + segment * segment_pixels;
  const int32_t segment_end = segment_first + segment_pixels <= last + 1 ? segment_first + segment_pixels : last + 1;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const acc_t* vrow = rows + s.rows_offset + b * (3 * row_stride) + i * W;
    acc_t d[kTaps] = {};
    gather_taps<1>(table, range, df.w, s.scale, gather_lane, lanes, [&](int32_t Q, const Tap<acc_t>& tap) {
      // V of the three rows at columns Q + 1, Q and Q - 1 (dx = -1, 0, 1), 0 outside the row: column
      // Q is read in place of the outside and dropped, so that the loads have no branch around them.
      acc_t at[kTaps];
#pragma unroll
      for (int r = 0; r < 3; ++r) {
#pragma unroll
        for (int c = 0; c < 3; ++c) {
          const int32_t x = Q + 1 - c;
          const bool in_row = x >= 0 && x < W;
          const acc_t value = vrow[r * row_stride + (in_row ? x : Q)];
          at[3 * r + c] = in_row ? value : static_cast<acc_t>(0);
        }
      }
      const acc_t wx = linear_tap_weight(tap, j);
      if (wx != static_cast<acc_t>(0)) {
#pragma unroll
        for (int t = 0; t < kTaps; ++t) d[t] += wx * at[t];
      }
    });
    __syncthreads();  // scratch is free: the previous sample's shares are read
#pragma unroll
    for (int t = 0; t < kTaps; ++t) scratch[t * kThreads + threadIdx.x] = d[t];
    __syncthreads();
    if (lanes > 1) {
      // D[t, p] = the sum of pixel p's lanes' parts in lane order, the block's (tap, pixel) entries
      // shared out over its threads.
      acc_t sums[kLaneSumsPerThread];
#pragma unroll
      for (int n = 0; n < kLaneSumsPerThread; ++n) {
        const int32_t e = static_cast<int32_t>(threadIdx.x) + n * kThreads;
        sums[n] = static_cast<acc_t>(0);
        if (e < kTaps * pixels) {
          const int32_t t = e >> (kThreadsShift - s.lane_shift), p = e & (pixels - 1);
          const acc_t* parts = scratch + t * kThreads + (p << s.lane_shift);
          for (int32_t l = 0; l < lanes; ++l) sums[n] += parts[l];
        }
      }
      __syncthreads();  // the parts are read
#pragma unroll
      for (int n = 0; n < kLaneSumsPerThread; ++n) {
        const int32_t e = static_cast<int32_t>(threadIdx.x) + n * kThreads;
        if (e < kTaps * pixels) {
          const int32_t t = e >> (kThreadsShift - s.lane_shift), p = e & (pixels - 1);
          scratch[t * kThreads + p] = sums[n];
        }
      }
      __syncthreads();
    }
    acc_t pixel_d[kTaps];
#pragma unroll
    for (int t = 0; t < kTaps; ++t) pixel_d[t] = scratch[t * kThreads + slot];
    for (int32_t c0 = 0; c0 < df.channels; c0 += kWeightChunk) {
      const int32_t count = clamp_index(df.channels - c0, 0, kWeightChunk);
      __syncthreads();  // the previous chunk is read by all
      stage_weights(weight, df.channel_offset + c0, count, staged);
      __syncthreads();
      if (inside) {
        for (int32_t c = group; c < count; c += lanes) {
          acc_t sum = static_cast<acc_t>(0);
#pragma unroll
          for (int t = 0; t < kTaps; ++t) sum += staged[c][t] * pixel_d[t];
          df.data[df.offset(b, c0 + c, pixel_i, pixel_j)] = static_cast<scalar_t>(sum);
        }
      }
    }
    // The share of dW: lane c of each segment sums F[b, c0 + c] D over the segment's pixels, then
    // the segments are added in turn.
    for (int32_t c0 = 0; c0 < f.channels; c0 += kChannelLanes) {
      __syncthreads();  // scratch is free
      if (group == 0) {
#pragma unroll
        for (int t = 0; t < kTaps; ++t) scratch[t * kThreads + slot] = pixel_d[t];
      }
      __syncthreads();
      acc_t share[kTaps] = {};
      if (c0 + lane < f.channels && segment_first < segment_end) {
        int32_t y = segment_first / f.w, x = segment_first - y * f.w;
        const scalar_t* channel = f.data + f.offset(b, c0 + lane, 0, 0);
        for (int32_t p = segment_first; p < segment_end; ++p) {
          const acc_t value = static_cast<acc_t>(channel[y * f.sy + x * f.sx]);
#pragma unroll
          for (int t = 0; t < kTaps; ++t) share[t] += value * scratch[t * kThreads + (p - first)];
          if (++x == f.w) {
            x = 0;
            ++y;
          }
        }
      }
      __syncthreads();  // D is read
#pragma unroll
      for (int t = 0; t < kTaps; ++t) scratch[(t * kSegments + segment) * kChannelLanes + lane] = share[t];
      __syncthreads();
      for (int e = threadIdx.x; e < kChannelLanes * kTaps; e += kThreads) {
        const int t = e / kChannelLanes, c = e - t * kChannelLanes;
        if (c0 + c >= f.channels) continue;
        acc_t sum = static_cast<acc_t>(0);
        for (int g = 0; g < kSegments; ++g) sum += scratch[(t * kSegments + g) * kChannelLanes + c];
        acc_t* out = partials + s.partials_offset + (block * f.channels + c0 + c) * kTaps + t;
        *out = b == blockIdx.y ? sum : *out + sum;
      }
    }
  }
  // The last block of the scale to finish (its shares, like every block's, written before it
  // counts itself) adds up all of them.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last_block = atomicAdd(counters + s.counter, 1u) == s.blocks - 1;
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  sum_shares(s, s.blocks, partials, dweight, scratch);
  if (v == 0 && bias_parts != nullptr) {
    acc_t sum[1] = {static_cast<acc_t>(0)};
    for (int64_t n = threadIdx.x; n < bias_count; n += kThreads) sum[0] += bias_parts[n];
    block_sum(sum);
    if (threadIdx.x == 0) dbias[0] = static_cast<weight_t>(sum[0]);
  }
}

template <typename scalar_t, typename weight_t>
void launch_backward(const Tensor& grad_logits, const Tensor& grad_gam, const Tensor& gam,
                     const TensorList& features, const Tensor& weight, const TensorList& dfeatures,
                     const Tensor& dweight, const Tensor& dbias) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t B = gam.size(0);
  const int32_t H = static_cast<int32_t>(gam.size(2)), W = static_cast<int32_t>(gam.size(3));
  const cudaStream_t stream = current_stream();
  const ScalarType acc_dtype = compute_dtype(gam.scalar_type());

  if (B == 0) {  // no pixel: the sums are empty
    torch::stable::fill_(dweight, 0.0);
    torch::stable::fill_(dbias, 0.0);
    return;
  }
  std::vector<RowsScale<acc_t>> row_scales;
  std::vector<ColumnsScale<scalar_t, acc_t>> column_scales;
  std::vector<int64_t> row_items, column_items;
  int64_t channel_offset = 0, rows_size = 0, partials_size = 0;
  const int64_t samples_in_grid = batch_grid(B);
  for (size_t v = 0; v < features.size(); ++v) {
    const Tensor& f = features[v];
    const int64_t h = f.size(2), w = f.size(3);
    const int32_t row_lane_shift = gather_lane_shift(h, H, kRowsPerLane);
    row_scales.push_back({static_cast<int32_t>(h), row_lane_shift, resize_scale<acc_t>(h, H), resize_scale<acc_t>(H, h),
                          rows_size});
    const int32_t lane_shift = gather_lane_shift(w, W, kColumnsPerLane);
    column_items.push_back((h * w) << lane_shift);
    const int64_t blocks = samples_in_grid * blocks_of({column_items.back()})[0];
    column_scales.push_back({scale_map(f.const_data_ptr<scalar_t>(), f, channel_offset, 0),
                             scale_map(dfeatures[v].mutable_data_ptr<scalar_t>(), dfeatures[v], channel_offset, 0),
                             rows_size, partials_size, blocks, static_cast<int32_t>(v), lane_shift,
                             resize_scale<acc_t>(w, W), resize_scale<acc_t>(W, w)});
    row_items.push_back((h * W) << row_lane_shift);
    channel_offset += f.size(1);
    rows_size += B * 3 * h * W;
    partials_size += blocks * f.size(1) * kTaps;
  }
  const Tensor rows = poisoned_if_testing(empty({rows_size}, acc_dtype, gam.device()));
  const Tensor partials = poisoned_if_testing(empty({partials_size}, acc_dtype, gam.device()));
  const int64_t bias_count = B * blocks_of({row_items[0]})[0];
  const Tensor bias_parts = poisoned_if_testing(empty({bias_count}, acc_dtype, gam.device()));
  const int32_t counter_count = static_cast<int32_t>(features.size());
  const Tensor counters = poisoned_if_testing(empty({counter_count}, ScalarType::Int, gam.device()));
  unsigned int* counters_data = static_cast<unsigned int*>(counters.mutable_data_ptr());
  const LogitGradMaps<scalar_t> maps{map_view<scalar_t>(grad_logits), map_view<scalar_t>(grad_gam),
                                     map_view<scalar_t>(gam), H};
  const auto weights = weight_view(weight.const_data_ptr<weight_t>(), weight);
  const auto dweights = weight_view(dweight.mutable_data_ptr<weight_t>(), dweight);

  for_each_batch(row_scales, blocks_of(row_items), [&](const ScaleBatch<RowsScale<acc_t>>& batch, bool first, bool) {
    rows_kernel<scalar_t, acc_t><<<dim3(static_cast<unsigned int>(batch.total()), batch_grid(B)), kThreads, 0,
                                   stream>>>(batch, maps, B, W, rows.mutable_data_ptr<acc_t>(),
                                             first ? bias_parts.mutable_data_ptr<acc_t>() : nullptr,
                                             first ? counters_data : nullptr, counter_count);
    check_launch("rows_kernel");
  });
  for_each_batch(column_scales, blocks_of(column_items), [&](const ScaleBatch<ColumnsScale<scalar_t, acc_t>>& batch,
                                                            bool first, bool) {
    columns_kernel<scalar_t, weight_t, acc_t><<<dim3(static_cast<unsigned int>(batch.total()), batch_grid(B)),
                                                kThreads, 0, stream>>>(
        batch, B, W, weights, rows.const_data_ptr<acc_t>(), partials.mutable_data_ptr<acc_t>(), counters_data,
        dweights, first ? bias_parts.const_data_ptr<acc_t>() : nullptr, bias_count, dbias.mutable_data_ptr<weight_t>());
    check_launch("columns_kernel");
  });
}

std::tuple<TensorList, Tensor, Tensor> mini_decoder_backward_cuda(const Tensor& grad_logits, const Tensor& grad_gam,
                                                                  const Tensor& gam, const TensorList& features,
                                                                  const Tensor& weight) {
  check_mini_decoder_backward_args(grad_logits, grad_gam, gam, features, weight);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  check_kernel_sizes(features, gam.size(2), gam.size(3), "paanet_fast.mini_decoder_backward");
  const DeviceGuard guard(features[0].get_device_index());
  TensorList dfeatures;
  for (const auto& f : features) dfeatures.push_back(poisoned_if_testing(paanet::empty_like(f)));
  Tensor dweight = poisoned_if_testing(paanet::empty_like(weight));
  Tensor dbias = poisoned_if_testing(empty({1}, weight.scalar_type(), weight.device()));
  PAANET_DISPATCH_FLOATING_AND_HALF(features[0].scalar_type(), "mini_decoder_backward_cuda", [&] {
    with_weight_type<scalar_t>(weight, [&](auto weight_type) {
      launch_backward<scalar_t, typename decltype(weight_type)::type>(grad_logits, grad_gam, gam, features, weight,
                                                                       dfeatures, dweight, dbias);
    });
  });
  return {dfeatures, dweight, dbias};
}

}  // namespace
}  // namespace cuda
}  // namespace paanet

STABLE_TORCH_LIBRARY_IMPL(paanet_fast, CUDA, m) {
  m.impl("mini_decoder", TORCH_BOX(&paanet::cuda::mini_decoder_cuda));
  m.impl("mini_decoder_backward", TORCH_BOX(&paanet::cuda::mini_decoder_backward_cuda));
}
