#include "checks.h"


namespace paanet {
namespace {

void check_feature_list(const TensorList& features, const char* op) {
  PAANET_CHECK_VALUE(!features.empty(), op, ": `features` must be a non-empty list of tensors");
  const Tensor& first = features[0];
  for (size_t i = 0; i < features.size(); ++i) {
    const Tensor& f = features[i];
    PAANET_CHECK_VALUE(f.dim() == 4, op, ": features[", i, "] must be 4-D (B, C, h, w), got shape ",
                      shape(f));
    PAANET_CHECK_VALUE(is_floating(f.scalar_type()), op, ": features[", i,
                      "] must be floating point, got ", f.scalar_type());
    PAANET_CHECK_VALUE(f.scalar_type() == first.scalar_type(), op, ": features[", i, "] has dtype ",
                      f.scalar_type(), " but features[0] has ", first.scalar_type());
    PAANET_CHECK_VALUE(same_device(f, first), op, ": features[", i, "] is on ", device_name(f),
                      " but features[0] is on ", device_name(first));
    PAANET_CHECK_VALUE(f.size(0) == first.size(0), op, ": features[", i, "] has batch ", f.size(0),
                      " but features[0] has batch ", first.size(0));
    PAANET_CHECK_VALUE(f.size(1) > 0 && f.size(2) > 0 && f.size(3) > 0, op, ": features[", i,
                      "] must have non-zero channels, height and width, got shape ", shape(f));
  }
}

// A `parameter` (the weight or bias) may also be float32 beside half-precision features: float32
// master parameters, which the kernels read in float32, the precision they compute in.
void check_like(const Tensor& t, const char* arg, const Tensor& ref, const char* op, bool parameter = false) {
  const bool master = parameter && t.scalar_type() == ScalarType::Float && is_reduced_precision(ref.scalar_type());
  PAANET_CHECK_VALUE(t.scalar_type() == ref.scalar_type() || master, op, ": `", arg, "` has dtype ",
                    t.scalar_type(), " but the features have ", ref.scalar_type(),
                    parameter ? " (parameters may be float32 beside float16 or bfloat16 features)" : "");
  PAANET_CHECK_VALUE(same_device(t, ref), op, ": `", arg, "` is on ", device_name(t),
                    " but the features are on ", device_name(ref));
}

void check_weight(const TensorList& features, const Tensor& weight, const char* op) {
  int64_t channels = 0;
  for (const auto& f : features) channels += f.size(1);
  PAANET_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == 1 && weight.size(1) == channels &&
                        weight.size(2) == 3 && weight.size(3) == 3,
                    op, ": `weight` must have shape (1, ", channels, ", 3, 3) for features with ",
                    channels, " channels in total, got ", shape(weight));
}

// 0 is a multiple of every size, so an empty GAM would pass the window checks and pool nothing.
void check_gam_extent(const Tensor& gam, const char* op) {
  PAANET_CHECK_VALUE(gam.size(2) > 0 && gam.size(3) > 0, op,
                    ": `gam` must have non-zero height and width, got shape ", shape(gam));
}

// A full-resolution (B, 1, H, W) map of the features' batch and dtype; `like` fixes H and W.
void check_full_res_map(const Tensor& t, const char* arg, const Tensor& like,
                        const TensorList& features, const char* op) {
  PAANET_CHECK_VALUE(t.dim() == 4 && t.size(0) == features[0].size(0) && t.size(1) == 1 &&
                        t.size(2) == like.size(2) && t.size(3) == like.size(3),
                    op, ": `", arg, "` must have shape (", features[0].size(0), ", 1, ", like.size(2),
                    ", ", like.size(3), "), got ", shape(t));
  check_like(t, arg, features[0], op);
}

}  // namespace

void check_mini_decoder_args(const TensorList& features, const Tensor& weight,
                             const Tensor& bias, IntList size) {
  constexpr const char* op = "paanet_fast.mini_decoder";
  check_feature_list(features, op);
  check_weight(features, weight, op);
  PAANET_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == 1, op, ": `bias` must have shape (1,), got ",
                    shape(bias));
  check_like(weight, "weight", features[0], op, /*parameter=*/true);
  check_like(bias, "bias", features[0], op, /*parameter=*/true);
  PAANET_CHECK_VALUE(size.size() == 2 && size[0] > 0 && size[1] > 0, op,
                    ": `size` must be two positive integers (H, W), got ", Shape{size});
}

void check_gam_multiply_args(const TensorList& features, const Tensor& gam) {
  constexpr const char* op = "paanet_fast.gam_multiply";
  check_feature_list(features, op);
  PAANET_CHECK_VALUE(gam.dim() == 4 && gam.size(1) == 1, op, ": `gam` must have shape (B, 1, H, W), got ",
                    shape(gam));
  check_gam_extent(gam, op);
  check_like(gam, "gam", features[0], op);
  PAANET_CHECK_VALUE(gam.size(0) == features[0].size(0), op, ": `gam` has batch ", gam.size(0),
                    " but the features have batch ", features[0].size(0));
  for (size_t i = 0; i < features.size(); ++i) {
    const Tensor& f = features[i];
    PAANET_CHECK_VALUE(gam.size(2) % f.size(2) == 0 && gam.size(3) % f.size(3) == 0, op,
                      ": the GAM size (", gam.size(2), ", ", gam.size(3),
                      ") must be an integer multiple of features[", i, "]'s size (", f.size(2), ", ",
                      f.size(3), ")");
  }
}

void check_mini_decoder_backward_args(const Tensor& grad_logits, const Tensor& grad_gam,
                                      const Tensor& gam, const TensorList& features,
                                      const Tensor& weight) {
  constexpr const char* op = "paanet_fast.mini_decoder_backward";
  check_feature_list(features, op);
  check_weight(features, weight, op);
  check_like(weight, "weight", features[0], op, /*parameter=*/true);
  PAANET_CHECK_VALUE(gam.dim() == 4, op, ": `gam` must have shape (B, 1, H, W), got ", shape(gam));
  check_gam_extent(gam, op);
  check_full_res_map(gam, "gam", gam, features, op);
  check_full_res_map(grad_logits, "grad_logits", gam, features, op);
  check_full_res_map(grad_gam, "grad_gam", gam, features, op);
}

void check_gam_multiply_backward_args(const TensorList& grad_outputs, const TensorList& features,
                                      const Tensor& gam) {
  check_gam_multiply_args(features, gam);
  constexpr const char* op = "paanet_fast.gam_multiply_backward";
  PAANET_CHECK_VALUE(grad_outputs.size() == features.size(), op, ": got ", grad_outputs.size(),
                    " grad_outputs for ", features.size(), " features");
  for (size_t i = 0; i < features.size(); ++i) {
    PAANET_CHECK_VALUE(grad_outputs[i].sizes().equals(features[i].sizes()), op, ": grad_outputs[", i,
                      "] must have the shape of features[", i, "] ", shape(features[i]), ", got ",
                      shape(grad_outputs[i]));
    check_like(grad_outputs[i], "grad_outputs", features[0], op);
  }
}

void check_kernel_dtype(const Tensor& t, const char* arg, bool allow_reduced_precision) {
  const auto st = t.scalar_type();
  const bool ok = st == ScalarType::Float || st == ScalarType::Double ||
                  (allow_reduced_precision && is_reduced_precision(st));
  PAANET_CHECK_VALUE(ok, "paanet_fast: `", arg, "` has dtype ", st, ", which this kernel does not support (",
                    allow_reduced_precision ? "float16, bfloat16, float32, float64" : "float32, float64",
                    ")");
}

}  // namespace paanet
