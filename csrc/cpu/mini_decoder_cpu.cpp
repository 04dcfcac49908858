// CPU kernels of paanet_fast::mini_decoder and paanet_fast::mini_decoder_backward (design 2.1).
//
// The channel sum of the 3x3 convolution commutes with the bilinear upsampling, so the channels
// are reduced at low resolution to 9 tap planes per scale, r_v[t] = sum_c W[c_v, t] F_v[c]
// (a matmul), and the full-resolution work is a separable resize-and-shift of those planes:
//   horizontal: Hrow_v[dy][y][X] = sum_dx valid(X+dx) * resize_x(r_v[dy, dx][y])(X+dx)   (low-res rows)
//   vertical:   Z[Y][X] = b + sum_v sum_dy valid(Y+dy) * resize_y(Hrow_v[dy])(Y+dy)[X]  (full-res rows)
// The backward runs the transposes in the opposite order and never stores a full-resolution map.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"
#include "low_res.h"
#include "paanet_math.h"

namespace paanet {
namespace {

inline int64_t tap_index(int dy, int dx) { return (dy + 1) * 3 + (dx + 1); }

template <typename acc_t>
std::vector<LinearTap<acc_t>> resize_taps(int64_t in_size, int64_t out_size) {
  std::vector<LinearTap<acc_t>> taps(out_size);
  for (int64_t i = 0; i < out_size; ++i) taps[i] = linear_tap<acc_t>(i, in_size, out_size);
  return taps;
}

// The taps of a 1-D resize along the width as separate arrays (four loads per tap in the interior
// loop of the horizontal pass), with the source indices already multiplied by the column stride.
template <typename acc_t>
struct ColumnTaps {
  std::vector<int64_t> i0, i1;
  std::vector<acc_t> w0, w1;

  ColumnTaps(int64_t in_size, int64_t out_size, int64_t stride)
      : i0(out_size), i1(out_size), w0(out_size), w1(out_size) {
    for (int64_t X = 0; X < out_size; ++X) {
      const LinearTap<acc_t> t = linear_tap<acc_t>(X, in_size, out_size);
      i0[X] = t.i0 * stride;
      i1[X] = t.i1 * stride;
      w0[X] = t.w0;
      w1[X] = t.w1;
    }
  }

  // The resized value at column X of a source row.
  template <typename scalar_t>
  acc_t sample(const scalar_t* row, int64_t X) const {
    return w0[X] * static_cast<acc_t>(row[i0[X]]) + w1[X] * static_cast<acc_t>(row[i1[X]]);
  }
};

// A (B, 9, h, w) tap-plane tensor of one scale with the taps of its 1-D resizes to (H, W).
template <typename scalar_t, typename acc_t>
struct ScalePlanes {
  scalar_t* data;
  int64_t sb, st, sy, sx, h, w;
  std::vector<LinearTap<acc_t>> ytaps;
  ColumnTaps<acc_t> columns;
  // The full-res columns whose tap i0 is x are [first_column[x], first_column[x + 1]) (i0 never
  // decreases along the row); their tap i1 is min(x + 1, w - 1).
  std::vector<int64_t> first_column;

  ScalePlanes(const at::Tensor& planes, int64_t H, int64_t W)
      : data(planes.data_ptr<scalar_t>()),
        sb(planes.stride(0)), st(planes.stride(1)), sy(planes.stride(2)), sx(planes.stride(3)),
        h(planes.size(2)), w(planes.size(3)),
        ytaps(resize_taps<acc_t>(h, H)), columns(w, W, sx), first_column(w + 1) {
    int64_t X = 0;
    for (int64_t x = 0; x <= w; ++x) {
      while (X < W && linear_tap<acc_t>(X, w, W).i0 < x) ++X;
      first_column[x] = X;
    }
  }

  scalar_t* row(int64_t b, int64_t t, int64_t y) const { return data + b * sb + t * st + y * sy; }
};

// ---------------------------------------------------------------------------------------------
// Forward

// out[X] = sum_dx valid(X+dx) * resize_x(r[dy, dx][y])(X+dx) for X in [0, W).
template <typename scalar_t, typename acc_t>
void horizontal_row(const ScalePlanes<scalar_t, acc_t>& s, int64_t b, int dy, int64_t y,
                    int64_t W, acc_t* out) {
  const scalar_t* left = s.row(b, tap_index(dy, -1), y);
  const scalar_t* centre = s.row(b, tap_index(dy, 0), y);
  const scalar_t* right = s.row(b, tap_index(dy, 1), y);
  const ColumnTaps<acc_t>& c = s.columns;
  for (int64_t X = 1; X < W - 1; ++X) {  // interior columns: all three taps inside the image
    out[X] = c.w0[X - 1] * static_cast<acc_t>(left[c.i0[X - 1]]) +
             c.w1[X - 1] * static_cast<acc_t>(left[c.i1[X - 1]]) +
             c.w0[X] * static_cast<acc_t>(centre[c.i0[X]]) + c.w1[X] * static_cast<acc_t>(centre[c.i1[X]]) +
             c.w0[X + 1] * static_cast<acc_t>(right[c.i0[X + 1]]) +
             c.w1[X + 1] * static_cast<acc_t>(right[c.i1[X + 1]]);
  }
  for (const int64_t X : {int64_t{0}, W - 1}) {  // border columns (the same one when W == 1)
    acc_t sum = c.sample(centre, X);
    if (X > 0) sum += c.sample(left, X - 1);
    if (X < W - 1) sum += c.sample(right, X + 1);
    out[X] = sum;
  }
}

// acc[X] += sum_dy valid(Y+dy) * resize_y(Hrow[dy])(Y+dy)[X]: one pass over the row for the six
// (row, weight) pairs of a scale; a tap outside the image reads a zero row with weight 0.
template <typename acc_t>
void vertical_accumulate(const acc_t* hrows, const std::vector<LinearTap<acc_t>>& ytaps, int64_t h,
                         int64_t Y, int64_t H, int64_t W, const acc_t* zeros, acc_t* acc) {
  const acc_t* rows[6];
  acc_t weights[6];
  for (int dy = -1; dy <= 1; ++dy) {
    const int64_t P = Y + dy;
    const int k = 2 * (dy + 1);
    if (P < 0 || P >= H) {
      rows[k] = rows[k + 1] = zeros;
      weights[k] = weights[k + 1] = static_cast<acc_t>(0);
      continue;
    }
    const LinearTap<acc_t>& t = ytaps[P];
    const acc_t* base = hrows + (dy + 1) * h * W;
    rows[k] = base + t.i0 * W;
    rows[k + 1] = base + t.i1 * W;
    weights[k] = t.w0;
    weights[k + 1] = t.w1;
  }
  for (int64_t X = 0; X < W; ++X) {
    acc[X] += weights[0] * rows[0][X] + weights[1] * rows[1][X] + weights[2] * rows[2][X] +
              weights[3] * rows[3][X] + weights[4] * rows[4][X] + weights[5] * rows[5][X];
  }
}

// Writes the logits; the caller applies the sigmoid. Two parallel loops in all (not one pair per
// sample): each loop waits for its slowest thread, which on a busy machine costs a time slice.
template <typename scalar_t>
void forward_kernel(const std::vector<at::Tensor>& planes, scalar_t bias, at::Tensor& logits) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = logits.size(0), H = logits.size(2), W = logits.size(3);
  std::vector<ScalePlanes<scalar_t, acc_t>> scales;
  cpu::SampleMajorItems rows(B);  // (dy, y): 3 horizontal rows (dy = -1, 0, 1) per low-res row
  for (const auto& p : planes) {
    scales.emplace_back(p, H, W);
    rows.add_scale(3 * p.size(2));
  }
  // Every element is written by the horizontal loop before the vertical one reads it.
  const at::Tensor hrows_buffer = at::empty({rows.total() * W}, logits.options());
  acc_t* hrows = hrows_buffer.data_ptr<acc_t>();
  const std::vector<acc_t> zeros(W, static_cast<acc_t>(0));
  at::parallel_for(0, rows.total(), cpu::grain_for(9 * 2 * W), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto [b, v, k] = rows.locate(i);
      const int64_t h = scales[v].h;
      horizontal_row(scales[v], b, static_cast<int>(k / h) - 1, k % h, W, hrows + i * W);
    }
  });
  scalar_t* z_out = logits.data_ptr<scalar_t>();
  at::parallel_for(0, B * H, cpu::grain_for(static_cast<int64_t>(scales.size()) * 6 * W),
                   [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(W);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, Y = i % H;
      std::fill(acc.begin(), acc.end(), static_cast<acc_t>(bias));
      for (size_t v = 0; v < scales.size(); ++v) {
        const acc_t* sample_rows = hrows + rows.first(b, v) * W;
        vertical_accumulate(sample_rows, scales[v].ytaps, scales[v].h, Y, H, W, zeros.data(), acc.data());
      }
      scalar_t* z = z_out + i * W;
      for (int64_t X = 0; X < W; ++X) z[X] = static_cast<scalar_t>(acc[X]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> mini_decoder_cpu(at::TensorList features, const at::Tensor& weight,
                                                    const at::Tensor& bias, c10::SymIntArrayRef sym_size) {
  const at::IntArrayRef size = C10_AS_INTARRAYREF_SLOW(sym_size);
  check_mini_decoder_args(features, weight, bias, size);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    auto [logits, gam] = mini_decoder_cpu(cpu::to_dtype(features, at::kFloat), weight.to(at::kFloat),
                                          bias.to(at::kFloat), sym_size);
    return {logits.to(dtype), gam.to(dtype)};
  }
  const int64_t B = features[0].size(0), H = size[0], W = size[1];
  std::vector<at::Tensor> planes;
  int64_t offset = 0;
  for (const auto& f : features) {
    planes.push_back(reduce_channels(f, scale_weight(weight, offset, f.size(1))));
    offset += f.size(1);
  }
  at::Tensor logits = cpu::poisoned_if_testing(at::empty({B, 1, H, W}, features[0].options()));
  at::Tensor gam = cpu::poisoned_if_testing(at::empty({B, 1, H, W}, features[0].options()));
  AT_DISPATCH_FLOATING_TYPES(dtype, "mini_decoder_cpu", [&] {
    forward_kernel<scalar_t>(planes, bias.item<scalar_t>(), logits);
  });
  // ATen's vectorised sigmoid (the function the reference calls): a scalar exp per pixel in the
  // kernel would cost more than the rest of the full-resolution pass.
  at::sigmoid_out(gam, logits);
  return {logits, gam};
}

// ---------------------------------------------------------------------------------------------
// Backward

// Reads grad_logits, grad_gam and gam (each (B, 1, H, W), any strides) as dZ, one row at a time.
template <typename scalar_t, typename acc_t>
struct LogitGrad {
  const scalar_t *gl, *gg, *g;
  int64_t gl_b, gl_y, gl_x, gg_b, gg_y, gg_x, g_b, g_y, g_x;

  LogitGrad(const at::Tensor& grad_logits, const at::Tensor& grad_gam, const at::Tensor& gam)
      : gl(grad_logits.data_ptr<scalar_t>()), gg(grad_gam.data_ptr<scalar_t>()), g(gam.data_ptr<scalar_t>()),
        gl_b(grad_logits.stride(0)), gl_y(grad_logits.stride(2)), gl_x(grad_logits.stride(3)),
        gg_b(grad_gam.stride(0)), gg_y(grad_gam.stride(2)), gg_x(grad_gam.stride(3)),
        g_b(gam.stride(0)), g_y(gam.stride(2)), g_x(gam.stride(3)) {}

  void row(int64_t b, int64_t Y, int64_t W, acc_t* out) const {
    const scalar_t* a = gl + b * gl_b + Y * gl_y;
    const scalar_t* c = gg + b * gg_b + Y * gg_y;
    const scalar_t* d = g + b * g_b + Y * g_y;
    for (int64_t X = 0; X < W; ++X) {
      out[X] = logit_grad<acc_t>(static_cast<acc_t>(a[X * gl_x]), static_cast<acc_t>(c[X * gg_x]),
                                 static_cast<acc_t>(d[X * g_x]));
    }
  }
};

// D_v[b, t, y, :] for all 9 taps t of one low-res row y of one scale:
//   vertical:   V[dy][X] = sum_{P, Y = P - dy valid} A_y[P, y] dZ[Y][X]      (gather over the rows P
//               whose resize reads y; dZ is recomputed for the few rows involved)
//   horizontal: D[dy, dx][y][x] = sum_{Q, X = Q - dx valid} A_x[Q, x] V[dy][X] (gather over the
//               columns Q whose resize reads x, the three dy at once)
// Adds dZ of the rows Y whose resize tap i0 is y to bias_acc (a partition of the rows: the bias).
template <typename scalar_t, typename acc_t>
void backward_row(const LogitGrad<scalar_t, acc_t>& dz_src, const ScalePlanes<scalar_t, acc_t>& d,
                  int64_t b, int64_t y, int64_t H, int64_t W, std::vector<acc_t>& dz,
                  std::vector<acc_t>& vrows, std::vector<acc_t>& drows, acc_t* bias_acc) {
  int64_t lo, hi;
  linear_tap_sources(y, d.h, H, &lo, &hi);
  const int64_t first = std::max<int64_t>(lo - 1, 0), last = std::min<int64_t>(hi + 1, H);
  dz.resize((last - first) * W);
  for (int64_t Y = first; Y < last; ++Y) dz_src.row(b, Y, W, dz.data() + (Y - first) * W);

  std::fill(vrows.begin(), vrows.end(), static_cast<acc_t>(0));
  for (int64_t P = lo; P < hi; ++P) {
    const LinearTap<acc_t>& t = d.ytaps[P];
    if (bias_acc != nullptr && t.i0 == y) {
      const acc_t* row = dz.data() + (P - first) * W;
      for (int64_t X = 0; X < W; ++X) bias_acc[X] += row[X];
    }
    const acc_t weight = linear_tap_weight(t, y);
    if (weight == static_cast<acc_t>(0)) continue;
    for (int dy = -1; dy <= 1; ++dy) {
      const int64_t Y = P - dy;
      if (Y < 0 || Y >= H) continue;
      const acc_t* row = dz.data() + (Y - first) * W;
      acc_t* v = vrows.data() + (dy + 1) * W;
      for (int64_t X = 0; X < W; ++X) v[X] += weight * row[X];
    }
  }

  const acc_t* v[3] = {vrows.data(), vrows.data() + W, vrows.data() + 2 * W};
  const acc_t* w0 = d.columns.w0.data();
  const acc_t* w1 = d.columns.w1.data();
  for (int dx = -1; dx <= 1; ++dx) {
    std::fill(drows.begin(), drows.end(), static_cast<acc_t>(0));
    const int64_t lo_q = std::max<int64_t>(0, dx), hi_q = std::min<int64_t>(W, W + dx);
    for (int64_t x = 0; x < d.w; ++x) {
      const int64_t q0 = std::max(d.first_column[x], lo_q), q1 = std::min(d.first_column[x + 1], hi_q);
      acc_t s0[3] = {0, 0, 0}, s1[3] = {0, 0, 0};  // six independent sums (x and its right neighbour)
      for (int64_t Q = q0; Q < q1; ++Q) {
        for (int k = 0; k < 3; ++k) {
          const acc_t value = v[k][Q - dx];
          s0[k] += w0[Q] * value;
          s1[k] += w1[Q] * value;
        }
      }
      const int64_t x1 = std::min<int64_t>(x + 1, d.w - 1);
      for (int k = 0; k < 3; ++k) {
        drows[k * d.w + x] += s0[k];
        drows[k * d.w + x1] += s1[k];
      }
    }
    for (int dy = -1; dy <= 1; ++dy) {
      const acc_t* src = drows.data() + (dy + 1) * d.w;
      scalar_t* out = d.row(b, tap_index(dy, dx), y);
      for (int64_t x = 0; x < d.w; ++x) out[x * d.sx] = static_cast<scalar_t>(src[x]);
    }
  }
}

// Fills the (B, 9, h_v, w_v) tap-plane gradients D_v; returns db = sum dZ.
template <typename scalar_t>
scalar_t backward_kernel(const at::Tensor& grad_logits, const at::Tensor& grad_gam, const at::Tensor& gam,
                         const std::vector<at::Tensor>& d_planes) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = gam.size(0), H = gam.size(2), W = gam.size(3);
  const LogitGrad<scalar_t, acc_t> dz_src(grad_logits, grad_gam, gam);
  std::vector<ScalePlanes<scalar_t, acc_t>> scales;
  cpu::SampleMajorItems rows(B);  // low-res rows y
  for (const auto& p : d_planes) {
    scales.emplace_back(p, H, W);
    rows.add_scale(p.size(2));
  }
  // Partial bias sums per chunk of rows and column, reduced in a fixed order afterwards: the chunks
  // do not depend on the number of threads, so neither does the result.
  const int64_t grain = cpu::grain_for(30 * W);
  const int64_t num_chunks = at::divup(rows.total(), grain);
  std::vector<acc_t> bias_parts(num_chunks * W, static_cast<acc_t>(0));
  at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<acc_t> dz, vrows(3 * W), drows;
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      for (int64_t i = chunk * grain; i < std::min(rows.total(), (chunk + 1) * grain); ++i) {
        const auto [b, v, y] = rows.locate(i);
        drows.resize(3 * scales[v].w);
        acc_t* bias_acc = v == 0 ? bias_parts.data() + chunk * W : nullptr;
        backward_row(dz_src, scales[v], b, y, H, W, dz, vrows, drows, bias_acc);
      }
    }
  });
  acc_t bias_grad = 0;
  for (acc_t part : bias_parts) bias_grad += part;
  return static_cast<scalar_t>(bias_grad);
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> mini_decoder_backward_cpu(
    const at::Tensor& grad_logits, const at::Tensor& grad_gam, const at::Tensor& gam,
    at::TensorList features, const at::Tensor& weight) {
  check_mini_decoder_backward_args(grad_logits, grad_gam, gam, features, weight);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    auto [dfeatures, dweight, dbias] = mini_decoder_backward_cpu(
        grad_logits.to(at::kFloat), grad_gam.to(at::kFloat), gam.to(at::kFloat),
        cpu::to_dtype(features, at::kFloat), weight.to(at::kFloat));
    return {cpu::with_layouts_of(cpu::to_dtype(dfeatures, dtype), features),
            cpu::with_layout_of(dweight.to(dtype), weight), dbias.to(dtype)};
  }
  std::vector<at::Tensor> d_planes;
  for (const auto& f : features) {
    const auto format = is_channels_last(f) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    d_planes.push_back(cpu::poisoned_if_testing(
        at::empty({f.size(0), kTaps, f.size(2), f.size(3)}, f.options().memory_format(format))));
  }
  at::Tensor dbias = at::empty({1}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "mini_decoder_backward_cpu", [&] {
    dbias.fill_(backward_kernel<scalar_t>(grad_logits, grad_gam, gam, d_planes));
  });
  std::vector<at::Tensor> dfeatures, dweights;
  int64_t offset = 0;
  for (size_t v = 0; v < features.size(); ++v) {
    const int64_t channels = features[v].size(1);
    auto [df, dw] = feature_and_weight_grads(features[v], scale_weight(weight, offset, channels), d_planes[v]);
    dfeatures.push_back(cpu::with_layout_of(df, features[v]));
    dweights.push_back(dw);
    offset += channels;
  }
  const at::Tensor dweight = at::cat(dweights, 0).view({1, offset, 3, 3});
  return {dfeatures, cpu::with_layout_of(dweight, weight), dbias};
}

}  // namespace
}  // namespace paanet

TORCH_LIBRARY_IMPL(paanet_fast, CPU, m) {
  m.impl("mini_decoder", &paanet::mini_decoder_cpu);
  m.impl("mini_decoder_backward", &paanet::mini_decoder_backward_cpu);
}
