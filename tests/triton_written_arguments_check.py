"""Check, without a GPU, that no Triton launch passes a tensor that its kernel may write in two arguments.

On a GPU the Triton operators are torch.library.triton_op, and torch.compile functionalizes each
launch: it finds the arguments a kernel may write by analysing the kernel's TTIR, runs the kernel on
copies of them, and copies each back to its tensor. A tensor passed in two such arguments (once as a
scale's output, once as the filler of an unused scale) then gets the unwritten copy last. This runs
every host function with 1 to 4 scales on CPU tensors, records the launches instead of running them,
and asks torch's own analysis (compiled for sm_90 here) which arguments each kernel writes. Run in a
process without TRITON_INTERPRET:

    python tests/triton_written_arguments_check.py

Prints one line per launch and exits non-zero if any written tensor is passed twice.
"""
from __future__ import annotations

import sys
from typing import Any

import torch
import triton
from torch._higher_order_ops import triton_kernel_wrap
from triton.backends.compiler import GPUTarget

from paanet_fast.triton import host


class _Sm90Target:
    """The active driver as far as torch's analysis asks: the target it generates TTIR for."""

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)


def jit_function(kernel: Any) -> Any:
    """The @triton.jit function of a kernel, through its autotuner if it has one."""
    return kernel.fn if hasattr(kernel, "configs") else kernel


def written_arguments(kernel: Any, kwargs: dict[str, Any]) -> list[str]:
    """Names of the tensor arguments torch.compile's analysis finds `kernel` may write."""
    if hasattr(triton_kernel_wrap, "identify_mutated_tensors"):  # torch 2.11 and older
        return triton_kernel_wrap.identify_mutated_tensors(kernel, kwargs, {})
    accesses = triton_kernel_wrap.identify_accessed_tensors(kernel, kwargs, {})
    return [dep.name for dep in accesses.read_writes.writes if isinstance(kwargs.get(dep.name), torch.Tensor)]


def recorded_launches(num_scales: int) -> list[tuple[Any, dict[str, Any]]]:
    """(kernel, its arguments by name) of every launch of the four host functions, odd sizes."""
    launches = []

    def record(kernel: Any, grid: Any, *args: Any, **constexprs: Any) -> None:
        launches.append((kernel, {**dict(zip(jit_function(kernel).arg_names, args)), **constexprs}))

    host.launch = record
    gen = torch.Generator().manual_seed(num_scales)
    size = (8 * 7, 8 * 5)
    features = [torch.randn(2, 3 + v, size[0] // 2 ** (v + 1), size[1] // 2 ** (v + 1), generator=gen)
                for v in range(num_scales)]
    weight = torch.randn(1, sum(f.shape[1] for f in features), 3, 3, generator=gen)
    gam = torch.rand(2, 1, *size, generator=gen)
    logits, g = host.mini_decoder_forward(features, weight, torch.randn(1, generator=gen), size)
    host.mini_decoder_backward(torch.randn_like(logits), torch.randn_like(g), g, features, weight)
    for reverse in (False, True):
        attended = host.gam_multiply_forward(features, gam, reverse)
        host.gam_multiply_backward([torch.randn_like(p) for p in attended], features, gam, reverse)
    # The two-launch backward too, where a window side is not a power of two.
    odd_size = (42, 30)
    odd = [torch.randn(2, 3, odd_size[0] // s, odd_size[1] // s, generator=gen) for s in (3, 2, 6, 1)[:num_scales]]
    host.gam_multiply_backward([torch.randn_like(f) for f in odd], odd, torch.rand(2, 1, *odd_size, generator=gen),
                               False)
    return launches


def main() -> int:
    triton.runtime.driver.set_active(_Sm90Target())
    failures = 0
    for num_scales in range(1, host.MAX_SCALES + 1):
        for kernel, kwargs in recorded_launches(num_scales):
            name = jit_function(kernel).__name__
            written = written_arguments(kernel, kwargs)
            twice = {w: [n for n, a in kwargs.items() if n != w and a is kwargs[w]] for w in written}
            twice = {w: others for w, others in twice.items() if others}
            failures += bool(twice) or not written
            state = "ok  " if written and not twice else "FAIL"
            print(f"{state} {num_scales} scales {name}: writes {sorted(written)}"
                  + (f"; also passed as {twice}" if twice else "") + ("; writes nothing?" if not written else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
