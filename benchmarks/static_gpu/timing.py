"""The model: a modelled time per operator call from the compiled kernels and their launches, and the
operator's floor (minimum bytes over bandwidth, FLOPs over peak)."""
from __future__ import annotations

import dataclasses
import math

from .cards import ARCHS, LAUNCH_OVERHEAD_US, Arch, occupancy
from .compiled import Kernel
from .launches import BATCH, CHANNELS, SIZE, STRIDES, Launch


def kernel_time_us(arch: Arch, kernel: Kernel, launch: Launch) -> float:
    """Issue time: every SASS instruction of the kernel once per thread (loops counted once: an
    undercount where a loop runs more than once; every code path counted for every thread: an
    overcount where threads take one of several), over the SMs the grid occupies, each issuing
    min(4, resident warps) warp instructions per clock."""
    warps_per_block = math.ceil(launch.block / 32)
    occ = occupancy(arch, kernel.registers, launch.block, kernel.static_shared + launch.dynamic_shared)
    active_sms = min(arch.sms, launch.blocks)
    resident_warps = min(occ.blocks_per_sm, math.ceil(launch.blocks / active_sms)) * warps_per_block
    issued = kernel.sass.instructions * launch.blocks * warps_per_block
    rate = min(arch.issue_per_clock, resident_warps) * active_sms * arch.clock_ghz * 1e3  # warp instr. per us
    return issued / rate


def aten_time_us(arch: Arch, op: dict) -> float:
    """An ATen op: its inputs read and an output of the largest input's size written (4 bytes an element:
    the host code computes in float32), or a matmul's FLOPs, whichever is longer."""
    sizes = [math.prod(s) for s in op["shapes"] if s]
    bytes_moved = 4 * (sum(sizes) + max(sizes, default=0))
    flops = 0
    if op["op"] in ("mm", "bmm", "addmm", "baddbmm") and len(op["shapes"]) >= 2:
        a, b = op["shapes"][-2], op["shapes"][-1]
        flops = 2 * math.prod(a) * b[-1]
    return max(bytes_moved / (arch.hbm_gbs * 1e3), flops / (arch.fp32_tflops * 1e6))


def operator_floor(name: str, element_bytes: int) -> tuple[float, float]:
    """(minimum bytes, FLOPs) of one operator call at the benchmark shapes: every input read once, every
    output written once; FLOPs of the low-resolution formulation (design.md section 2): the 9-tap
    channel reduction at low resolution (2 FLOPs a multiply-add), 8 FLOPs a bilinear tap per scale and
    output pixel, 4 a sigmoid; gam_multiply one add per GAM pixel and scale and one multiply per product."""
    low = sum(BATCH * CHANNELS * (SIZE // s) ** 2 for s in STRIDES)  # feature elements
    full = BATCH * SIZE * SIZE
    taps = 9 * len(STRIDES)
    weight = CHANNELS * len(STRIDES) * 9
    if name == "mini_decoder forward":
        return element_bytes * (low + weight + 1 + 2 * full), 2 * 9 * low + full * (8 * taps + 4)
    if name == "mini_decoder backward":
        return element_bytes * (3 * full + low + weight + low + weight + 1), 2 * 2 * 9 * low + full * (8 * taps + 4)
    if name == "gam_multiply forward":
        return element_bytes * (low + full + low), full * len(STRIDES) + low
    if name == "gam_multiply backward":
        return element_bytes * (low + low + full + low + full), full * len(STRIDES) + 2 * low
    raise ValueError(name)


@dataclasses.dataclass
class OperatorTime:
    launches: int
    kernels_us: float
    aten_us: float
    modelled_us: float
    floor_us: float


def model_operator(arch: Arch, name: str, element_bytes: int, launches: list[tuple[Kernel, Launch]],
                   aten: list[dict]) -> OperatorTime:
    """max(floor, issue time of the kernels + time of the ATen ops) + one launch overhead per launch."""
    min_bytes, flops = operator_floor(name, element_bytes)
    floor = max(min_bytes / (arch.hbm_gbs * 1e3), flops / (arch.fp32_tflops * 1e6))
    kernels = sum(kernel_time_us(arch, k, l) for k, l in launches)
    aten_us = sum(aten_time_us(arch, op) for op in aten)
    n = len(launches) + len(aten)
    return OperatorTime(n, kernels, aten_us, max(floor, kernels + aten_us) + n * LAUNCH_OVERHEAD_US, floor)


def assumptions_text(archs: list[int]) -> list[str]:
    lines = ["Model (modelled time of one operator call at B=8, four 32-channel maps at strides 4/8/16/32 of 256x256):",
             "- kernel issue time = SASS instructions x threads launched / 32 (each instruction once a thread: loops "
             "counted once, an undercount for kernels whose 'in loops' column is large; every code path counted for "
             "every thread, an overcount for kernels whose threads skip or take one of several paths, such as the "
             "gam_multiply region kernels' passes over a scale with fewer pixels than threads) / (issue rate x SMs "
             "in use); "
             "issue rate per SM = min(4, resident warps) warp instructions a clock; resident warps from the occupancy",
             "- ATen ops of the host code: bytes (inputs + an output the size of the largest, 4 B an element) / HBM, "
             "or a matmul's 2MNK / FP32 peak, whichever is longer; each one launch",
             f"- every launch (kernel or ATen op) adds {LAUNCH_OVERHEAD_US} us (kernel boundary on a busy stream)",
             "- operator time = max(floor, kernels + ATen ops) + launches x overhead; memory traffic of the custom "
             "kernels is taken to be at the floor (bytes close to the minimum), so their issue time is what counts",
             "- floor = max(minimum bytes / HBM bandwidth, FLOPs / FP32 peak); minimum bytes: inputs read once, "
             "outputs written once; FLOPs: see operator_floor",
             "- Triton kernels: the autotune config with the least modelled time (what autotuning should pick)",
             "- launch counts per step: counted at two small sizes; counts depend on the number of scales and "
             "layers, not on sizes (the report checks that the two agree); cuBLAS matmuls counted as one launch",
             "Cards:"]
    for sm in archs:
        a = ARCHS[sm]
        lines.append(f"- sm_{sm} {a.card}: {a.sms} SMs at {a.clock_ghz} GHz, {a.hbm_gbs} GB/s, FP32 {a.fp32_tflops} "
                     f"TFLOP/s; per SM {a.max_threads_sm} threads, {a.max_blocks_sm} blocks, {a.regs_sm} registers "
                     f"(per warp in units of {a.reg_unit}), {a.shared_sm // 1024} KiB shared "
                     f"({a.shared_unit} B units, {a.shared_reserved} B reserved a block), {a.issue_per_clock} issue/clock")
    return lines

