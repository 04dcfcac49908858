"""The compiled backends "cpp" (and "cuda" when the extension has CUDA kernels).

Importing this module loads paanet_fast._C, whose static initialisers define the four
torch.ops.paanet_fast operators and their CPU (and CUDA) kernels. Here they get what torch.compile
and autograd need: fake kernels (the kernels' argument checks, then shapes and strides;
SymInt-friendly), autograd formulas that call the backward operators, and autograd formulas for
those (paanet_fast.double_backward).
An ImportError of the extension propagates on purpose: paanet_fast.backends records it as the
reason the backends are unavailable.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import _C  # noqa: F401  (registers the operators)
from . import portable
from .amp import cast_for_autocast
from .backends import Backend, mark_unavailable, register
from .checks import (check_gam_multiply_args, check_gam_multiply_backward_args, check_kernel_dtype,
                     check_mini_decoder_args, check_mini_decoder_backward_args)
from .double_backward import register_backward_autograd
from .op_autograd import register_autograd

_ops = torch.ops.paanet_fast


# --- fake kernels: output metadata exactly as the compiled kernels produce it ---------------------
# They check the arguments as the kernels do (csrc/checks.cpp), so that what torch.compile traces
# runs, and a direct call mixing meta and CPU tensors (dispatched here) fails instead of returning
# uninitialised memory.

@torch.library.register_fake("paanet_fast::mini_decoder")
def _mini_decoder_fake(features: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                       size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    features = check_mini_decoder_args(features, weight, bias, size, "paanet_fast.mini_decoder")
    check_kernel_dtype(features, "paanet_fast.mini_decoder")
    logits = features[0].new_empty((features[0].shape[0], 1, size[0], size[1]))
    return logits, torch.empty_like(logits)


@torch.library.register_fake("paanet_fast::mini_decoder_backward")
def _mini_decoder_backward_fake(grad_logits: torch.Tensor, grad_gam: torch.Tensor, gam: torch.Tensor,
                                features: Sequence[torch.Tensor], weight: torch.Tensor
                                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    check_mini_decoder_backward_args(grad_logits, grad_gam, gam, features, weight, "paanet_fast.mini_decoder_backward")
    check_kernel_dtype(features, "paanet_fast.mini_decoder_backward")
    return [torch.empty_like(f) for f in features], torch.empty_like(weight), weight.new_empty((1,))


@torch.library.register_fake("paanet_fast::gam_multiply")
def _gam_multiply_fake(features: Sequence[torch.Tensor], gam: torch.Tensor, reverse: bool) -> list[torch.Tensor]:
    features = check_gam_multiply_args(features, gam, reverse, "paanet_fast.gam_multiply")
    check_kernel_dtype(features, "paanet_fast.gam_multiply")
    return [torch.empty_like(f) for f in features]


@torch.library.register_fake("paanet_fast::gam_multiply_backward")
def _gam_multiply_backward_fake(grad_outputs: Sequence[torch.Tensor], features: Sequence[torch.Tensor],
                                gam: torch.Tensor, reverse: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    check_gam_multiply_backward_args(grad_outputs, features, gam, reverse, "paanet_fast.gam_multiply_backward")
    check_kernel_dtype(features, "paanet_fast.gam_multiply_backward")
    return [torch.empty_like(f) for f in features], torch.empty_like(gam)


# --- autograd: save the low-resolution inputs (and G), recompute the rest in the backward op -----

def _mini_decoder_setup(ctx, inputs, output) -> None:
    features, weight, _bias, _size = inputs
    _logits, gam = output
    ctx.save_for_backward(gam, weight, *features)


def _mini_decoder_backward(ctx, grad_logits: torch.Tensor, grad_gam: torch.Tensor):
    # An output that did not reach the loss has a zero gradient here (autograd materializes it).
    gam, weight, *features = ctx.saved_tensors
    grad_features, grad_weight, grad_bias = _ops.mini_decoder_backward(grad_logits, grad_gam, gam, features, weight)
    return list(grad_features), grad_weight, grad_bias, None


def _gam_multiply_setup(ctx, inputs, output) -> None:
    features, gam, reverse = inputs
    ctx.reverse = reverse
    ctx.save_for_backward(gam, *features)


def _gam_multiply_backward(ctx, grad_outputs: Sequence[torch.Tensor]):
    gam, *features = ctx.saved_tensors
    grad_features, grad_gam = _ops.gam_multiply_backward(grad_outputs, features, gam, ctx.reverse)
    return list(grad_features), grad_gam, None


register_autograd("paanet_fast::mini_decoder", _mini_decoder_backward, setup_context=_mini_decoder_setup)
register_autograd("paanet_fast::gam_multiply", _gam_multiply_backward, setup_context=_gam_multiply_setup)
# Second and higher derivatives: the backward operators differentiated through their portable twins.
register_backward_autograd("paanet_fast::mini_decoder_backward", portable.mini_decoder_backward)
register_backward_autograd("paanet_fast::gam_multiply_backward", portable.gam_multiply_backward)


# --- autocast: cast the inputs as a built-in op would, then run the kernels with autocast off -----
# The kernels compute half types in float32 with ATen matmuls inside; left under autocast, those
# matmuls would hand back the autocast dtype where the kernel expects float32. A backward may run
# inside the caller's autocast region: its operators run with autocast off too, but uncast, since a
# backward computes in the dtype of its forward. The mini-decoder's float32 weight and bias (the
# argument positions in `parameters`) stay float32: its kernels read them as they are.

def _autocast_kernel(op: torch._ops.OpOverload, device_type: str, cast: bool, parameters: tuple[int, ...]):
    def kernel(*args):
        if cast:
            dtype = torch.get_autocast_dtype(device_type)
            args = tuple(cast_for_autocast(a, device_type, dtype, keep_float32=i in parameters)
                         for i, a in enumerate(args))
        with torch.autocast(device_type, enabled=False):
            return op(*args)
    return kernel


_autocast_library = torch.library.Library("paanet_fast", "IMPL")
for _name, _cast, _parameters in (("mini_decoder", True, (1, 2)), ("gam_multiply", True, ()),
                                  ("mini_decoder_backward", False, ()), ("gam_multiply_backward", False, ())):
    for _device_type, _key in (("cpu", "AutocastCPU"), ("cuda", "AutocastCUDA")):
        _autocast_library.impl(_name, _autocast_kernel(getattr(_ops, _name).default, _device_type, _cast, _parameters),
                               _key)


# --- backends ------------------------------------------------------------------------------------

def mini_decoder(features: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, gam), each (B, 1, H, W), from the compiled kernels (arguments validated by ops)."""
    return _ops.mini_decoder(features, weight, bias, [size[0], size[1]])


def gam_multiply(features: list[torch.Tensor], gam: torch.Tensor, reverse: bool) -> list[torch.Tensor]:
    """F_v * pooled(G) (or 1 - pooled(G)) for every scale, from the compiled kernels."""
    return list(_ops.gam_multiply(features, gam, reverse))


register(Backend("cpp", frozenset({"cpu"}), mini_decoder, gam_multiply))
if torch._C._dispatch_has_kernel_for_dispatch_key("paanet_fast::mini_decoder", "CUDA"):
    register(Backend("cuda", frozenset({"cuda"}), mini_decoder, gam_multiply))
else:
    mark_unavailable("cuda", "paanet_fast._C was built without CUDA kernels (no nvcc or a CPU-only torch "
                             "at build time, or PAANET_FAST_CUDA=0)")
