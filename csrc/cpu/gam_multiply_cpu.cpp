// CPU kernels of paanet_fast::gam_multiply and paanet_fast::gam_multiply_backward (design 2.2).
//
// All scales run in one parallel loop over (scale, sample, block of low-res rows). The pooled GAM
// of a row is computed on the fly from its sy x sx windows and never stored; the backward keeps only the
// low-resolution window gradients and writes dG once per GAM pixel, summed over the scales.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"
#include "paanet_math.h"

namespace paanet {
namespace {

// A 4-D tensor (B, C, h, w) of any strides, addressed by raw pointer.
template <typename scalar_t>
struct Strided4d {
  scalar_t* data;
  int64_t sb, sc, sy, sx;

  explicit Strided4d(const at::Tensor& t)
      : data(t.data_ptr<scalar_t>()), sb(t.stride(0)), sc(t.stride(1)), sy(t.stride(2)), sx(t.stride(3)) {}

  scalar_t* at(int64_t b, int64_t c, int64_t y) const { return data + b * sb + c * sc + y * sy; }
};

// One scale: its features (B, C, h, w), the GAM windows (win_y x win_x) that pool onto it, and
// its work split into blocks of consecutive low-res rows of one sample. A block holds about
// kBlockElements elements per channel, so that in NCHW each channel's part of a block is one
// contiguous stretch of memory (what the hardware prefetcher follows best).
template <typename scalar_t>
struct Scale {
  static constexpr int64_t kBlockElements = 4096;
  Strided4d<scalar_t> f;
  int64_t channels, h, w, win_y, win_x, block_rows, blocks_per_sample;

  Scale(const at::Tensor& features, const at::Tensor& gam)
      : f(features), channels(features.size(1)), h(features.size(2)), w(features.size(3)),
        win_y(gam.size(2) / features.size(2)), win_x(gam.size(3) / features.size(3)),
        block_rows(std::clamp<int64_t>(kBlockElements / features.size(3), 1, features.size(2))),
        blocks_per_sample(at::divup(h, block_rows)) {}
};

// The scales of one call and their row blocks, numbered sample by sample.
template <typename scalar_t>
struct Scales {
  std::vector<Scale<scalar_t>> scales;
  cpu::SampleMajorItems blocks;

  Scales(at::TensorList features, const at::Tensor& gam) : blocks(gam.size(0)) {
    for (const auto& f : features) {
      scales.emplace_back(f, gam);
      blocks.add_scale(scales.back().blocks_per_sample);
    }
  }

  // Calls body(v, scale, b, y0, y1) for block i: rows [y0, y1) of sample b of scale v.
  template <typename Body>
  void visit(int64_t i, Body&& body) const {
    const auto [b, v, k] = blocks.locate(i);
    const Scale<scalar_t>& s = scales[v];
    const int64_t y0 = k * s.block_rows;
    body(v, s, b, y0, std::min(s.h, y0 + s.block_rows));
  }
};

// a[x] = attention factor of the windows of row y of a scale, x in [0, w). The win_y GAM rows
// are summed column by column first (contiguous, vectorised along the GAM width), then each
// group of win_x columns: the same sums as paanet::window_mean in another order.
template <typename scalar_t, typename acc_t>
void attention_row(const Strided4d<scalar_t>& g, const Scale<scalar_t>& s, int64_t b, int64_t y,
                   bool reverse, std::vector<acc_t>& column_sums, acc_t* a) {
  const int64_t W = s.w * s.win_x;
  column_sums.assign(W, static_cast<acc_t>(0));
  for (int64_t i = 0; i < s.win_y; ++i) {
    const scalar_t* row = g.at(b, 0, y * s.win_y + i);
    for (int64_t X = 0; X < W; ++X) column_sums[X] += static_cast<acc_t>(row[X * g.sx]);
  }
  for (int64_t x = 0; x < s.w; ++x) {
    acc_t sum = 0;
    for (int64_t j = 0; j < s.win_x; ++j) sum += column_sums[x * s.win_x + j];
    a[x] = attention(window_average(sum, s.win_y, s.win_x), reverse);
  }
}

// The attention factors of rows [y0, y1), row after row in `a`.
template <typename scalar_t, typename acc_t>
void attention_block(const Strided4d<scalar_t>& g, const Scale<scalar_t>& s, int64_t b, int64_t y0,
                     int64_t y1, bool reverse, std::vector<acc_t>& column_sums, std::vector<acc_t>& a) {
  a.resize((y1 - y0) * s.w);
  for (int64_t y = y0; y < y1; ++y) attention_row(g, s, b, y, reverse, column_sums, a.data() + (y - y0) * s.w);
}

// Runs body(std::true_type) when the inner loop's operands are all contiguous along it, so that
// the compiler sees unit strides and vectorises; body(std::false_type) otherwise.
template <typename Body>
void unit_stride_dispatch(bool unit, Body&& body) {
  if (unit) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// Whether the features' innermost dimension is the width (NCHW-like) rather than the channels.
template <typename scalar_t>
bool width_inner(const Strided4d<scalar_t>& t) { return t.sx <= t.sc; }

template <typename scalar_t>
void forward_kernel(at::TensorList features, const at::Tensor& gam, bool reverse,
                    const std::vector<at::Tensor>& outputs) {
  using acc_t = at::opmath_type<scalar_t>;
  const Strided4d<scalar_t> g(gam);
  const Scales<scalar_t> all(features, gam);
  std::vector<Strided4d<scalar_t>> outs;
  for (const auto& o : outputs) outs.emplace_back(o);
  at::parallel_for(0, all.blocks.total(), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> a, column_sums;
    for (int64_t i = begin; i < end; ++i) {
      all.visit(i, [&](size_t v, const Scale<scalar_t>& s, int64_t b, int64_t y0, int64_t y1) {
        const Strided4d<scalar_t>& out = outs[v];
        attention_block(g, s, b, y0, y1, reverse, column_sums, a);
        if (width_inner(s.f)) {
          unit_stride_dispatch(out.sx == 1 && s.f.sx == 1, [&](auto unit) {
            const int64_t out_sx = unit ? 1 : out.sx, f_sx = unit ? 1 : s.f.sx;
            for (int64_t c = 0; c < s.channels; ++c) {
              for (int64_t y = y0; y < y1; ++y) {
                const scalar_t* src = s.f.at(b, c, y);
                scalar_t* dst = out.at(b, c, y);
                const acc_t* ay = a.data() + (y - y0) * s.w;
                for (int64_t x = 0; x < s.w; ++x) dst[x * out_sx] = static_cast<scalar_t>(src[x * f_sx] * ay[x]);
              }
            }
          });
        } else {
          unit_stride_dispatch(out.sc == 1 && s.f.sc == 1, [&](auto unit) {
            const int64_t out_sc = unit ? 1 : out.sc, f_sc = unit ? 1 : s.f.sc;
            for (int64_t y = y0; y < y1; ++y) {
              for (int64_t x = 0; x < s.w; ++x) {
                const scalar_t* src = s.f.at(b, 0, y) + x * s.f.sx;
                scalar_t* dst = out.at(b, 0, y) + x * out.sx;
                const acc_t factor = a[(y - y0) * s.w + x];
                for (int64_t c = 0; c < s.channels; ++c) dst[c * out_sc] = static_cast<scalar_t>(src[c * f_sc] * factor);
              }
            }
          });
        }
      });
    }
  });
}

template <typename scalar_t>
void backward_kernel(at::TensorList grad_outputs, at::TensorList features, const at::Tensor& gam,
                     bool reverse, const std::vector<at::Tensor>& grad_features, const at::Tensor& grad_gam) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = gam.size(0), H = gam.size(2), W = gam.size(3);
  const Strided4d<scalar_t> g(gam);
  const Scales<scalar_t> all(features, gam);
  const std::vector<Scale<scalar_t>>& scales = all.scales;
  std::vector<Strided4d<scalar_t>> dps, dfs;
  for (size_t v = 0; v < features.size(); ++v) {
    dps.emplace_back(grad_outputs[v]);
    dfs.emplace_back(grad_features[v]);
  }
  // window_grad[v][(b * h + y) * w + x]: d(loss)/d(GAM pixel) for every pixel of that window.
  std::vector<std::vector<acc_t>> window_grad(scales.size());
  for (size_t v = 0; v < scales.size(); ++v) window_grad[v].resize(B * scales[v].h * scales[v].w);
  const acc_t sign = attention_grad_sign<acc_t>(reverse);

  at::parallel_for(0, all.blocks.total(), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> a, column_sums;
    for (int64_t i = begin; i < end; ++i) {
      all.visit(i, [&](size_t v, const Scale<scalar_t>& s, int64_t b, int64_t y0, int64_t y1) {
        const Strided4d<scalar_t>&dp = dps[v], &df = dfs[v];
        attention_block(g, s, b, y0, y1, reverse, column_sums, a);
        acc_t* da = window_grad[v].data() + (b * s.h + y0) * s.w;  // sum_c dP * F, then scaled
        std::fill(da, da + (y1 - y0) * s.w, static_cast<acc_t>(0));
        if (width_inner(s.f)) {
          unit_stride_dispatch(dp.sx == 1 && df.sx == 1 && s.f.sx == 1, [&](auto unit) {
            const int64_t dp_sx = unit ? 1 : dp.sx, df_sx = unit ? 1 : df.sx, f_sx = unit ? 1 : s.f.sx;
            for (int64_t c = 0; c < s.channels; ++c) {
              for (int64_t y = y0; y < y1; ++y) {
                const scalar_t* dpr = dp.at(b, c, y);
                const scalar_t* fr = s.f.at(b, c, y);
                scalar_t* dfr = df.at(b, c, y);
                const acc_t* ay = a.data() + (y - y0) * s.w;
                acc_t* day = da + (y - y0) * s.w;
                for (int64_t x = 0; x < s.w; ++x) {
                  const acc_t grad = static_cast<acc_t>(dpr[x * dp_sx]);
                  dfr[x * df_sx] = static_cast<scalar_t>(grad * ay[x]);
                  day[x] += grad * static_cast<acc_t>(fr[x * f_sx]);
                }
              }
            }
          });
        } else {
          unit_stride_dispatch(dp.sc == 1 && df.sc == 1 && s.f.sc == 1, [&](auto unit) {
            const int64_t dp_sc = unit ? 1 : dp.sc, df_sc = unit ? 1 : df.sc, f_sc = unit ? 1 : s.f.sc;
            for (int64_t y = y0; y < y1; ++y) {
              for (int64_t x = 0; x < s.w; ++x) {
                const scalar_t* dpr = dp.at(b, 0, y) + x * dp.sx;
                const scalar_t* fr = s.f.at(b, 0, y) + x * s.f.sx;
                scalar_t* dfr = df.at(b, 0, y) + x * df.sx;
                const acc_t factor = a[(y - y0) * s.w + x];
                acc_t sum = 0;
                for (int64_t c = 0; c < s.channels; ++c) {
                  const acc_t grad = static_cast<acc_t>(dpr[c * dp_sc]);
                  dfr[c * df_sc] = static_cast<scalar_t>(grad * factor);
                  sum += grad * static_cast<acc_t>(fr[c * f_sc]);
                }
                da[(y - y0) * s.w + x] = sum;
              }
            }
          });
        }
        const acc_t scale = sign / static_cast<acc_t>(s.win_y * s.win_x);
        for (int64_t k = 0; k < (y1 - y0) * s.w; ++k) da[k] *= scale;
      });
    }
  });

  // dG row Y = sum over scales of that scale's window gradients, each repeated win_x times along
  // the row. A scale's expanded row serves win_y consecutive GAM rows, so it is kept until then.
  const Strided4d<scalar_t> dg(grad_gam);
  const size_t n = scales.size();
  at::parallel_for(0, B * H, cpu::grain_for(static_cast<int64_t>(n) * W), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> expanded(n * W), acc(W);
    std::vector<int64_t> expanded_row(n, -1);  // (b * h + y) of the low-res row held in `expanded`
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, Y = i % H;
      std::fill(acc.begin(), acc.end(), static_cast<acc_t>(0));
      for (size_t v = 0; v < n; ++v) {
        const Scale<scalar_t>& s = scales[v];
        acc_t* row = expanded.data() + v * W;
        const int64_t low_res_row = b * s.h + Y / s.win_y;
        if (expanded_row[v] != low_res_row) {
          const acc_t* da = window_grad[v].data() + low_res_row * s.w;
          for (int64_t x = 0; x < s.w; ++x) std::fill(row + x * s.win_x, row + (x + 1) * s.win_x, da[x]);
          expanded_row[v] = low_res_row;
        }
        for (int64_t X = 0; X < W; ++X) acc[X] += row[X];
      }
      scalar_t* out = dg.at(b, 0, Y);
      for (int64_t X = 0; X < W; ++X) out[X * dg.sx] = static_cast<scalar_t>(acc[X]);
    }
  });
}

std::vector<at::Tensor> gam_multiply_cpu(at::TensorList features, const at::Tensor& gam, bool reverse) {
  check_gam_multiply_args(features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    const auto outputs = gam_multiply_cpu(cpu::to_dtype(features, at::kFloat), gam.to(at::kFloat), reverse);
    return cpu::with_layouts_of(cpu::to_dtype(outputs, dtype), features);
  }
  std::vector<at::Tensor> outputs;
  for (const auto& f : features) outputs.push_back(cpu::poisoned_if_testing(at::empty_like(f)));
  AT_DISPATCH_FLOATING_TYPES(dtype, "gam_multiply_cpu", [&] {
    forward_kernel<scalar_t>(features, gam, reverse, outputs);
  });
  return outputs;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> gam_multiply_backward_cpu(
    at::TensorList grad_outputs, at::TensorList features, const at::Tensor& gam, bool reverse) {
  check_gam_multiply_backward_args(grad_outputs, features, gam);
  check_kernel_dtype(features[0], "features", /*allow_reduced_precision=*/true);
  const at::ScalarType dtype = features[0].scalar_type();
  if (cpu::is_reduced_precision(dtype)) {
    auto [dfeatures, dgam] = gam_multiply_backward_cpu(cpu::to_dtype(grad_outputs, at::kFloat),
                                                       cpu::to_dtype(features, at::kFloat),
                                                       gam.to(at::kFloat), reverse);
    return {cpu::with_layouts_of(cpu::to_dtype(dfeatures, dtype), features),
            cpu::with_layout_of(dgam.to(dtype), gam)};
  }
  std::vector<at::Tensor> dfeatures;
  for (const auto& f : features) dfeatures.push_back(cpu::poisoned_if_testing(at::empty_like(f)));
  at::Tensor dgam = cpu::poisoned_if_testing(at::empty_like(gam));
  AT_DISPATCH_FLOATING_TYPES(dtype, "gam_multiply_backward_cpu", [&] {
    backward_kernel<scalar_t>(grad_outputs, features, gam, reverse, dfeatures, dgam);
  });
  return {dfeatures, dgam};
}

}  // namespace
}  // namespace paanet

TORCH_LIBRARY_IMPL(paanet_fast, CPU, m) {
  m.impl("gam_multiply", &paanet::gam_multiply_cpu);
  m.impl("gam_multiply_backward", &paanet::gam_multiply_backward_cpu);
}
