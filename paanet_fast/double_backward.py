"""Autograd formulas for the backward operators of the compiled backends (design section 3), so that
gradients of gradients (create_graph=True: gradgradcheck, gradient penalties, meta-learning) are
exact on cpp, cuda and triton alike.

A backward operator computes the first backward of its forward operator, exactly what
paanet_fast.portable's *_backward functions compute in plain PyTorch. The backward operator's own
derivative is therefore the vector-Jacobian product of that portable function, which autograd
derives; when a graph is being recorded it is built from differentiable ops, so every higher
order follows as well. The fast kernels still compute every first derivative: the portable
formulation only runs when a backward operator itself is differentiated.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .op_autograd import flatten, register_autograd, unflatten


def register_backward_autograd(qualname: str, first_backward: Callable[..., Any]) -> None:
    """Make the backward operator `qualname` differentiable: its derivative is that of
    `first_backward`, the plain-PyTorch function with the same arguments and results."""

    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        tensors, ctx.structure = flatten(inputs)
        ctx.save_for_backward(*tensors)

    def backward(ctx: Any, *grads: Any) -> tuple:
        cotangents, _ = flatten(grads)
        inputs = list(ctx.saved_tensors)
        create_graph = torch.is_grad_enabled()  # the engine enables grad exactly when create_graph is set
        with torch.enable_grad():
            # Differentiate with respect to fresh aliases: one input may derive from another in the
            # caller's graph (the incoming gradient of G from G itself), and the derivative wanted is
            # the partial one. When a graph is being built, the aliases are views, which keep the
            # result connected to the caller's graph so that a further derivative reaches it.
            leaves = [t.view_as(t) if create_graph and t.requires_grad else t.detach().requires_grad_()
                      for t in inputs]
            outputs, _ = flatten(first_backward(*unflatten(leaves, ctx.structure)))
            # torch.library hands every output a gradient (zeros where unused), never None.
            input_grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True, create_graph=create_graph)
        return tuple(unflatten(list(input_grads), ctx.structure, constants=False))

    register_autograd(qualname, backward, setup_context=setup_context)
