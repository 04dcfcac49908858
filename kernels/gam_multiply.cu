// CUDA kernels of paanet_fast::gam_multiply and paanet_fast::gam_multiply_backward (design 2.2).
//
// One kernel does the work of both directions over all scales in one launch (one per layout of the
// tensors, where the scales differ in layout): each block takes one
// low-res row segment of one sample of one scale, pools its GAM windows in shared memory (column
// sums, then each window's columns: the CPU kernel's order), then scales every channel of the
// segment (forward: P = F a; backward: dF = dP a), with 16-byte loads and stores where the layouts
// allow. The backward block also sums dP F over the channels of each low-res pixel while dP is in
// registers, so dP is read once, and writes that window gradient (times sign / window area) to a
// small (B, h, w) buffer per scale; a second launch gathers dG from those buffers, one block per GAM
// row, and writes it once per pixel (deterministic: no atomics, a summation order fixed by the
// shapes alone). Where every window divides the largest (PAANet's strides), both directions run
// instead in gam_region_kernel below, one block per window of the coarsest scale: the backward in
// one launch.
//
// Index arithmetic: block coordinates come from 32-bit divisions done once per block, element
// offsets are 64-bit bases plus strided loop counters, and the GAM-pixel-to-window divisions of the
// gather use magic-number dividers built on the host. Inputs and outputs are addressed through their
// own strides (no stride copies) and converted to the compute type in the loads and stores.
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "checks.h"
#include "common.cuh"
#include "paanet_math.h"
#include "stable_api.h"

namespace paanet {
namespace cuda {
namespace {

constexpr int kMaxTile = 256;          // low-res columns per block
constexpr int kSharedSums = 2048;      // GAM column sums per round, or partial channel sums per block
constexpr int kGradRows = 4;           // GAM rows per block of the dG gather

// The element strides of a (B, C, h, w) tensor, 0 for size-1 dimensions.
struct Strides {
  int64_t b, c, y, x;
};

Strides strides_of(const Tensor& t) {
  return {effective_stride(t, 0), effective_stride(t, 1), effective_stride(t, 2), effective_stride(t, 3)};
}

// A (B, C, h, w) tensor of one scale, addressed through its own strides.
template <typename T>
struct Plane {
  T* data;
  Strides s;

  // The element (b, 0, y, x0): the origin of a block's row segment.
  __device__ __forceinline__ T* segment(int b, int y, int x0) const {
    return data + b * s.b + y * s.y + x0 * s.x;
  }
};

// One scale of a launch. `feat` and `window_grad` are the backward's (F and the (B, h, w) buffer of
// sum_c dP F times sign / area); the forward leaves them null.
template <typename scalar_t, typename acc_t>
struct Scale {
  Plane<const scalar_t> in;  // F (forward) or dP (backward)
  Plane<scalar_t> out;       // P or dF
  Plane<const scalar_t> feat;
  acc_t* window_grad;
  int channels, h, w, win_y, win_x;
  acc_t weight;          // 1 / (win_y * win_x)
  int tile_w, tiles_x;   // low-res columns per block, blocks per low-res row
};

// a[xl] = attention of the low-res pixels (y, x0 + xl), xl < nx. Each round sums up to kSharedSums
// GAM columns down the window rows, then each window adds its columns left to right, carrying its
// running sum across rounds: the CPU kernel's order (attention_row in cpu/gam_multiply_kernels.inc).
template <typename scalar_t, typename acc_t>
__device__ void pool_segment(const MapView<scalar_t>& gam, const Scale<scalar_t, acc_t>& s, int b, int y, int x0,
                             int nx, bool reverse, acc_t* columns, acc_t* a) {
  const scalar_t* top = gam.data + b * gam.sb + static_cast<int64_t>(y) * s.win_y * gam.sy +
                        static_cast<int64_t>(x0) * s.win_x * gam.sx;
  const int width = nx * s.win_x;
  for (int first = 0; first < width; first += kSharedSums) {
    const int count = std::min(width - first, int{kSharedSums});
    for (int X = threadIdx.x; X < count; X += blockDim.x) {
      const scalar_t* column = top + static_cast<int64_t>(first + X) * gam.sx;
      acc_t sum = static_cast<acc_t>(0);
      for (int r = 0; r < s.win_y; ++r) sum += static_cast<acc_t>(column[r * gam.sy]);
      columns[X] = sum;
    }
    __syncthreads();
    for (int xl = threadIdx.x; xl < nx; xl += blockDim.x) {
      const int lo = std::max(xl * s.win_x, first), hi = std::min((xl + 1) * s.win_x, first + count);
      acc_t sum = first == 0 ? static_cast<acc_t>(0) : a[xl];
      for (int X = lo; X < hi; ++X) sum += columns[X - first];
      a[xl] = sum;
    }
    __syncthreads();
  }
  for (int xl = threadIdx.x; xl < nx; xl += blockDim.x) a[xl] = attention(window_average(a[xl], s.weight), reverse);
  __syncthreads();
}

// N consecutive elements of the inner dimension, read and written as one 16-byte pack when N > 1.
template <int N, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_pack(const scalar_t* p, acc_t (&v)[N]) {
  if constexpr (N == 1) {
    v[0] = static_cast<acc_t>(*p);
  } else {
    const Pack<scalar_t> pack = *reinterpret_cast<const Pack<scalar_t>*>(p);
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = static_cast<acc_t>(pack.v[j]);
  }
}

template <int N, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_pack(scalar_t* p, const acc_t (&v)[N]) {
  if constexpr (N == 1) {
    *p = static_cast<scalar_t>(v[0]);
  } else {
    Pack<scalar_t> pack;
#pragma unroll
    for (int j = 0; j < N; ++j) pack.v[j] = static_cast<scalar_t>(v[j]);
    *reinterpret_cast<Pack<scalar_t>*>(p) = pack;
  }
}

// Three tensors walked in step: `in` and `feat` read, `out` written, each advanced by its own stride.
template <typename scalar_t>
struct Walk {
  const scalar_t* in;
  const scalar_t* feat;  // null in the forward
  scalar_t* out;
  int64_t in_step, feat_step, out_step;
};

// The packs first, first + step, ... below end of a walk: out = in * factor, and in the backward
// dot += in * feat, lane by lane. Not unrolled: unrolling takes the backward past 64 registers
// (under 50% occupancy), and the resident warps, not one thread's iterations, keep memory busy.
template <int N, bool kBackward, typename scalar_t, typename acc_t>
__device__ __forceinline__ void scale_packs(Walk<scalar_t> t, int first, int end, int step, const acc_t (&factor)[N],
                                            acc_t (&dot)[N]) {
#pragma unroll 1
  for (int k = first; k < end; k += step) {
    acc_t v[N], f[N];
    load_pack<N>(t.in, v);
    if constexpr (kBackward) load_pack<N>(t.feat, f);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if constexpr (kBackward) dot[j] += v[j] * f[j];
      v[j] *= factor[j];
    }
    store_pack<N>(t.out, v);
    t.in += t.in_step;
    t.out += t.out_step;
    if constexpr (kBackward) t.feat += t.feat_step;
  }
}

// The walk of one scale's tensors from element (b, c, y, x), `step` channels at a time.
template <bool kBackward, typename scalar_t, typename acc_t>
__device__ __forceinline__ Walk<scalar_t> channel_walk(const Scale<scalar_t, acc_t>& s, int b, int c, int y, int x,
                                                       int step) {
  Walk<scalar_t> t{};
  t.in = s.in.segment(b, y, x) + c * s.in.s.c;
  t.out = s.out.segment(b, y, x) + c * s.out.s.c;
  t.in_step = step * s.in.s.c;
  t.out_step = step * s.out.s.c;
  if constexpr (kBackward) {
    t.feat = s.feat.segment(b, y, x) + c * s.feat.s.c;
    t.feat_step = step * s.feat.s.c;
  }
  return t;
}

// out = in * a over the segment, with the threads along the width: thread (i, g) takes the pack of
// columns i and the channels g, g + groups, ...; in the backward it leaves its N channel sums of
// dP F in partial[g * nx + column]. Returns the number of groups.
template <int N, bool kBackward, typename scalar_t, typename acc_t>
__device__ int scale_width_inner(const Scale<scalar_t, acc_t>& s, int b, int y, int x0, int nx, const acc_t* a,
                                 acc_t* partial) {
  const int packs = nx / N;  // <= blockDim.x: the host keeps tile_w <= kMaxTile
  const int groups = blockDim.x / packs, i = threadIdx.x % packs, g = threadIdx.x / packs;
  if (g >= groups) return groups;
  acc_t factor[N], dot[N];
#pragma unroll
  for (int j = 0; j < N; ++j) {
    factor[j] = a[i * N + j];
    dot[j] = static_cast<acc_t>(0);
  }
  scale_packs<N, kBackward>(channel_walk<kBackward>(s, b, g, y, x0 + i * N, groups), g, s.channels, groups, factor,
                            dot);
  if constexpr (kBackward) {
#pragma unroll
    for (int j = 0; j < N; ++j) partial[g * nx + i * N + j] = dot[j];
  }
  return groups;
}

// The same with the threads along the channels: thread (i, g) takes the channel packs i,
// i + lanes, ... of the columns g, g + groups, ...; in the backward it leaves its share of each
// column's sum of dP F in partial[i * nx + column]. Returns the number of lanes.
template <int N, bool kBackward, typename scalar_t, typename acc_t>
__device__ int scale_channels_inner(const Scale<scalar_t, acc_t>& s, int b, int y, int x0, int nx, const acc_t* a,
                                    acc_t* partial) {
  const int packs = s.channels / N;
  const int lanes = std::min<int>(packs, blockDim.x), groups = blockDim.x / lanes;
  const int i = threadIdx.x % lanes, g = threadIdx.x / lanes;
  if (g >= groups) return lanes;
  for (int x = g; x < nx; x += groups) {
    acc_t factor[N], dot[N];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      factor[j] = a[x];
      dot[j] = static_cast<acc_t>(0);
    }
    scale_packs<N, kBackward>(channel_walk<kBackward>(s, b, i * N, y, x0 + x, lanes * N), i, packs, lanes, factor,
                              dot);
    if constexpr (kBackward) {
      acc_t sum = dot[0];
#pragma unroll
      for (int j = 1; j < N; ++j) sum += dot[j];
      partial[i * nx + x] = sum;
    }
  }
  return lanes;
}

// How a launch walks its scales' tensors: the threads along the channels (NHWC-like) or along the
// width, and in 16-byte packs along that inner dimension or element by element. Template arguments
// of the kernel, not branches in it, so that each compiled kernel holds one path and the registers
// it needs: one launch for the scales whose outputs are NHWC-like, one for the others (one in all
// in the usual case), each in packs where every tensor of its scales allows them.
// The forward at 40 registers or fewer (six blocks an SM, 75% occupancy; it streams F in and P out,
// so resident warps are what hides memory latency); the backward at four blocks, as six would spill.
template <bool kBackward, bool kChannelsInner, bool kPacked, typename scalar_t>
__global__ void __launch_bounds__(kThreads, kBackward ? 4 : 6) gam_scale_kernel(
    const __grid_constant__ ScaleBatch<Scale<scalar_t, opmath_t<scalar_t>>> batch, MapView<scalar_t> gam,
    bool reverse) {
  using acc_t = opmath_t<scalar_t>;
  __shared__ acc_t sums[kSharedSums];  // the GAM column sums, then the partial channel sums
  __shared__ acc_t a[kMaxTile];
  const int v = batch.scale_of(blockIdx.x);
  const Scale<scalar_t, acc_t>& s = batch.scale[v];
  const unsigned int local = blockIdx.x - static_cast<unsigned int>(batch.start[v]);
  const unsigned int row = local / s.tiles_x, tile = local - row * s.tiles_x;
  const int b = row / s.h, y = row - b * s.h;
  const int x0 = tile * s.tile_w, nx = std::min(s.tile_w, s.w - x0);
  pool_segment(gam, s, b, y, x0, nx, reverse, sums, a);
  constexpr int N = kPacked ? Pack<scalar_t>::kSize : 1;
  int groups;
  if constexpr (kChannelsInner) {
    groups = scale_channels_inner<N, kBackward>(s, b, y, x0, nx, a, sums);
  } else {
    groups = scale_width_inner<N, kBackward>(s, b, y, x0, nx, a, sums);
  }
  if constexpr (kBackward) {
    __syncthreads();
    const acc_t scale = attention_grad_sign<acc_t>(reverse) * s.weight;
    acc_t* out = s.window_grad + static_cast<int64_t>(row) * s.w + x0;
    for (int x = threadIdx.x; x < nx; x += blockDim.x) {
      acc_t dot = static_cast<acc_t>(0);
      for (int g = 0; g < groups; ++g) dot += sums[g * nx + x];
      out[x] = dot * scale;
    }
  }
}

// Whether `t` can be read in 16-byte packs along its channels (channels_inner) or its width.
template <typename scalar_t>
bool packable(const Tensor& t, bool channels_inner) {
  constexpr int64_t N = Pack<scalar_t>::kSize;
  const Strides s = strides_of(t);
  if (!is_aligned16(t.const_data_ptr())) return false;
  if (channels_inner) return t.size(1) % N == 0 && s.c == 1 && s.b % N == 0 && s.y % N == 0 && s.x % N == 0;
  return t.size(3) % N == 0 && s.x == 1 && s.b % N == 0 && s.c % N == 0 && s.y % N == 0;
}

// The low-res columns of one block: at most kMaxTile, few enough that the window columns and (with
// the threads along the channels) the partial channel sums fit kSharedSums in one round, whole packs
// when packed along the width.
int tile_width(int64_t w, int64_t channels, int64_t win_x, bool channels_inner, bool packed, int64_t N) {
  int64_t tile = std::min<int64_t>({w, kMaxTile, std::max<int64_t>(1, kSharedSums / win_x)});
  if (channels_inner) {
    tile = std::min(tile, kSharedSums / std::min<int64_t>(std::max<int64_t>(1, channels / N), kThreads));
  } else if (packed) {
    tile = std::max(N, tile / N * N);
  }
  return static_cast<int>(std::max<int64_t>(1, tile));
}

// Whether the threads run along the channels of a scale (its output is NHWC-like), not its pixels:
// they follow the output's stride-1 dimension, so that its stores are coalesced.
bool channels_inner(const Tensor& in, const Tensor& out) { return in.size(1) > 1 && out.stride(1) == 1; }

// What both kernels read of a scale: its input (F or dP), output (P or dF), in the backward F,
// channels, sizes and window.
template <bool kBackward, typename scalar_t, typename acc_t>
Scale<scalar_t, acc_t> scale_of(const Tensor& in, const Tensor& out, const TensorList& feats, size_t v,
                                const Tensor& gam) {
  Scale<scalar_t, acc_t> s{};
  s.in = {in.const_data_ptr<scalar_t>(), strides_of(in)};
  s.out = {out.mutable_data_ptr<scalar_t>(), strides_of(out)};
  if (kBackward) s.feat = {feats[v].const_data_ptr<scalar_t>(), strides_of(feats[v])};
  s.channels = static_cast<int>(in.size(1));
  s.h = static_cast<int>(in.size(2));
  s.w = static_cast<int>(in.size(3));
  s.win_y = static_cast<int>(gam.size(2) / in.size(2));
  s.win_x = static_cast<int>(gam.size(3) / in.size(3));
  s.weight = window_weight<acc_t>(s.win_y, s.win_x);
  return s;
}

// gam_scale_kernel over the scales of one layout (in batches of kMaxScalesPerLaunch; none without scales).
template <bool kBackward, bool kChannelsInner, bool kPacked, typename scalar_t>
void launch_layout(const std::vector<Scale<scalar_t, opmath_t<scalar_t>>>& descs, const std::vector<int64_t>& blocks,
                   const MapView<scalar_t>& gam, bool reverse) {
  const cudaStream_t stream = current_stream();
  for_each_batch(descs, blocks, [&](const ScaleBatch<Scale<scalar_t, opmath_t<scalar_t>>>& batch, bool, bool) {
    PAANET_CHECK_VALUE(batch.total() <= INT32_MAX, "paanet_fast.gam_multiply: too many feature rows for one launch");
    if (batch.total() == 0) return;
    const auto grid = static_cast<unsigned int>(batch.total());
    gam_scale_kernel<kBackward, kChannelsInner, kPacked, scalar_t><<<grid, kThreads, 0, stream>>>(batch, gam, reverse);
    check_launch("gam_scale_kernel");
  });
}

// Runs gam_scale_kernel over every scale: outputs[v] = inputs[v] * a_v; in the backward also
// window_grads[v] = (sum_c inputs[v] feats[v]) * sign / area.
template <bool kBackward, typename scalar_t>
void launch_scales(const TensorList& inputs, const TensorList& outputs, const TensorList& feats,
                   const TensorList& window_grads, const Tensor& gam, bool reverse) {
  using acc_t = opmath_t<scalar_t>;
  constexpr int64_t N = Pack<scalar_t>::kSize;
  // [channels_inner]: the scales of each launch, their blocks, whether all of them allow packs.
  std::vector<Scale<scalar_t, acc_t>> descs[2];
  std::vector<int64_t> blocks[2];
  bool all_packed[2] = {true, true};
  std::vector<bool> inner;
  for (size_t v = 0; v < inputs.size(); ++v) {
    inner.push_back(channels_inner(inputs[v], outputs[v]));
    bool packed = packable<scalar_t>(inputs[v], inner[v]) && packable<scalar_t>(outputs[v], inner[v]);
    if (kBackward) packed = packed && packable<scalar_t>(feats[v], inner[v]);
    all_packed[inner[v]] = all_packed[inner[v]] && packed;
  }
  for (size_t v = 0; v < inputs.size(); ++v) {
    Scale<scalar_t, acc_t> s = scale_of<kBackward, scalar_t, acc_t>(inputs[v], outputs[v], feats, v, gam);
    if (kBackward) s.window_grad = window_grads[v].mutable_data_ptr<acc_t>();
    const bool packed = all_packed[inner[v]];
    s.tile_w = tile_width(s.w, s.channels, s.win_x, inner[v], packed, packed ? N : 1);
    s.tiles_x = (s.w + s.tile_w - 1) / s.tile_w;
    descs[inner[v]].push_back(s);
    blocks[inner[v]].push_back(inputs[v].size(0) * s.h * s.tiles_x);
  }
  const MapView<scalar_t> g = map_view<scalar_t>(gam);
  if (all_packed[0]) {
    launch_layout<kBackward, false, true, scalar_t>(descs[0], blocks[0], g, reverse);
  } else {
    launch_layout<kBackward, false, false, scalar_t>(descs[0], blocks[0], g, reverse);
  }
  if (all_packed[1]) {
    launch_layout<kBackward, true, true, scalar_t>(descs[1], blocks[1], g, reverse);
  } else {
    launch_layout<kBackward, true, false, scalar_t>(descs[1], blocks[1], g, reverse);
  }
}

// The 32-bit block and thread arithmetic of the kernels needs every extent below 2^31 (the GAM
// width eight times over: a block's window columns span up to eight times its GAM columns).
void check_extents(const TensorList& features, const Tensor& gam, const char* op) {
  bool small = gam.size(0) * gam.size(2) <= INT32_MAX && gam.size(3) <= INT32_MAX / 8;
  for (const auto& f : features) small = small && f.size(1) <= INT32_MAX && f.size(0) * f.size(2) <= INT32_MAX;
  PAANET_CHECK_VALUE(small, op, ": the CUDA kernels take batch x height and channels below 2^31 and a GAM width "
                     "below 2^28, got gam of shape ", shape(gam));
}

// ---------------------------------------------------------------------------------------------
// One block per region, where every scale's window divides the largest (in each axis), the
// largest has at most kRegionPixels pixels (PAANet's strides 4 to 32, at any input size) and one
// launch holds every scale: a region of the GAM that is one window of the coarsest scale, with
// every scale's pixels inside it. The block reads the region's G once, into shared memory, and for
// each scale in turn takes its pixels' window means from there (column sums down the window rows,
// then left to right: pool_segment's order), then P = F a (forward) or dF = dP a and sum_c dP F
// (backward), which the backward adds over each pixel's window into the region's dG (scale after
// scale, as the two-launch path adds them): the backward in one launch, with no window-gradient
// buffers.

constexpr int kRegionPixels = 1024;
// Channels a region kernel's thread reads before it writes: four in the forward (its F), two in the
// backward (its dP and F: four loads either way; four channels took the backward to 75 registers).
template <bool kBackward>
constexpr int kChannelGroup = kBackward ? 2 : 4;

// The regions of a launch: h x w GAM pixels each, `columns` of them across a sample, `count` in a
// sample; dividers by count, columns and w.
struct RegionGrid {
  int h, w, columns, count;
  Divider by_count, by_columns, by_w;
};

// One scale of the region kernel: `s` as gam_scale_kernel takes it (F or dP, P or dF, F in the
// backward, sizes, window), its pixels in a region (rows x cols), whether the threads run along its
// channels (a channels-last output) or its pixels, and dividers by its window's sides and by cols.
template <typename scalar_t, typename acc_t>
struct RegionScale {
  Scale<scalar_t, acc_t> s;
  int rows, cols;
  bool channels_inner;
  Divider by_win_y, by_win_x, by_cols;
};

template <bool kBackward, typename scalar_t>
__global__ void __launch_bounds__(kThreads) gam_region_kernel(
    const __grid_constant__ ScaleBatch<RegionScale<scalar_t, opmath_t<scalar_t>>> batch, MapView<scalar_t> gam,
    scalar_t* __restrict__ dgam, int64_t dgam_sb, int64_t dgam_sy, int64_t dgam_sx, RegionGrid region,
    bool reverse) {
  using acc_t = opmath_t<scalar_t>;
  __shared__ acc_t g[kRegionPixels];        // the region's GAM
  __shared__ acc_t grad[kRegionPixels];     // its dG, the scales added in turn (backward)
  __shared__ acc_t a[kRegionPixels];        // one scale's attention at its pixels in the region
  __shared__ acc_t scratch[kRegionPixels];  // its window column sums, then its window gradients
  __shared__ acc_t partial[kThreads];
  const unsigned int b = region.by_count.div(blockIdx.x);
  const unsigned int r = blockIdx.x - b * static_cast<unsigned int>(region.count);
  const unsigned int ry = region.by_columns.div(r), rx = r - ry * static_cast<unsigned int>(region.columns);
  const int Y0 = static_cast<int>(ry) * region.h, X0 = static_cast<int>(rx) * region.w;
  const int pixels = region.h * region.w;
  for (int k = threadIdx.x; k < pixels; k += kThreads) {
    const int y = static_cast<int>(region.by_w.div(k)), x = k - y * region.w;
    g[k] = static_cast<acc_t>(gam.at(b, Y0 + y, X0 + x));
    if constexpr (kBackward) grad[k] = static_cast<acc_t>(0);
  }
  __syncthreads();
  for (int v = 0; v < batch.count; ++v) {
    const RegionScale<scalar_t, acc_t>& rs = batch.scale[v];
    const Scale<scalar_t, acc_t>& s = rs.s;
    const int n = rs.rows * rs.cols;
    for (int e = threadIdx.x; e < rs.rows * region.w; e += kThreads) {
      const int iy = static_cast<int>(region.by_w.div(e)), x = e - iy * region.w;
      const acc_t* column = g + iy * s.win_y * region.w + x;
      acc_t sum = static_cast<acc_t>(0);
      for (int y = 0; y < s.win_y; ++y) sum += column[y * region.w];
      scratch[e] = sum;
    }
    __syncthreads();
    for (int p = threadIdx.x; p < n; p += kThreads) {
      const int iy = static_cast<int>(rs.by_cols.div(p)), ix = p - iy * rs.cols;
      const acc_t* columns = scratch + iy * region.w + ix * s.win_x;
      acc_t sum = static_cast<acc_t>(0);
      for (int x = 0; x < s.win_x; ++x) sum += columns[x];
      a[p] = attention(window_average(sum, s.weight), reverse);
    }
    __syncthreads();
    // The block as a (pixels x channel slots) grid, channels of one pixel a thread apart where they
    // are in memory (channels-last output), else the pixels (so that the threads' accesses
    // coalesce): thread t takes pixel p0 + its slot and the channels first, first + step, ...; in
    // the backward each pixel's sums of dP F are added in slot order.
    int per_pass, step, slot, first, slot_stride, k_stride;
    if (rs.channels_inner) {
      step = s.channels < kThreads ? s.channels : kThreads;
      per_pass = kThreads / step;
      slot = static_cast<int>(threadIdx.x) / step;
      first = static_cast<int>(threadIdx.x) - slot * step;
      slot_stride = step;
      k_stride = 1;
    } else {
      per_pass = n < kThreads ? n : kThreads;
      step = kThreads / per_pass;
      first = static_cast<int>(threadIdx.x) / per_pass;
      slot = static_cast<int>(threadIdx.x) - first * per_pass;
      slot_stride = 1;
      k_stride = per_pass;
    }
    const bool active = static_cast<int>(threadIdx.x) < per_pass * step;
    for (int p0 = 0; p0 < n; p0 += per_pass) {
      const int p = p0 + slot;
      acc_t dot = static_cast<acc_t>(0);
      if (active && p < n) {
        const int iy = static_cast<int>(rs.by_cols.div(p)), ix = p - iy * rs.cols;
        const int y = static_cast<int>(ry) * rs.rows + iy, x = static_cast<int>(rx) * rs.cols + ix;
        const scalar_t* in = s.in.segment(b, y, x) + first * s.in.s.c;
        const scalar_t* f = kBackward ? s.feat.segment(b, y, x) + first * s.feat.s.c : nullptr;
        scalar_t* out = s.out.segment(b, y, x) + first * s.out.s.c;
        const acc_t factor = a[p];
        // A group of channels' loads at once, then their stores: the compiler may not move a
        // load above the store before it (`out` may alias `in`), so one channel at a time each
        // waited for the last, 8 round trips a thread for the stride-4 scale at 32 channels (on an
        // H200 the forward took 11.0 us, Triton's region kernel 6.8). The same order of the sums.
        constexpr int kGroup = kChannelGroup<kBackward>;
        for (int c = first; c < s.channels; c += kGroup * step) {
          acc_t value[kGroup], feat[kGroup];
#pragma unroll
          for (int u = 0; u < kGroup; ++u) {
            if (c + u * step >= s.channels) break;
            value[u] = static_cast<acc_t>(in[u * step * s.in.s.c]);
            if constexpr (kBackward) feat[u] = static_cast<acc_t>(f[u * step * s.feat.s.c]);
          }
#pragma unroll
          for (int u = 0; u < kGroup; ++u) {
            if (c + u * step >= s.channels) break;
            out[u * step * s.out.s.c] = static_cast<scalar_t>(value[u] * factor);
            if constexpr (kBackward) dot += value[u] * feat[u];
          }
          in += kGroup * step * s.in.s.c;
          out += kGroup * step * s.out.s.c;
          if constexpr (kBackward) f += kGroup * step * s.feat.s.c;
        }
      }
      if constexpr (kBackward) {
        partial[threadIdx.x] = dot;
        __syncthreads();
        if (static_cast<int>(threadIdx.x) < per_pass && p0 + static_cast<int>(threadIdx.x) < n) {
          acc_t sum = static_cast<acc_t>(0);
          for (int k = 0; k < step; ++k) sum += partial[static_cast<int>(threadIdx.x) * slot_stride + k * k_stride];
          scratch[p0 + threadIdx.x] = sum * (attention_grad_sign<acc_t>(reverse) * s.weight);
        }
        __syncthreads();
      }
    }
    if constexpr (kBackward) {
      for (int k = threadIdx.x; k < pixels; k += kThreads) {
        const int y = static_cast<int>(region.by_w.div(k)), x = k - y * region.w;
        grad[k] += scratch[rs.by_win_y.div(y) * rs.cols + rs.by_win_x.div(x)];
      }
    }
    __syncthreads();  // the next scale rewrites a and scratch
  }
  if constexpr (kBackward) {
    for (int k = threadIdx.x; k < pixels; k += kThreads) {
      const int y = static_cast<int>(region.by_w.div(k)), x = k - y * region.w;
      dgam[b * dgam_sb + (Y0 + y) * dgam_sy + (X0 + x) * dgam_sx] = static_cast<scalar_t>(grad[k]);
    }
  }
}

// The regions of the one-launch kernels (the largest window's sides), or none where a window does
// not divide them, a region has more than kRegionPixels pixels, or the grid would not fit.
std::optional<std::pair<int64_t, int64_t>> gam_region(const TensorList& features, const Tensor& gam) {
  const int64_t B = gam.size(0), H = gam.size(2), W = gam.size(3);
  if (features.size() > static_cast<size_t>(kMaxScalesPerLaunch)) return std::nullopt;
  int64_t rows = 1, columns = 1;
  for (const auto& f : features) {
    rows = std::max(rows, H / f.size(2));
    columns = std::max(columns, W / f.size(3));
  }
  for (const auto& f : features) {
    if (rows % (H / f.size(2)) != 0 || columns % (W / f.size(3)) != 0) return std::nullopt;
  }
  if (rows * columns > kRegionPixels || B * (H / rows) * (W / columns) > INT32_MAX) return std::nullopt;
  return std::make_pair(rows, columns);
}

// gam_region_kernel over every scale: outputs[v] = inputs[v] * a_v, and in the backward
// dgam = the window gradients of sum_c inputs[v] feats[v], spread over their windows.
template <bool kBackward, typename scalar_t>
void launch_regions(const TensorList& inputs, const TensorList& outputs, const TensorList& feats, const Tensor& gam,
                    scalar_t* dgam, int64_t dgam_sb, int64_t dgam_sy, int64_t dgam_sx, bool reverse,
                    std::pair<int64_t, int64_t> size) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t B = gam.size(0), H = gam.size(2), W = gam.size(3);
  std::vector<RegionScale<scalar_t, acc_t>> descs;
  for (size_t v = 0; v < inputs.size(); ++v) {
    RegionScale<scalar_t, acc_t> rs{};
    rs.s = scale_of<kBackward, scalar_t, acc_t>(inputs[v], outputs[v], feats, v, gam);
    rs.rows = static_cast<int>(size.first) / rs.s.win_y;
    rs.cols = static_cast<int>(size.second) / rs.s.win_x;
    rs.channels_inner = channels_inner(inputs[v], outputs[v]);
    rs.by_win_y = Divider(static_cast<unsigned int>(rs.s.win_y));
    rs.by_win_x = Divider(static_cast<unsigned int>(rs.s.win_x));
    rs.by_cols = Divider(static_cast<unsigned int>(rs.cols));
    descs.push_back(rs);
  }
  RegionGrid region{};
  region.h = static_cast<int>(size.first);
  region.w = static_cast<int>(size.second);
  region.columns = static_cast<int>(W / size.second);
  region.count = static_cast<int>((H / size.first) * region.columns);
  region.by_count = Divider(static_cast<unsigned int>(region.count));
  region.by_columns = Divider(static_cast<unsigned int>(region.columns));
  region.by_w = Divider(static_cast<unsigned int>(region.w));
  const cudaStream_t stream = current_stream();
  const MapView<scalar_t> g = map_view<scalar_t>(gam);
  for_each_batch(descs, std::vector<int64_t>(descs.size(), 0),
                 [&](const ScaleBatch<RegionScale<scalar_t, acc_t>>& batch, bool, bool) {
    const auto grid = static_cast<unsigned int>(B * region.count);
    gam_region_kernel<kBackward, scalar_t><<<grid, kThreads, 0, stream>>>(batch, g, dgam, dgam_sb, dgam_sy, dgam_sx,
                                                                          region, reverse);
    check_launch("gam_region_kernel");
  });
}

TensorList gam_multiply_cuda(const TensorList& features, const Tensor& gam, bool reverse) {
  check_gam_multiply_args(features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  check_extents(features, gam, "paanet_fast.gam_multiply");
  const DeviceGuard guard(features[0].get_device_index());
  TensorList outputs;
  for (const auto& f : features) outputs.push_back(poisoned_if_testing(paanet::empty_like(f)));
  if (gam.size(0) == 0) return outputs;
  const auto region = gam_region(features, gam);
  // The body in parentheses: the dispatch macro takes it as one argument, commas and all.
  PAANET_DISPATCH_FLOATING_AND_HALF(features[0].scalar_type(), "gam_multiply_cuda", ([&] {
    if (region) {
      launch_regions</*kBackward=*/false, scalar_t>(features, outputs, {}, gam, nullptr, 0, 0, 0, reverse, *region);
    } else {
      launch_scales</*kBackward=*/false, scalar_t>(features, outputs, {}, {}, gam, reverse);
    }
  }));
  return outputs;
}

// ---------------------------------------------------------------------------------------------
// Backward: dG(b, Y, X) = sum over the scales of window_grad_v(b, Y / win_y, X / win_x)

// The window gradients of one scale, (B, h, w) contiguous.
template <typename acc_t>
struct WindowGrad {
  const acc_t* data;
  int h, w;
  Divider win_y, win_x;
};

// One block per kGradRows GAM rows of one sample (block b * row_groups + k takes the rows from
// k * kGradRows), one thread per column: a thread finds its column's window in each scale once and
// reads it for every row. The scales are added in order; with more scales than one launch carries,
// the partial sums travel in `carry` (B, H, W).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) gam_grad_kernel(const __grid_constant__ ScaleBatch<WindowGrad<acc_t>> batch,
                                                            int H, int W, int row_groups, const acc_t* carry_in,
                                                            acc_t* carry_out, scalar_t* dgam, int64_t sb, int64_t sy,
                                                            int64_t sx) {
  const unsigned int b = blockIdx.x / row_groups, Y0 = (blockIdx.x - b * row_groups) * kGradRows;
  const int rows = std::min(H - static_cast<int>(Y0), int{kGradRows});
  const int64_t first_row = static_cast<int64_t>(b) * H + Y0;
  for (unsigned int X = threadIdx.x; X < static_cast<unsigned int>(W); X += blockDim.x) {
    acc_t sum[kGradRows];
#pragma unroll
    for (int r = 0; r < kGradRows; ++r) {
      sum[r] = carry_in != nullptr && r < rows ? carry_in[(first_row + r) * W + X] : static_cast<acc_t>(0);
    }
    for (int v = 0; v < batch.count; ++v) {
      const WindowGrad<acc_t>& s = batch.scale[v];
      const acc_t* column = s.data + static_cast<int64_t>(b) * s.h * s.w + s.win_x.div(X);
#pragma unroll
      for (int r = 0; r < kGradRows; ++r) {
        if (r < rows) sum[r] += column[static_cast<int64_t>(s.win_y.div(Y0 + r)) * s.w];
      }
    }
    scalar_t* out = dgam + b * sb + Y0 * sy + X * sx;
#pragma unroll
    for (int r = 0; r < kGradRows; ++r) {
      if (r < rows && carry_out != nullptr) carry_out[(first_row + r) * W + X] = sum[r];
      if (r < rows && carry_out == nullptr) out[r * sy] = static_cast<scalar_t>(sum[r]);
    }
  }
}

template <typename scalar_t>
void launch_gam_grad(const TensorList& window_grads, const Tensor& gam, const Tensor& dgam) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t B = gam.size(0), H = gam.size(2), W = gam.size(3);
  std::vector<WindowGrad<acc_t>> windows;
  for (const Tensor& t : window_grads) {
    const int h = static_cast<int>(t.size(1)), w = static_cast<int>(t.size(2));
    windows.push_back({t.const_data_ptr<acc_t>(), h, w, Divider(static_cast<unsigned int>(H / h)),
                       Divider(static_cast<unsigned int>(W / w))});
  }
  std::optional<Tensor> carry;
  if (windows.size() > static_cast<size_t>(kMaxScalesPerLaunch)) {
    carry = empty({B, H, W}, window_grads[0].scalar_type(), window_grads[0].device());
  }
  acc_t* carry_ptr = carry ? carry->mutable_data_ptr<acc_t>() : nullptr;
  // As many threads as the row has pixels, in whole warps.
  const unsigned int threads = static_cast<unsigned int>(std::min<int64_t>(kThreads, (W + 31) / 32 * 32));
  const int64_t row_groups = (H + kGradRows - 1) / kGradRows;
  const cudaStream_t stream = current_stream();
  for_each_batch(windows, std::vector<int64_t>(windows.size(), 0),
                 [&](const ScaleBatch<WindowGrad<acc_t>>& batch, bool first, bool last) {
    gam_grad_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(B * row_groups), threads, 0, stream>>>(
        batch, static_cast<int>(H), static_cast<int>(W), static_cast<int>(row_groups), first ? nullptr : carry_ptr,
        last ? nullptr : carry_ptr,
        dgam.mutable_data_ptr<scalar_t>(), dgam.stride(0), dgam.stride(2), dgam.stride(3));
    check_launch("gam_grad_kernel");
  });
}

std::tuple<TensorList, Tensor> gam_multiply_backward_cuda(const TensorList& grad_outputs, const TensorList& features,
                                                          const Tensor& gam, bool reverse) {
  check_gam_multiply_backward_args(grad_outputs, features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  check_extents(features, gam, "paanet_fast.gam_multiply_backward");
  const DeviceGuard guard(features[0].get_device_index());
  const int64_t B = gam.size(0);
  TensorList dfeatures;
  for (const auto& f : features) dfeatures.push_back(poisoned_if_testing(paanet::empty_like(f)));
  Tensor dgam = poisoned_if_testing(paanet::empty_like(gam));
  if (B == 0) return {dfeatures, dgam};
  const auto region = gam_region(features, gam);
  TensorList window_grads;
  if (!region) {
    for (const auto& f : features) {
      window_grads.push_back(
          poisoned_if_testing(empty({B, f.size(2), f.size(3)}, compute_dtype(gam.scalar_type()), gam.device())));
    }
  }
  PAANET_DISPATCH_FLOATING_AND_HALF(features[0].scalar_type(), "gam_multiply_backward_cuda", ([&] {
    if (region) {
      launch_regions</*kBackward=*/true, scalar_t>(grad_outputs, dfeatures, features, gam,
                                                   dgam.mutable_data_ptr<scalar_t>(), dgam.stride(0), dgam.stride(2),
                                                   dgam.stride(3), reverse, *region);
    } else {
      launch_scales</*kBackward=*/true, scalar_t>(grad_outputs, dfeatures, features, window_grads, gam, reverse);
      launch_gam_grad<scalar_t>(window_grads, gam, dgam);
    }
  }));
  return {dfeatures, dgam};
}

}  // namespace
}  // namespace cuda
}  // namespace paanet

STABLE_TORCH_LIBRARY_IMPL(paanet_fast, CUDA, m) {
  m.impl("gam_multiply", TORCH_BOX(&paanet::cuda::gam_multiply_cuda));
  m.impl("gam_multiply_backward", TORCH_BOX(&paanet::cuda::gam_multiply_backward_cuda));
}
