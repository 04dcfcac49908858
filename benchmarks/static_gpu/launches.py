"""The operator calls of a training step and at the benchmark shapes, and the launches they make:
counted through the CUDA emulation's launch log, the Triton host's launcher, and torch.profiler for
the ATen ops of the host code.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections import Counter
from typing import Any, Callable, Iterator

import torch

from paanet_fast.amp import cast_for_autocast

from .compiled import kernel_key, split_signature

BATCH, CHANNELS, SIZE, STRIDES = 8, 32, 256, (4, 8, 16, 32)  # the benchmark shapes (benchmarks/bench_ops.py)
LAYERS_PER_STEP = 6  # PAAD layers of a PAANet: 2 blocks x 3 (paanet_fast.model)
# (batch, channels, output size) of the two launch counts; no size-1 dimension, where a reshape would
# be a view that is a copy elsewhere.
COUNT_SIZES = ((2, 3, 64), (3, 4, 96))
DTYPES = {"float32": torch.float32, "bf16 autocast": torch.bfloat16}



@dataclasses.dataclass
class Operators:
    """The four operators of a backend, raw: (features, weight, bias, size), (grad_logits, grad_gam, gam,
    features, weight), (features, gam, reverse), (grad_outputs, features, gam, reverse)."""
    mini_decoder: Callable
    mini_decoder_backward: Callable
    gam_multiply: Callable
    gam_multiply_backward: Callable


def step_inputs(batch: int, channels: int, size: int, dtype: torch.dtype) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)
    features = [randn(batch, channels, size // s, size // s) for s in STRIDES]
    # The weight and bias are float32 parameters, as a model's are under autocast.
    return dict(features=features, weight=torch.randn(1, channels * len(STRIDES), 3, 3, generator=gen),
                bias=torch.randn(1, generator=gen), size=[size, size],
                grad_logits=randn(batch, 1, size, size), grad_products=[torch.randn_like(f) for f in features])


def operator_calls(ops: Operators, inputs: dict[str, Any], reverse: bool) -> dict[str, Callable[[], Any]]:
    """The four calls of one PAAD layer, in order; each returns what the next needs."""
    state: dict[str, Any] = {}
    dtype = inputs["features"][0].dtype

    def forward_mini_decoder():
        # What the front end does to them under autocast (paanet_fast.ops): a cast would count as a launch.
        weight, bias = cast_for_autocast([inputs["weight"], inputs["bias"]], "cuda", dtype, keep_float32=True)
        state["weight"] = weight
        state["logits"], state["gam"] = ops.mini_decoder(inputs["features"], weight, bias, inputs["size"])

    def forward_gam_multiply():
        ops.gam_multiply(inputs["features"], state["gam"], reverse)

    def backward_gam_multiply():
        _, state["grad_gam"] = ops.gam_multiply_backward(inputs["grad_products"], inputs["features"], state["gam"], reverse)

    def backward_mini_decoder():
        ops.mini_decoder_backward(inputs["grad_logits"], state["grad_gam"], state["gam"], inputs["features"],
                                  state["weight"])

    return {"mini_decoder forward": forward_mini_decoder, "gam_multiply forward": forward_gam_multiply,
            "gam_multiply backward": backward_gam_multiply, "mini_decoder backward": backward_mini_decoder}


FREE_ATEN = {"empty", "empty_strided", "empty_like", "new_empty", "view", "_unsafe_view", "as_strided", "reshape",
             "_reshape_alias", "expand", "t", "transpose", "permute", "select", "slice", "split", "split_with_sizes",
             "narrow", "unsqueeze", "squeeze", "alias", "detach", "resize_", "set_", "lift_fresh", "unbind",
             "view_as", "contiguous", "to", "result_type", "chunk", "unflatten", "flatten", "resolve_conj", "resolve_neg",
             "conj", "_conj"}


# One device kernel each, whatever the CPU implementation calls inside (its zero-fills, conjugations).
OPAQUE_ATEN = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "dot", "sum", "mean", "cat"}


def computing_aten_ops(fn: Callable[[], Any]) -> tuple[Counter, list[dict]]:
    """Runs fn under torch.profiler; the aten ops that would run a device kernel, by name, and each with its
    input shapes: the leaf ops other than views, allocations and no-op casts (FREE_ATEN), and the ops of
    OPAQUE_ATEN as one each."""
    # Kineto reads its log level when the profiler first starts: without this, every profile prints
    # trace markers and, on a machine with no GPU, an error about counting devices that is not one.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    names, ops = Counter(), []
    for event in prof.events():
        short = event.name.removeprefix("aten::")
        if not event.name.startswith("aten::") or short in FREE_ATEN:
            continue
        leaf = not any(c.name.startswith("aten::") for c in event.cpu_children)
        ancestors = []
        parent = event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        if (any(a.removeprefix("aten::") in OPAQUE_ATEN for a in ancestors)
                or not (leaf or short in OPAQUE_ATEN)):
            continue
        names[short] += 1
        ops.append({"op": short, "shapes": [list(s) for s in event.input_shapes if isinstance(s, list)]})
    return names, ops


def emulated_cuda_operators(emulated) -> Operators:
    return Operators(emulated.mini_decoder, emulated.mini_decoder_backward, emulated.gam_multiply,
                     emulated.gam_multiply_backward)


def count_step(ops: Operators, take_launches: Callable[[], list[str]], batch: int, channels: int, size: int,
               dtype: torch.dtype) -> dict[str, dict[str, Any]]:
    """Launches and computing ATen ops of one training step, per operator call kind (summed over layers)."""
    counts: dict[str, dict[str, Any]] = {}
    take_launches()
    for layer in range(LAYERS_PER_STEP):
        inputs = step_inputs(batch, channels, size, dtype)
        for name, call in operator_calls(ops, inputs, reverse=layer % 2 == 1).items():
            aten, _ = computing_aten_ops(call)
            launched = take_launches()
            entry = counts.setdefault(name, {"kernels": Counter(), "aten": Counter()})
            entry["kernels"].update(launched)
            entry["aten"].update(aten)
    return counts


def parse_launch_line(line: str) -> tuple[str, tuple[int, int, int], int, int]:
    """(kernel key, grid, threads per block, dynamic shared bytes) of a line of the emulation's launch log."""
    signature, grid, block, shared = line.split("|")
    kernel = re.search(r"kKernel = (.*?); Kernel = void \(\*\)\((.*?)\)(?:; Args|\])", signature)
    if kernel is None:
        raise ValueError(f"gpu_static: the emulation's launch log names no kernel in {signature!r}")
    key = kernel_key(*split_signature(f"void {kernel.group(1)}({kernel.group(2)})"))
    return key, tuple(int(x) for x in grid.split(",")), math.prod(int(x) for x in block.split(",")), int(shared)


def cuda_launch_names(emulated) -> list[str]:
    """The kernels launched since the last call: name and template arguments (the instantiation)."""
    return [parse_launch_line(line)[0].split("(")[0] for line in emulated.emulation_take_launches().splitlines()]


def count_cuda_steps(emulated, dtype: torch.dtype) -> list[dict[str, dict[str, Any]]]:
    emulated.emulation_configure(False)  # real runs: the emulated kernels compute
    return [count_step(emulated_cuda_operators(emulated), lambda: cuda_launch_names(emulated), b, c, s, dtype)
            for b, c, s in COUNT_SIZES]


@dataclasses.dataclass
class TritonLaunch:
    """One launch the Triton host code makes, recorded, not run."""
    kernel: Any  # the autotuner (or JIT function)
    grid: Callable
    args: tuple
    constexprs: dict


@contextlib.contextmanager
def recorded_triton_launches() -> Iterator[list[TritonLaunch]]:
    """The Triton host code with its launcher replaced by a recorder: the kernels do not run (no GPU and no
    interpreter needed; the host sizes its grids and buffers from the shapes alone, never from values)."""
    from paanet_fast.triton import host
    recorded: list[TritonLaunch] = []
    original = host.launch
    host.launch = lambda kernel, grid, *args, **constexprs: recorded.append(TritonLaunch(kernel, grid, args, constexprs))
    try:
        yield recorded
    finally:
        host.launch = original


def triton_operators() -> Operators:
    from paanet_fast.triton import host
    return Operators(host.mini_decoder_forward, host.mini_decoder_backward, host.gam_multiply_forward,
                     host.gam_multiply_backward)


def triton_kernel_name(launch: TritonLaunch) -> str:
    return getattr(launch.kernel, "__name__", None) or launch.kernel.fn.__name__


def count_triton_steps(dtype: torch.dtype) -> list[dict[str, dict[str, Any]]]:
    """The Triton host code's launches in a training step, per operator call kind."""
    with recorded_triton_launches() as recorded:
        def take() -> list[str]:
            names = [triton_kernel_name(l) for l in recorded]
            recorded.clear()
            return names
        return [count_step(triton_operators(), take, b, c, s, dtype) for b, c, s in COUNT_SIZES]


def triton_launches_at_benchmark(dtype: torch.dtype) -> dict[str, tuple[list[TritonLaunch], list[dict]]]:
    """Per operator call: the launches the Triton host code makes (recorded, not run) and its ATen ops."""
    found = {}
    with recorded_triton_launches() as recorded:
        for name, call in benchmark_calls(triton_operators(), dtype).items():
            _, aten = computing_aten_ops(call)
            found[name] = (list(recorded), aten)
            recorded.clear()
    return found


def step_totals(per_call: dict[str, dict[str, Any]]) -> dict[str, int]:
    kernels = sum(sum(e["kernels"].values()) for e in per_call.values())
    aten = sum(sum(e["aten"].values()) for e in per_call.values())
    return {"kernels": kernels, "aten": aten, "total": kernels + aten}



@dataclasses.dataclass
class Launch:
    """One kernel launch of an operator call at the benchmark shapes, for one card."""
    key: str  # the kernel (Kernel.key)
    name: str
    grid: tuple[int, int, int]
    block: int  # threads per block
    dynamic_shared: int

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


def benchmark_calls(ops: Operators, dtype: torch.dtype) -> dict[str, Callable[[], Any]]:
    inputs = step_inputs(BATCH, CHANNELS, SIZE, dtype)
    return operator_calls(ops, inputs, reverse=True)


def cuda_launches_at_benchmark(emulated, dtype: torch.dtype) -> dict[str, tuple[list[Launch], list[dict]]]:
    """Per operator call: its kernel launches (the emulation's log, kernels not run) and its ATen ops.
    The same on every card: the host code sizes its grids from the shapes alone."""
    emulated.emulation_configure(True)
    found = {}
    for name, call in benchmark_calls(emulated_cuda_operators(emulated), dtype).items():
        _, aten = computing_aten_ops(call)
        launches = []
        for line in emulated.emulation_take_launches().splitlines():
            key, grid, threads, shared = parse_launch_line(line)
            launches.append(Launch(key, key.split("(")[0], grid, threads, shared))
        found[name] = (launches, aten)
    emulated.emulation_configure(False)
    return found



def serialisable(counted: list[dict[str, dict[str, Any]]]) -> list[dict[str, dict[str, dict[str, int]]]]:
    return [{k: {"kernels": dict(v["kernels"]), "aten": dict(v["aten"])} for k, v in c.items()} for c in counted]

