// Argument checks shared by the CPU and CUDA entry points. Each failure is a c10::Error
// (ValueError/RuntimeError in Python) whose message names the offending argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace paanet {

// features: non-empty list of 4-D (B, C_v, h_v, w_v) tensors of one floating dtype and device;
// weight (1, sum C_v, 3, 3) and bias (1,) of that dtype; size (H, W) positive.
void check_mini_decoder_args(at::TensorList features, const at::Tensor& weight,
                             const at::Tensor& bias, c10::IntArrayRef size);

// features as above; gam (B, 1, H, W) with H and W integer multiples of every h_v and w_v.
void check_gam_multiply_args(at::TensorList features, const at::Tensor& gam);

// The backward entry points: the forward's checks on features and weight, plus grad_logits,
// grad_gam and gam all (B, 1, H, W) of the features' dtype and batch.
void check_mini_decoder_backward_args(const at::Tensor& grad_logits, const at::Tensor& grad_gam,
                                      const at::Tensor& gam, at::TensorList features,
                                      const at::Tensor& weight);

// The forward's checks, plus one grad_outputs[i] shaped like and of the dtype of each features[i].
void check_gam_multiply_backward_args(at::TensorList grad_outputs, at::TensorList features,
                                      const at::Tensor& gam);

// The dtypes a compiled kernel accepts, for its error message.
void check_kernel_dtype(const at::Tensor& t, const char* arg, bool allow_reduced_precision);

}  // namespace paanet
