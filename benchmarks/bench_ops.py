"""The two fused operators per provider, forward and forward+backward, with peak memory.

Providers side by side: the reference backend, torch.compile of it, the portable backend (plain
PyTorch, low-resolution formulation) and the compiled CPU kernels ("cpp"). Sizes of issue 3: B=8,
four scales of 32 channels at strides 4/8/16/32 of a 256x256 output, float32, on the CPU.
`test_host_overhead`: forward+backward at B=1, 2 channels a scale, 32x32, where the kernels'
arithmetic is negligible and what is timed is the host's work a call (validation, dispatch,
autograd), which a GPU step pays on every call too.

    pytest benchmarks/bench_ops.py --benchmark-only
    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json && python benchmarks/report.py bench.json

Peak memory (extra_info["peak_memory_mib"]) is the growth of the resident set over one call,
see peak_memory.py; the inputs (and, forward+backward, their gradients from the previous call,
which are dropped first) are not counted.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import pytest
import torch

from peak_memory import peak_memory_bytes
from paanet_fast import ops
from paanet_fast.backends import available_backends

PROVIDERS = ["reference", "compile-reference", "portable", "cpp"]
STRIDES = (4, 8, 16, 32)
BENCHMARK_SHAPE = (8, 32, 256)  # batch, channels a scale, output side
HOST_OVERHEAD_SHAPE = (1, 2, 32)
CPU = torch.device("cpu")


def _inputs(shape: tuple[int, int, int], requires_grad: bool
            ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, channels, size = shape
    gen = torch.Generator().manual_seed(0)
    features = [torch.randn(batch, channels, size // s, size // s, generator=gen) for s in STRIDES]
    weight = torch.randn(1, channels * len(STRIDES), 3, 3, generator=gen) / (channels * len(STRIDES)) ** 0.5
    bias = torch.zeros(1)
    gam = torch.rand(batch, 1, size, size, generator=gen)
    for t in [*features, weight, bias, gam]:
        t.requires_grad_(requires_grad)
    return features, weight, bias, gam


def _operator(name: str, provider: str) -> Callable:
    backend = "reference" if provider.endswith("reference") else provider
    fn = functools.partial(getattr(ops, name), backend=backend)
    return torch.compile(fn) if provider.startswith("compile") else fn


def _step(op_name: str, provider: str, backward: bool, shape: tuple[int, int, int]) -> Callable[[], None]:
    """One call of the operator (and its backward), on fixed inputs and output gradients."""
    features, weight, bias, gam = _inputs(shape, requires_grad=backward)
    op = _operator(op_name, provider)
    if op_name == "mini_decoder":
        call = functools.partial(op, features, weight, bias, (shape[2], shape[2]))
        leaves = [*features, weight, bias]
    else:
        call = functools.partial(op, features, gam, True)
        leaves = [*features, gam]
    if not backward:
        return call
    gen = torch.Generator().manual_seed(1)
    outputs = call()
    grads = [torch.randn(o.shape, generator=gen) for o in outputs]

    def forward_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        torch.autograd.backward(call(), grads)

    return forward_backward


def _run(benchmark, op_name: str, mode: str, provider: str, shape: tuple[int, int, int] = BENCHMARK_SHAPE,
         group: str = "") -> None:
    if provider not in ("reference", "compile-reference") and provider not in available_backends():
        pytest.skip(f"the {provider} backend is not available here")
    step = _step(op_name, provider, mode == "forward+backward", shape)
    step()  # warm-up: compilation, allocator, thread pool
    benchmark.extra_info["peak_memory_mib"] = round(peak_memory_bytes(step, CPU) / 2**20, 1)
    benchmark.extra_info.update(threads=torch.get_num_threads(), load_average_1min=os.getloadavg()[0],
                                batch=shape[0], size=shape[2], channels=shape[1], strides=list(STRIDES))
    benchmark.group = group or f"{op_name} {mode}"
    benchmark(step)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_mini_decoder(benchmark, mode, provider):
    _run(benchmark, "mini_decoder", mode, provider)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_gam_multiply(benchmark, mode, provider):
    _run(benchmark, "gam_multiply", mode, provider)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("op", ["mini_decoder", "gam_multiply"])
def test_host_overhead(benchmark, op, provider):
    _run(benchmark, op, "forward+backward", provider, HOST_OVERHEAD_SHAPE, f"{op} forward+backward, host overhead")
