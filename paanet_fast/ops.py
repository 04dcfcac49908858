"""Public front end of the two fused PAANet operators (design section 2).

Both functions validate their arguments, cast them to the autocast dtype when autocast is on (all but
float32 mini-decoder parameters, which the kernels read as they are), and
hand them to a backend (see paanet_fast.backends); the model computes every GAM and every
attention product through these two functions only.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import portable, reference
from .amp import autocast_dtype, cast_for_autocast
from .backends import Backend, available_backends, register, resolve
from .checks import check_gam_multiply_args, check_mini_decoder_args

__all__ = ["mini_decoder", "gam_multiply", "available_backends"]

# Plain PyTorch: both run on any device.
register(Backend("reference", None, reference.mini_decoder, reference.gam_multiply))
register(Backend("portable", None, portable.mini_decoder, portable.gam_multiply))


def _autocast(tensors: list[torch.Tensor], *, keep_float32: bool = False) -> list[torch.Tensor]:
    device_type = tensors[0].device.type
    dtype = autocast_dtype(device_type)
    return tensors if dtype is None else cast_for_autocast(tensors, device_type, dtype, keep_float32=keep_float32)


def mini_decoder(features: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                 size: Sequence[int], *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The GAM of a PAAD layer: upsample every scale to `size`, concatenate, 3x3 conv, sigmoid.

    Args:
        features: n tensors F_v of shape (B, C_v, h_v, w_v), one floating dtype and device.
        weight: (1, sum C_v, 3, 3) convolution weight (channels in the order of `features`), of the
            features' dtype, or float32 beside float16 or bfloat16 features (also under autocast,
            which leaves float32 parameters uncast here: the kernels read them in float32).
        bias: (1,) convolution bias, of the weight's dtype rule.
        size: output (H, W).
        backend: "auto" (None), "reference", "portable", "cpp", "cuda" or "triton".

    Returns:
        (logits, gam): Z and G = sigmoid(Z), each (B, 1, H, W).
    """
    features = check_mini_decoder_args(features, weight, bias, size, "mini_decoder", under_autocast=True)
    features = _autocast(features)
    weight, bias = _autocast([weight, bias], keep_float32=True)
    chosen = resolve(backend, features[0].device, features[0].dtype)
    return chosen.mini_decoder(features, weight, bias, (size[0], size[1]))


def gam_multiply(features: Sequence[torch.Tensor], gam: torch.Tensor, reverse: bool = False, *,
                 backend: str | None = None) -> list[torch.Tensor]:
    """Attention products P_v = F_v * a_v, a_v the GAM average-pooled to F_v's size (1 - a_v if reverse).

    Args:
        features: n tensors F_v of shape (B, C_v, h_v, w_v).
        gam: (B, 1, H, W) with H and W integer multiples of every h_v and w_v.
        reverse: use the reverse attention 1 - a_v.
        backend: "auto" (None), "reference", "portable", "cpp", "cuda" or "triton".

    Returns:
        n tensors shaped like `features`.
    """
    features = check_gam_multiply_args(features, gam, reverse, "gam_multiply", under_autocast=True)
    *features, gam = _autocast([*features, gam])
    return resolve(backend, features[0].device, features[0].dtype).gam_multiply(features, gam, reverse)
