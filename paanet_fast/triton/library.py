"""The Triton operators in torch.library (namespace paanet_fast, names prefixed triton_) with autograd
(the backward operators too: paanet_fast.double_backward).

On a GPU they are torch.library.triton_op: torch.compile traces into them and sees the kernels.
Under the interpreter they are opaque custom ops (torch.compile cannot trace an interpreted kernel),
whose fake kernel is the host function itself with the launches skipped. Either way the function
below is what runs on fake tensors too, so its argument checks (paanet_fast.checks) are the fake
kernel's: a trace rejects what a run would.
"""
from __future__ import annotations

from typing import Any, Callable, List  # List, not list: torch 2.6 infers the ops' schemas from typing.List only

import torch
from torch import Tensor

from .. import cuda_arch, portable
from ..checks import (check_gam_multiply_args, check_gam_multiply_backward_args, check_kernel_dtype,
                      check_mini_decoder_args, check_mini_decoder_backward_args)
from ..double_backward import register_backward_autograd
from . import host
from ._runtime import INTERPRET


def _define(name: str, fn: Callable) -> Any:
    qualname = f"paanet_fast::{name}"
    if INTERPRET:
        op = torch.library.custom_op(qualname, fn, mutates_args=())
        op.register_fake(fn)
        return op
    return torch.library.triton_op(qualname, fn, mutates_args=())


def _mini_decoder(features: List[Tensor], weight: Tensor, bias: Tensor, size: List[int]) -> tuple[Tensor, Tensor]:
    check_mini_decoder_args(features, weight, bias, size, "paanet_fast.triton_mini_decoder")
    check_kernel_dtype(features, "paanet_fast.triton_mini_decoder")
    return host.mini_decoder_forward(features, weight, bias, size)


def _mini_decoder_backward(grad_logits: Tensor, grad_gam: Tensor, gam: Tensor, features: List[Tensor],
                           weight: Tensor) -> tuple[List[Tensor], Tensor, Tensor]:
    op = "paanet_fast.triton_mini_decoder_backward"
    check_mini_decoder_backward_args(grad_logits, grad_gam, gam, features, weight, op)
    check_kernel_dtype(features, op)
    return host.mini_decoder_backward(grad_logits, grad_gam, gam, features, weight)


def _gam_multiply(features: List[Tensor], gam: Tensor, reverse: bool) -> List[Tensor]:
    check_gam_multiply_args(features, gam, reverse, "paanet_fast.triton_gam_multiply")
    check_kernel_dtype(features, "paanet_fast.triton_gam_multiply")
    return host.gam_multiply_forward(features, gam, reverse)


def _gam_multiply_backward(grad_outputs: List[Tensor], features: List[Tensor], gam: Tensor,
                           reverse: bool) -> tuple[List[Tensor], Tensor]:
    op = "paanet_fast.triton_gam_multiply_backward"
    check_gam_multiply_backward_args(grad_outputs, features, gam, reverse, op)
    check_kernel_dtype(features, op)
    return host.gam_multiply_backward(grad_outputs, features, gam, reverse)


mini_decoder_op = _define("triton_mini_decoder", _mini_decoder)
mini_decoder_backward_op = _define("triton_mini_decoder_backward", _mini_decoder_backward)
gam_multiply_op = _define("triton_gam_multiply", _gam_multiply)
gam_multiply_backward_op = _define("triton_gam_multiply_backward", _gam_multiply_backward)


def _mini_decoder_setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    features, weight, _bias, _size = inputs
    ctx.save_for_backward(output[1], weight, *features)  # G is the only full-resolution tensor kept


def _mini_decoder_grad(ctx: Any, grad_logits: Tensor, grad_gam: Tensor) -> tuple:
    gam, weight, *features = ctx.saved_tensors
    grad_features, grad_weight, grad_bias = mini_decoder_backward_op(grad_logits, grad_gam, gam, features, weight)
    return grad_features, grad_weight, grad_bias, None


def _gam_multiply_setup_context(ctx: Any, inputs: tuple, output: list[Tensor]) -> None:
    features, gam, reverse = inputs
    ctx.reverse = reverse
    ctx.save_for_backward(gam, *features)


def _gam_multiply_grad(ctx: Any, grad_outputs: list[Tensor]) -> tuple:
    gam, *features = ctx.saved_tensors
    grad_features, grad_gam = gam_multiply_backward_op(grad_outputs, features, gam, ctx.reverse)
    return grad_features, grad_gam, None


mini_decoder_op.register_autograd(_mini_decoder_grad, setup_context=_mini_decoder_setup_context)
gam_multiply_op.register_autograd(_gam_multiply_grad, setup_context=_gam_multiply_setup_context)
# Second and higher derivatives, as for the compiled extension's operators.
register_backward_autograd("paanet_fast::triton_mini_decoder_backward", portable.mini_decoder_backward)
register_backward_autograd("paanet_fast::triton_gam_multiply_backward", portable.gam_multiply_backward)


def _through_float32(t: Tensor) -> bool:
    # bfloat16 on a card without bfloat16 arithmetic (Turing: T4, RTX 20xx), where older Tritons
    # (3.2, torch 2.6's) cannot even convert it (ptxas: "'.bf16' requires .target sm_80"). The
    # kernels accumulate in float32 anyway: from float32 copies, with the outputs rounded once, the
    # forward gives the bfloat16 kernels' values, and autograd's casts the gradients' dtypes.
    return t.dtype == torch.bfloat16 and not cuda_arch.computes_bfloat16(t.device)


def mini_decoder(features: list[Tensor], weight: Tensor, bias: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Backend entry point (validated arguments): (logits, gam), each (B, 1, H, W)."""
    if _through_float32(features[0]):
        logits, gam = mini_decoder_op([f.float() for f in features], weight.float(), bias.float(), list(size))
        return logits.bfloat16(), gam.bfloat16()
    return mini_decoder_op(features, weight, bias, list(size))


def gam_multiply(features: list[Tensor], gam: Tensor, reverse: bool) -> list[Tensor]:
    """Backend entry point (validated arguments): P_v shaped like each F_v."""
    if _through_float32(gam):
        return [p.bfloat16() for p in gam_multiply_op([f.float() for f in features], gam.float(), reverse)]
    return gam_multiply_op(features, gam, reverse)
