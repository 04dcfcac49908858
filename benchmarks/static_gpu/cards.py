"""The cards the report models: per-SM limits of each architecture, and the occupancy they give."""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Arch:
    """One architecture's per-SM limits (CUDA C Programming Guide, compute capability table) and the
    card the model times it on (its public specification: boost clock, HBM bandwidth, FP32 peak)."""
    sm: int
    card: str
    sms: int
    clock_ghz: float
    hbm_gbs: float
    fp32_tflops: float
    max_threads_sm: int
    max_blocks_sm: int
    shared_sm: int  # bytes of shared memory an SM can give its blocks
    shared_unit: int  # allocation granularity of shared memory per block
    shared_reserved: int  # shared memory the system reserves per block
    regs_sm: int = 65536
    reg_unit: int = 256  # registers are allocated per warp in units of this many
    issue_per_clock: int = 4  # warp instructions an SM issues per clock (4 schedulers)

    @property
    def max_warps_sm(self) -> int:
        return self.max_threads_sm // 32


ARCHS = {
    75: Arch(75, "T4", 40, 1.59, 320, 8.1, 1024, 16, 64 * 1024, 256, 0),
    80: Arch(80, "A100-SXM4-80GB", 108, 1.41, 2039, 19.5, 2048, 32, 164 * 1024, 128, 1024),
    90: Arch(90, "H200-SXM", 132, 1.98, 4800, 66.9, 2048, 32, 228 * 1024, 128, 1024),
}
TIMED_ARCHS = (90, 80)  # the cards the operators are timed on
TRITON_ARCHS = (80, 90)
LAUNCH_OVERHEAD_US = 2.0  # one kernel boundary on a busy stream (launch latency and tail), the CPU keeping ahead


@dataclasses.dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    fraction: float  # resident warps / the SM's maximum
    limiter: str


def occupancy(arch: Arch, registers: int, threads_per_block: int, shared_bytes: int) -> Occupancy:
    """Resident blocks per SM from registers, shared memory and threads, as the occupancy calculator."""
    warps = math.ceil(threads_per_block / 32)
    regs_per_warp = math.ceil(max(registers, 1) * 32 / arch.reg_unit) * arch.reg_unit
    shared_per_block = math.ceil((shared_bytes + arch.shared_reserved) / arch.shared_unit) * arch.shared_unit
    limits = {"registers": (arch.regs_sm // regs_per_warp) // warps,
              "threads": arch.max_warps_sm // warps,
              "shared": arch.shared_sm // shared_per_block if shared_per_block else arch.max_blocks_sm,
              "blocks": arch.max_blocks_sm}
    limiter = min(limits, key=lambda k: limits[k])
    blocks = limits[limiter]
    return Occupancy(blocks, blocks * warps / arch.max_warps_sm, limiter)

