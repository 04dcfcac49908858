"""A GPU report that needs no GPU: what the compilers make of the kernels, how many launches a training
step makes, and a modelled GPU time per operator against its floor.

    python benchmarks/gpu_static.py [--arch 90 ...] [--quick] [--out DIR]

1. Kernels. The CUDA kernels (kernels/*.cu, with setup.py's flags and include paths, as
   torch.utils.cpp_extension compiles them) are compiled with `-Xptxas -v` for sm_75, sm_80 and
   sm_90, the Triton kernels (every autotune config of every kernel the host code launches, with the
   argument specialisation of its launch) for sm_80 and sm_90. Per kernel and instantiation:
   registers, spills, shared memory (static + the dynamic amount the host asks for), the launch
   configuration at the benchmark shapes and the occupancy it gives (ARCHS: each card's limits),
   and from `cuobjdump -sass`: instructions, instructions inside loops, FP64 instructions, calls
   and 64-bit int<->float conversions. Kernels are found in the compiled output, not named here.
2. Launches per training step (2 blocks x 3 PAAD layers, each mini_decoder and gam_multiply forward
   and backward with four scales), per backend and dtype, counted: CUDA through the CPU emulation of
   the .cu sources (tests/cuda_emulation: its launch log), Triton through the host's launcher (replaced
   by a recorder: the kernels do not run, the host code does), plus the ATen ops of the host code that would run a device kernel (torch.profiler:
   leaf aten ops other than views, allocations and no-op casts; a matmul, sum or cat as one whatever
   its CPU implementation calls). Counts do not depend on sizes; the report counts at two small sizes
   and says whether they agree.
3. A modelled H200 and A100 time per operator at the benchmark shapes (B=8, four 32-channel maps at
   strides 4, 8, 16, 32 of 256x256) against its floor; the model's assumptions are printed with it.

Writes gpu_static.md and gpu_static.json to --out (default $OUT/gpu_static, else under the temporary
folder); the compiled kernels are cached there by source hash. --quick (sm_90, the Triton kernels in
float32 with their first autotune config) is what tests/test_gpu_static.py runs. The parts live in
benchmarks/static_gpu: cards (limits, occupancy), compiled (SASS), cuda_build, triton_build,
launches (operator calls and their launches), timing (the model).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)  # this process compiles Triton kernels for a GPU target

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import torch  # noqa: E402

from static_gpu.cards import ARCHS, LAUNCH_OVERHEAD_US, TIMED_ARCHS, TRITON_ARCHS, Arch, occupancy  # noqa: E402
from static_gpu.compiled import Kernel  # noqa: E402
from static_gpu.cuda_build import finish_cuda_compile, start_cuda_compile  # noqa: E402
from static_gpu.launches import (COUNT_SIZES, DTYPES, LAYERS_PER_STEP, Launch, count_cuda_steps,  # noqa: E402
                                 count_triton_steps, cuda_launches_at_benchmark, serialisable, step_totals,
                                 triton_launches_at_benchmark)
from static_gpu.timing import OperatorTime, assumptions_text, kernel_time_us, model_operator  # noqa: E402
from static_gpu.triton_build import compile_triton, triton_configs  # noqa: E402


OPERATORS = ("mini_decoder", "gam_multiply")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _launch_cell(arch: Arch, kernel: Kernel, launches: list[Launch]) -> list[Any]:
    if not launches:
        return ["-", "-", "-", "-"]
    grids = sorted({l.blocks for l in launches})
    dynamic = sorted({l.dynamic_shared for l in launches})
    occ = min((occupancy(arch, kernel.registers, l.block, kernel.static_shared + l.dynamic_shared) for l in launches),
              key=lambda o: o.fraction)
    return ["/".join(map(str, dynamic)), f"{'/'.join(map(str, grids))} x {launches[0].block}",
            f"{occ.fraction:.1%} ({occ.limiter})", len(launches)]


def kernel_rows(kernels: list[Kernel], launches_by_key: dict[tuple[int, str], list[Launch]]) -> list[list[Any]]:
    rows = []
    for k in kernels:
        arch = ARCHS[k.sm]
        rows.append([f"sm_{k.sm}", k.backend, f"{k.name} {k.instantiation}", k.registers, k.spill_bytes, k.static_shared,
                     *_launch_cell(arch, k, launches_by_key.get((k.sm, k.key), [])),
                     k.sass.instructions, k.sass.in_loops, k.sass.fp64, k.sass.calls, k.sass.conversions_64])
    return rows


KERNEL_HEADER = ["arch", "backend", "kernel", "regs", "spill B", "static smem B", "dyn smem B (bench)",
                 "blocks x threads (bench)", "occupancy", "launches/op (bench)", "SASS", "in loops", "FP64", "CALL",
                 "64-bit cvt"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", choices=sorted(ARCHS), default=sorted(ARCHS),
                        help="architectures to compile for (Triton: those of 80 and 90 among them)")
    parser.add_argument("--quick", action="store_true",
                        help="sm_90 only (unless --arch), float32 Triton kernels, the first autotune config")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or tempfile.gettempdir()) / "gpu_static",
                        help="folder for gpu_static.md, gpu_static.json and the compiled kernels")
    args = parser.parse_args(argv)
    archs = [90] if args.quick and args.arch == sorted(ARCHS) else sorted(args.arch)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = start_cuda_compile(archs, args.out)  # nvcc runs while the rest is counted

    from cuda_emulation.build import load_emulated_kernels
    emulated = load_emulated_kernels()
    step_counts = {}
    for dtype_name, dtype in DTYPES.items():
        step_counts[("cuda", dtype_name)] = count_cuda_steps(emulated, dtype)
        step_counts[("triton", dtype_name)] = count_triton_steps(dtype)

    # Launches at the benchmark shapes; Triton kernels compiled per launch and config.
    timed_dtypes = {"float32": torch.float32} if args.quick else DTYPES
    cuda_launches = {d: cuda_launches_at_benchmark(emulated, dt) for d, dt in timed_dtypes.items()}
    cuda_bench = {(sm, d): cuda_launches[d] for sm in archs for d in timed_dtypes}
    triton_archs = [sm for sm in archs if sm in TRITON_ARCHS]
    triton_kernels: dict[str, Kernel] = {}
    triton_bench: dict[tuple[int, str], dict[str, tuple[list[list[tuple[Kernel, Launch]]], list[dict]]]] = {}
    for d, dt in timed_dtypes.items():
        recorded = triton_launches_at_benchmark(dt)
        for sm in triton_archs:
            per_op = {}
            for op_name, (launches, aten) in recorded.items():
                options = []  # per launch: (kernel, launch) for each config
                for launch in launches:
                    compiled = []
                    for config in triton_configs(launch.kernel, args.quick):
                        kernel, made = compile_triton(launch, config, sm, args.out)
                        triton_kernels.setdefault(f"{sm}:{kernel.key}", kernel)
                        compiled.append((kernel, made))
                    options.append(compiled)
                per_op[op_name] = (options, aten)
            triton_bench[(sm, d)] = per_op

    cuda_kernels = finish_cuda_compile(jobs)
    by_key = {(k.sm, k.key): k for k in cuda_kernels}
    if len(by_key) != len(cuda_kernels):
        repeated = sorted(key for key, n in Counter((k.sm, k.key) for k in cuda_kernels).items() if n > 1)
        sys.exit(f"gpu_static: compiled kernels that the launches cannot tell apart: {repeated}")
    launches_by_key: dict[tuple[int, str], list[Launch]] = {}
    missing = set()
    for (sm, d), per_op in cuda_bench.items():
        for op_name, (launches, _) in per_op.items():
            for l in launches:
                if (sm, l.key) not in by_key:
                    missing.add(l.key)
                launches_by_key.setdefault((sm, l.key), []).append(l)
    if missing:
        sys.exit(f"gpu_static: launched kernels not found in the compiled code: {sorted(missing)}")
    for (sm, d), per_op in triton_bench.items():
        for options, _ in per_op.values():
            for compiled in options:
                for kernel, launch in compiled:
                    launches_by_key.setdefault((sm, kernel.key), []).append(launch)

    # Modelled times: per card, backend, dtype and operator call.
    times: dict[tuple[int, str, str, str], OperatorTime] = {}
    chosen_triton: dict[tuple[int, str, str], list[str]] = {}
    for (sm, d), per_op in cuda_bench.items():
        if sm in TIMED_ARCHS:
            for op_name, (launches, aten) in per_op.items():
                pairs = [(by_key[(sm, l.key)], l) for l in launches]
                times[(sm, "cuda", d, op_name)] = model_operator(ARCHS[sm], op_name, timed_dtypes[d].itemsize, pairs, aten)
    for (sm, d), per_op in triton_bench.items():
        arch = ARCHS[sm]
        for op_name, (options, aten) in per_op.items():
            best = [min(compiled, key=lambda kl: kernel_time_us(arch, *kl)) for compiled in options]
            chosen_triton[(sm, d, op_name)] = [f"{k.name} {k.instantiation}" for k, _ in best]
            times[(sm, "triton", d, op_name)] = model_operator(arch, op_name, timed_dtypes[d].itemsize, best, aten)

    md = render(args, archs, step_counts, cuda_kernels, list(triton_kernels.values()), launches_by_key, times)
    print("\n".join(md))
    (args.out / "gpu_static.md").write_text("\n".join(md) + "\n")
    raw = {"archs": archs, "quick": args.quick,
           "step_counts": {f"{b} {d}": serialisable(counted) for (b, d), counted in step_counts.items()},
           "count_sizes": COUNT_SIZES,
           "kernels": [dataclasses.asdict(k) for k in cuda_kernels + list(triton_kernels.values())],
           "launches_at_benchmark": {f"sm_{sm} {key}": [dataclasses.asdict(l) for l in ls]
                                     for (sm, key), ls in launches_by_key.items()},
           "times_us": {f"sm_{sm} {b} {d} {op}": dataclasses.asdict(t) for (sm, b, d, op), t in times.items()},
           "triton_chosen_configs": {f"sm_{sm} {d} {op}": v for (sm, d, op), v in chosen_triton.items()},
           "cards": {sm: dataclasses.asdict(ARCHS[sm]) for sm in archs}, "launch_overhead_us": LAUNCH_OVERHEAD_US}
    (args.out / "gpu_static.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print(f"\nwritten: {args.out / 'gpu_static.md'}, {args.out / 'gpu_static.json'}")
    return 0


def _pair_time(times, sm: int, backend: str, dtype: str, op: str) -> OperatorTime | None:
    forward = times.get((sm, backend, dtype, f"{op} forward"))
    backward = times.get((sm, backend, dtype, f"{op} backward"))
    if forward is None or backward is None:
        return None
    return OperatorTime(*(getattr(forward, f.name) + getattr(backward, f.name) for f in dataclasses.fields(OperatorTime)))


def summary_rows(archs, step_counts, cuda_kernels, triton_kernels, launches_by_key, times) -> list[list[Any]]:
    """The main table: one figure a row, named so that a rewrite of the kernels keeps the rows."""
    rows = []
    for (backend, dtype), counted in step_counts.items():
        totals = [step_totals(c) for c in counted]
        same = all(t == totals[0] for t in totals)
        t = totals[0]
        rows.append([f"launches per training step, {backend} {dtype} (kernels + ATen ops)",
                     f"{t['total']} ({t['kernels']} + {t['aten']})" + ("" if same else f" DIFFERS by size: {totals}")])
    for sm in [s for s in TIMED_ARCHS if s in archs]:
        card = ARCHS[sm].card
        for backend in ("cuda", "triton"):
            for op in OPERATORS:
                forward = times.get((sm, backend, "float32", f"{op} forward"))
                both = _pair_time(times, sm, backend, "float32", op)
                if forward is None or both is None:
                    continue
                rows.append([f"{card} {backend} {op} forward, us modelled / floor",
                             f"{forward.modelled_us:.1f} / {forward.floor_us:.1f}"])
                rows.append([f"{card} {backend} {op} forward+backward, us modelled / floor",
                             f"{both.modelled_us:.1f} / {both.floor_us:.1f}"])
            pairs = [_pair_time(times, sm, backend, "float32", op) for op in OPERATORS]
            if all(pairs):
                modelled = LAYERS_PER_STEP * sum(p.modelled_us for p in pairs)
                floor = LAYERS_PER_STEP * sum(p.floor_us for p in pairs)
                rows.append([f"{card} {backend} both operators in a resnet50 step (6 layers fwd+bwd), ms modelled / floor",
                             f"{modelled / 1e3:.3f} / {floor / 1e3:.3f}"])
    for sm in archs:
        floats = [k for k in cuda_kernels if k.sm == sm and k.float_kernel]
        if floats:
            rows.append([f"sm_{sm} CUDA float/half/bf16 kernels: FP64 / subroutine CALL / 64-bit cvt instructions",
                         f"{sum(k.sass.fp64 for k in floats)} / {sum(k.sass.calls for k in floats)} / "
                         f"{sum(k.sass.conversions_64 for k in floats)}"])
            rows.append([f"sm_{sm} CUDA float kernels: most registers, most spill bytes",
                         f"{max(k.registers for k in floats)}, {max(k.spill_bytes for k in floats)}"])
            launched = [(k, l) for k in floats for l in launches_by_key.get((sm, k.key), [])]
            if launched:
                worst = min(launched, key=lambda kl: occupancy(ARCHS[sm], kl[0].registers, kl[1].block,
                                                               kl[0].static_shared + kl[1].dynamic_shared).fraction)
                occ = occupancy(ARCHS[sm], worst[0].registers, worst[1].block,
                                worst[0].static_shared + worst[1].dynamic_shared)
                rows.append([f"sm_{sm} CUDA lowest occupancy at the benchmark launches",
                             f"{occ.fraction:.1%} ({worst[0].name}, {occ.limiter})"])
        tk = [k for k in triton_kernels if k.sm == sm and k.float_kernel]
        if tk:
            rows.append([f"sm_{sm} Triton kernels (all configs): most registers, most spill bytes",
                         f"{max(k.registers for k in tk)}, {max(k.spill_bytes for k in tk)}"])
            rows.append([f"sm_{sm} Triton kernels: FP64 / subroutine CALL / 64-bit cvt instructions (all configs)",
                         f"{sum(k.sass.fp64 for k in tk)} / {sum(k.sass.calls for k in tk)} / "
                         f"{sum(k.sass.conversions_64 for k in tk)}"])
    return rows


def render(args, archs, step_counts, cuda_kernels, triton_kernels, launches_by_key, times) -> list[str]:
    import triton
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    md = ["# Predicted GPU figures (no GPU: from the compiled code)", "",
          f"Toolchain: {nvcc}; triton {triton.__version__}; torch {torch.__version__}. "
          f"Architectures: {', '.join(f'sm_{a}' for a in archs)}{' (--quick)' if args.quick else ''}.", "",
          "## Summary", ""]
    md += _table(["figure", "value"], summary_rows(archs, step_counts, cuda_kernels, triton_kernels, launches_by_key, times))
    md += ["", "## Launches per training step (6 PAAD layers, forward + backward), by operator call", "",
           f"Counted at (batch, channels, size) = {' and '.join(map(str, COUNT_SIZES))}; shown: the first, "
           "and whether the second agrees.", ""]
    rows = []
    for (backend, dtype), counted in step_counts.items():
        for op_name, entry in counted[0].items():
            same = all(c[op_name] == entry for c in counted[1:])
            rows.append([backend, dtype, op_name, sum(entry["kernels"].values()),
                         ", ".join(f"{n} x{c}" for n, c in sorted(entry["kernels"].items())),
                         sum(entry["aten"].values()), ", ".join(f"{n} x{c}" for n, c in sorted(entry["aten"].items())),
                         "yes" if same else "NO"])
    md += _table(["backend", "dtype", "operator call", "kernels", "which", "ATen ops", "which", "same at both sizes"], rows)
    md += ["", "## Modelled time per operator call (benchmark shapes), us", ""]
    rows = [[f"sm_{sm} {ARCHS[sm].card}", backend, dtype, op, t.launches, f"{t.kernels_us:.1f}", f"{t.aten_us:.1f}",
             f"{t.modelled_us:.1f}", f"{t.floor_us:.2f}", f"{t.modelled_us / t.floor_us:.1f}"]
            for (sm, backend, dtype, op), t in sorted(times.items())]
    md += _table(["card", "backend", "dtype", "operator call", "launches", "kernel issue", "ATen ops", "modelled",
                  "floor", "x floor"], rows)
    md += ["", "## Kernels", "",
           "Spill B: spill stores (CUDA, ptxas) or stack frame and local memory a thread (Triton, "
           "cuobjdump). Triton kernels: the argument types, the config and the compile's hash (one row "
           "per specialisation the host's launches make); their shared memory is all dynamic. Occupancy and launch "
           "configuration: as the host launches the kernel for one operator call at the benchmark shapes "
           "(the lowest occupancy if several); '-': not launched at those shapes in float32 or bf16. "
           "FP64: DADD/DMUL/DFMA/DSETP/DMNMX, MUFU.*64H, FRND.F64, conversions from or to F64. "
           "64-bit cvt: I2F/F2I/F2F/I2I with an S64, U64 or F64 type. In loops: instructions inside a "
           "backward branch's range.", ""]
    md += _table(KERNEL_HEADER, kernel_rows(cuda_kernels + triton_kernels, launches_by_key))
    md += ["", "## Assumptions", ""] + assumptions_text([a for a in archs])
    return md


if __name__ == "__main__":
    sys.exit(main())
