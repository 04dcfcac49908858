"""How the Triton kernels are compiled and launched: autotuned JIT kernels on a GPU, or the interpreter.

TRITON_INTERPRET=1 (read by Triton when a kernel is decorated, so it must be set before this package
is imported) runs the kernels in Python on CPU tensors; the test suite uses it on machines without
a GPU. Autotuning is skipped there (each config would be benchmarked in the slow interpreter) and
every kernel runs with its interpreter config: large blocks, since the interpreter's cost is per
program and per operation, not per element.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Sequence

import torch
import triton
from torch._subclasses.fake_tensor import FakeTensor
from torch.library import wrap_triton


def _interpreting() -> bool:
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; older versions read the environment directly
    if knobs is not None and hasattr(knobs, "runtime"):
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


INTERPRET: bool = _interpreting()


def _index_scalars_with_any_numpy() -> None:
    """Lets the interpreter of older triton (3.2 and 3.5 seen) bound a loop by a scalar (`range(0, C)`)
    under numpy >= 2.4: it turns the scalar, an array of shape (1,), into an index with int(array),
    which numpy 2.4 refuses. Triton 3.8 squeezes the array first, as this does; its patch function
    takes a second argument, so it is left alone."""
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or len(inspect.signature(original).parameters) != 1:
        return

    def patch_lang_tensor(tensor: type) -> None:
        original(tensor)
        tensor.__index__ = lambda self: int(self.handle.data.squeeze())

    interpreter._patch_lang_tensor = patch_lang_tensor


if INTERPRET:
    _index_scalars_with_any_numpy()

# Launch parameters of each interpreted kernel, by kernel id.
_interpreter_meta: dict[int, dict[str, Any]] = {}


def tuned(configs: Sequence[triton.Config], key: list[str], interpreter: dict[str, int]) -> Callable[[Callable], Any]:
    """@triton.jit + @triton.autotune(configs, key) on a GPU; @triton.jit launched with the
    constexprs `interpreter` under the interpreter."""
    def decorate(fn: Callable) -> Any:
        kernel = triton.jit(fn)
        if INTERPRET:
            _interpreter_meta[id(kernel)] = dict(interpreter)
            return kernel
        return triton.autotune(configs=list(configs), key=key)(kernel)
    return decorate


def block_sizes(kernel: Any) -> dict[str, Any]:
    """The constexprs that a kernel runs with whatever its configuration (its host sizes buffers or
    windows by them): every one under the interpreter, those that all its configs share on a GPU."""
    if INTERPRET:
        return dict(_interpreter_meta[id(kernel)])
    first, *others = kernel.configs
    return {k: v for k, v in first.kwargs.items() if all(c.kwargs.get(k) == v for c in others)}


def launch(kernel: Any, grid: Callable[[dict[str, Any]], tuple[int, ...]], *args: Any, **constexprs: Any) -> None:
    """Launch `kernel` over `grid(meta)` in a way torch.compile can trace (torch.library.wrap_triton).

    Under the interpreter the ops are opaque custom ops whose fake kernel is the host function
    itself, so a launch on fake tensors (shape inference) does nothing.
    """
    if INTERPRET:
        if any(isinstance(a, FakeTensor) for a in args):
            return
        kernel[grid](*args, **_interpreter_meta[id(kernel)], **constexprs)
        return
    wrap_triton(kernel)[grid](*args, **constexprs)


_SIZE_CLASS_BOUNDS = [4**k for k in range(1, 17)]


def size_class(elements: int) -> int:
    """The autotuning key of a kernel whose best tile depends on the size of one sample's output: one
    class per factor of 4, so neither the batch size nor a slightly different image size retunes.
    Comparisons, not arithmetic: under torch.compile `elements` may be symbolic, and each comparison
    becomes a range guard rather than a specialization on the exact size."""
    return sum(1 for bound in _SIZE_CLASS_BOUNDS if elements >= bound)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 accumulates in float64; float32, float16 and bfloat16 accumulate in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
