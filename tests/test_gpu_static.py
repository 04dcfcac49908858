"""benchmarks/gpu_static.py, the GPU report that needs no GPU: its arithmetic on hand-checked cases, and
a --quick run on this machine whose every counted figure must be plausible.

The run compiles the CUDA kernels for sm_90 (nvcc) and the Triton kernels (first autotune config),
and builds the CUDA emulation (cached under TMPDIR with tests/test_cuda_emulated.py's); it needs nvcc.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from static_gpu import cards, compiled, launches, timing  # noqa: E402


def test_occupancy_of_hand_checked_cases():
    # 80 registers x 32 threads, in units of 256 a warp: 2560 a warp, 25 warps of 65536, 3 blocks of 8 warps.
    occ = cards.occupancy(cards.ARCHS[90], registers=80, threads_per_block=256, shared_bytes=0)
    assert (occ.blocks_per_sm, occ.fraction, occ.limiter) == (3, 24 / 64, "registers")
    # 48 KiB + 1 KiB reserved a block: 3 blocks in 164 KiB; 4 warps each of 64.
    occ = cards.occupancy(cards.ARCHS[80], registers=32, threads_per_block=128, shared_bytes=48 * 1024)
    assert (occ.blocks_per_sm, occ.fraction, occ.limiter) == (3, 12 / 64, "shared")
    # A T4 SM holds 32 warps: 1024-thread blocks, one a SM.
    occ = cards.occupancy(cards.ARCHS[75], registers=16, threads_per_block=1024, shared_bytes=0)
    assert (occ.blocks_per_sm, occ.fraction, occ.limiter) == (1, 1.0, "threads")


def test_sass_counts_of_a_hand_written_function():
    lines = [(0x00, "DADD", " R2, R2, R4 "), (0x10, "I2F.F64.S64", " R4, R6 "), (0x20, "CALL.REL.NOINC", " 0x80 "),
             (0x30, "FFMA", " R1, R2, R3, R4 "), (0x40, "BRA", " 0x10 "), (0x50, "F2I.U32.TRUNC", " R1, R2 "),
             (0x60, "EXIT", " "), (0x70, "BRA", " 0x70 "), (0x80, "NOP", " ")]
    counts = compiled.count_sass(lines)
    # NOP and the closing self-branch are padding; the loop 0x10..0x40 holds 4 instructions.
    assert counts == compiled.SassCounts(instructions=7, in_loops=4, fp64=2, calls=1, conversions_64=1)
    # sm_80's loop exit: a predicated CALL.REL.NOINC to the instruction after next is a branch.
    lines = [(0x14f0, "CALL.REL.NOINC", " 0x1510 "), (0x1500, "BRA", " 0x1600 "), (0x1510, "EXIT", " "),
             (0x1520, "CALL.REL.NOINC", " 0x1600 "), (0x1600, "RET.REL.NODEC", " R2 0x0 ")]
    counts = compiled.count_sass(lines)
    assert (counts.calls, counts.call_branches, counts.instructions) == (1, 1, 5)


def test_launches_and_compiled_kernels_have_the_same_keys():
    demangled = ("void paanet::cuda::(anonymous namespace)::weight_grad_kernel<float, float>(paanet::cuda::ScaleBatch<"
                 "paanet::cuda::(anonymous namespace)::ScaleMap<float const> >, long, float const*, "
                 "paanet::cuda::(anonymous namespace)::WeightView<float>, float const*, long, float*)")
    base, template, params = compiled.split_signature(demangled)
    assert (base, template) == ("weight_grad_kernel", "<float, float>")
    gcc = ("void emulation::Launch::run(Args ...) const [with auto kKernel = paanet::cuda::{anonymous}::"
           "weight_grad_kernel<float, float>; Kernel = void (*)(paanet::cuda::ScaleBatch<paanet::cuda::{anonymous}::"
           "ScaleMap<const float> >, long int, const float*, paanet::cuda::{anonymous}::WeightView<float>, "
           "const float*, long int, float*); Args = {int}]|4,2,1|256,1,1|0")
    key, grid, threads, shared = launches.parse_launch_line(gcc)
    assert key == compiled.kernel_key(base, template, params)
    assert (grid, threads, shared) == ((4, 2, 1), 256, 0)
    # A dependent accumulation type: the demangler keeps paanet::opmath_t's spelling, gcc resolves it.
    demangled = ("void paanet::cuda::(anonymous namespace)::gam_scale_kernel<false, c10::BFloat16>(paanet::cuda::"
                 "ScaleBatch<paanet::cuda::(anonymous namespace)::Scale<c10::BFloat16, paanet::OpMath<c10::BFloat16>"
                 "::type> >, paanet::cuda::MapView<c10::BFloat16>, bool)")
    base, template, params = compiled.split_signature(demangled)
    forward = ("void emulation::Launch::run(Args ...) const [with auto kKernel = paanet::cuda::{anonymous}::"
               "gam_scale_kernel<false, c10::BFloat16>; Kernel = void (*)(paanet::cuda::ScaleBatch<paanet::cuda::"
               "{anonymous}::Scale<c10::BFloat16, float> >, paanet::cuda::MapView<c10::BFloat16>, bool); "
               "Args = {unsigned int}]|960,1,1|256,1,1|0")
    assert launches.parse_launch_line(forward)[0] == compiled.kernel_key(base, template, params)
    # The backward instantiation has the same function type: only its template argument tells it apart.
    backward = forward.replace("gam_scale_kernel<false,", "gam_scale_kernel<true,")
    assert launches.parse_launch_line(backward)[0] != compiled.kernel_key(base, template, params)
    assert launches.parse_launch_line(backward)[0] == compiled.kernel_key(base, "<true, c10::BFloat16>", params)


def test_floor_of_gam_multiply_forward():
    # B=8, 32 channels at 64^2 + 32^2 + 16^2 + 8^2, read and written, and the 256x256 GAM read: 4 bytes each.
    low = 8 * 32 * (64 * 64 + 32 * 32 + 16 * 16 + 8 * 8)
    assert timing.operator_floor("gam_multiply forward", 4) == (4 * (2 * low + 8 * 256 * 256),
                                                                   8 * 256 * 256 * 4 + low)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed: the report compiles the CUDA kernels")
def test_quick_report(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_static.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    raw = json.loads((tmp_path / "gpu_static.json").read_text())
    table = (tmp_path / "gpu_static.md").read_text()

    for heading in ("## Summary", "## Launches per training step", "## Modelled time", "## Kernels", "## Assumptions"):
        assert heading in table
    tables = [block.splitlines() for block in table.split("\n\n") if block.startswith("|")]
    assert len(tables) == 4
    for rows in tables:  # a header, its rule, and rows with the header's columns
        assert len(rows) > 2 and set(rows[1]) == set("|-"), rows[:2]
        assert all(row.count("|") == rows[0].count("|") for row in rows), rows[0]

    kernels = raw["kernels"]
    assert {k["backend"] for k in kernels} == {"cuda", "triton"}
    for k in kernels:
        assert k["sm"] == 90 and k["registers"] > 0 and k["sass"]["instructions"] > 0, k
        assert 0 <= k["sass"]["in_loops"] <= k["sass"]["instructions"]

    assert set(raw["step_counts"]) == {"cuda float32", "cuda bf16 autocast", "triton float32", "triton bf16 autocast"}
    for name, (first, second) in raw["step_counts"].items():
        assert first == second, f"{name}: the launch counts differ between the two sizes"
        assert set(first) == {"mini_decoder forward", "mini_decoder backward", "gam_multiply forward",
                              "gam_multiply backward"}
        for call, entry in first.items():
            kernels_launched = sum(entry["kernels"].values())
            # Every operator call launches a kernel of its own in each of the 6 layers.
            assert kernels_launched >= 6 and kernels_launched % 6 == 0, (name, call, entry)

    assert raw["times_us"], "no operator was timed"
    for name, t in raw["times_us"].items():
        assert t["floor_us"] > 0 and t["modelled_us"] >= t["floor_us"] and t["launches"] > 0, (name, t)
