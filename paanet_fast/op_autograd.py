"""Autograd kernels for the operators of the compiled extension, without torch.library's generic layer.

torch.library.register_autograd wraps any schema: it flattens and rebuilds every call's arguments,
results and gradients with torch.utils._pytree and fills in defaults, about 40 us of host time a
forward and backward on the project's CPU (benchmarks/bench_ops.py's test_host_overhead: cpp
mini_decoder 0.22 to 0.18 ms, gam_multiply 0.12 to 0.08 ms without it), paid on every call of an
eager step on any device. The operators here take and return only tensors, lists of tensors and
constants, so a flat structure (`flatten`) is enough. The registration is the same as
register_autograd's, an "Autograd" kernel that either redispatches below autograd or applies an
autograd.Function that does, so torch.compile, torch.export and opcheck see what they saw before.

Operators defined by torch.library.custom_op (the Triton backend's) keep register_autograd: their
definition owns the Autograd kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, _C


@dataclass(frozen=True)
class _Constant:
    value: Any


Structure = tuple  # per argument: None (a tensor), an int (a list of that many tensors) or a _Constant


def flatten(values: Sequence[Any]) -> tuple[list[Any], Structure]:
    """The tensors of an argument tuple whose entries are tensors, lists of tensors or constants (a
    list of ints among them), in order, and the structure that `unflatten` rebuilds the tuple from."""
    flat, structure = [], []
    for value in values:
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) for v in value):
            flat.extend(value)
            structure.append(len(value))
        elif isinstance(value, Tensor):
            flat.append(value)
            structure.append(None)
        else:
            structure.append(_Constant(value))
    return flat, tuple(structure)


def unflatten(flat: Sequence[Any], structure: Structure, constants: bool = True) -> list[Any]:
    """The arguments that `flatten` took apart (or their gradients: None for constants)."""
    values, position = [], 0
    for entry in structure:
        if isinstance(entry, _Constant):
            values.append(entry.value if constants else None)
        elif entry is None:
            values.append(flat[position])
            position += 1
        else:
            values.append(list(flat[position:position + entry]))
            position += entry
    return values


def _flat_gradients(grads: Sequence[Any], structure: Structure) -> list[Any]:
    """A backward formula's gradients, one per argument (a list for a list, anything for a constant),
    flattened as the arguments were."""
    flat = []
    for grad, entry in zip(grads, structure):
        if entry is None:
            flat.append(grad)
        elif not isinstance(entry, _Constant):
            flat.extend(grad)
    return flat


def register_autograd(qualname: str, backward: Callable[..., Any], setup_context: Callable[..., None]) -> None:
    """As torch.library.register_autograd(qualname, backward, setup_context=setup_context), for an
    operator of tensors, lists of tensors and constants: `setup_context(ctx, inputs, output)` and
    `backward(ctx, *grads)` see the arguments and results structured as the operator's."""
    if torch._library.custom_ops._maybe_get_opdef(qualname) is not None:
        torch.library.register_autograd(qualname, backward, setup_context=setup_context)
        return
    namespace, name = qualname.split("::")
    op = getattr(getattr(torch.ops, namespace), name).default
    several_results = len(op._schema.returns) > 1

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, keyset: _C.DispatchKeySet, structure: Structure, output_structure: list,
                    *flat: Any) -> tuple:
            args = unflatten(flat, structure)
            with _C._AutoDispatchBelowAutograd():
                output = op.redispatch(keyset & _C._after_autograd_keyset, *args)
            setup_context(ctx, tuple(args), output)
            ctx.structure = structure
            results, ctx.output_structure = flatten(output if several_results else (output,))
            output_structure.append(ctx.output_structure)  # for the caller, who rebuilds the results
            return tuple(results)

        @staticmethod
        def backward(ctx: Any, *grads: Tensor) -> tuple:
            input_grads = backward(ctx, *unflatten(grads, ctx.output_structure))
            return (None, None, None, *_flat_gradients(input_grads, ctx.structure))

    def kernel(keyset: _C.DispatchKeySet, *args: Any) -> Any:
        if not (_C.is_grad_enabled() and _C._any_requires_grad(*args)):
            with _C._AutoDispatchBelowAutograd():
                return op.redispatch(keyset & _C._after_autograd_keyset, *args)
        flat, structure = flatten(args)
        output_structure = []
        output = unflatten(Function.apply(keyset, structure, output_structure, *flat), output_structure[0])
        return tuple(output) if several_results else output[0]

    library = torch.library.Library(namespace, "IMPL")
    library.impl(name, kernel, "Autograd", with_keyset=True)
    _LIBRARIES.append(library)  # a Library's registrations last as long as it does


_LIBRARIES: list[torch.library.Library] = []
