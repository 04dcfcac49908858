// Argument checks shared by the CPU and CUDA entry points. Each failure is a std::invalid_argument
// (ValueError in Python) whose message names the offending argument.
#pragma once

#include "stable_api.h"

namespace paanet {

// features: non-empty list of 4-D (B, C_v, h_v, w_v) tensors of one floating dtype and device;
// weight (1, sum C_v, 3, 3) and bias (1,) of that dtype, or float32 beside float16 or bfloat16
// features; size (H, W) positive.
void check_mini_decoder_args(const TensorList& features, const Tensor& weight,
                             const Tensor& bias, IntList size);

// features as above; gam (B, 1, H, W) with H and W integer multiples of every h_v and w_v.
void check_gam_multiply_args(const TensorList& features, const Tensor& gam);

// The backward entry points: the forward's checks on features and weight, plus grad_logits,
// grad_gam and gam all (B, 1, H, W) of the features' dtype and batch.
void check_mini_decoder_backward_args(const Tensor& grad_logits, const Tensor& grad_gam,
                                      const Tensor& gam, const TensorList& features,
                                      const Tensor& weight);

// The forward's checks, plus one grad_outputs[i] shaped like and of the dtype of each features[i].
void check_gam_multiply_backward_args(const TensorList& grad_outputs, const TensorList& features,
                                      const Tensor& gam);

// The dtypes a compiled kernel accepts, for its error message.
void check_kernel_dtype(const Tensor& t, const char* arg, bool allow_reduced_precision);

}  // namespace paanet
