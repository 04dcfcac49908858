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
   the .cu sources (tests/cuda_emulation: its launch log), Triton under TRITON_INTERPRET=1 (the host's
   launcher hooked), plus the ATen ops of the host code that would run a device kernel (torch.profiler:
   leaf aten ops other than views and allocations). Counts do not depend on sizes; the report counts at
   two small sizes and says whether they agree.
3. A modelled H200 and A100 time per operator at the benchmark shapes (B=8, four 32-channel maps at
   strides 4, 8, 16, 32 of 256x256) against its floor; the model's assumptions are printed with it.

Writes gpu_static.md and gpu_static.json to --out (default $OUT, else the temporary folder); the
compiled kernels are cached there by source hash. --quick (sm_90, float32, the first autotune config,
one Triton kernel instantiation per kernel) is what tests/test_gpu_static.py runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

INTERPRETER_CHILD = "--count-triton-in-interpreter"
if INTERPRETER_CHILD not in sys.argv:  # this process compiles Triton kernels; its counting child interprets them
    os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

BATCH, CHANNELS, SIZE, STRIDES = 8, 32, 256, (4, 8, 16, 32)  # the benchmark shapes (benchmarks/bench_ops.py)
LAYERS_PER_STEP = 6  # PAAD layers of a PAANet: 2 blocks x 3 (paanet_fast.model)
# (batch, channels, output size) of the two launch counts; no size-1 dimension, where a reshape would
# be a view that is a copy elsewhere.
COUNT_SIZES = ((2, 3, 64), (3, 4, 96))
DTYPES = {"float32": torch.float32, "bf16 autocast": torch.bfloat16}


# --- the cards --------------------------------------------------------------------------------------

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


# --- SASS ---------------------------------------------------------------------------------------------

FP64_OPCODES = {"DADD", "DMUL", "DFMA", "DSETP", "DSET", "DMNMX", "DMMA"}
CONVERSIONS = {"I2F", "F2I", "F2F", "I2I", "I2FP", "F2IP"}
SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


@dataclasses.dataclass
class SassCounts:
    instructions: int = 0  # without NOPs and the final self-branch
    in_loops: int = 0  # inside a backward branch's range
    fp64: int = 0  # FP64 arithmetic, FP64 MUFU, FRND.F64 and conversions from or to F64
    calls: int = 0  # CALL (subroutines: 64-bit division, the slow path of an IEEE divide, ...)
    conversions_64: int = 0  # I2F/F2I/F2F/I2I with an S64, U64 or F64 operand type


def count_sass(lines: list[tuple[int, str, str]]) -> SassCounts:
    """Counts for one function's (address, opcode, operands) lines."""
    counts = SassCounts()
    loops = []
    kept = []
    for address, opcode, operands in lines:
        base, *modifiers = opcode.split(".")
        target = re.match(r"\s*(0x[0-9a-f]+)", operands)
        if base == "NOP" or (base == "BRA" and target and int(target.group(1), 16) == address):
            continue
        kept.append(address)
        counts.instructions += 1
        if base == "BRA" and target and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
        wide = any(m in ("S64", "U64", "F64") for m in modifiers)
        counts.fp64 += (base in FP64_OPCODES or (base == "MUFU" and "64H" in opcode)
                        or (base in ("FRND", "F2F", "I2F", "F2I") and "F64" in modifiers))
        counts.calls += base == "CALL"
        counts.conversions_64 += base in CONVERSIONS and wide
    counts.in_loops = sum(any(lo <= a <= hi for lo, hi in loops) for a in kept)
    return counts


def cuobjdump() -> str:
    """Triton's cuobjdump (always there with triton), else the CUDA toolkit's."""
    import triton
    bundled = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    found = str(bundled) if bundled.exists() else shutil.which("cuobjdump")
    if found is None:
        sys.exit("gpu_static: no cuobjdump (neither triton's nor the CUDA toolkit's)")
    return found


def sass_of(binary: Path) -> dict[tuple[int, str], SassCounts]:
    """(sm, mangled name) -> counts for every function of a cubin or fatbin."""
    text = subprocess.run([cuobjdump(), "-sass", str(binary)], capture_output=True, text=True, check=True).stdout
    functions: dict[tuple[int, str], list] = {}
    sm, current = 0, None
    for line in text.splitlines():
        if (m := re.search(r"code for sm_(\d+)", line)):
            sm = int(m.group(1))
        elif (m := re.search(r"Function : (\S+)", line)):
            current = functions.setdefault((sm, m.group(1)), [])
        elif current is not None and (m := SASS_LINE.search(line)):
            current.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return {key: count_sass(lines) for key, lines in functions.items()}


def resource_usage(binary: Path) -> dict[tuple[int, str], dict[str, int]]:
    """(sm, mangled name) -> REG, SHARED, LOCAL, STACK of every function (cuobjdump -res-usage)."""
    text = subprocess.run([cuobjdump(), "-res-usage", str(binary)], capture_output=True, text=True, check=True).stdout
    usage, sm, name = {}, 0, None
    for line in text.splitlines():
        if (m := re.search(r"arch = sm_(\d+)", line)) or (m := re.search(r"code for sm_(\d+)", line)):
            sm = int(m.group(1))
        elif (m := re.match(r"\s*Function (\S+):", line)):
            name = m.group(1)
        elif name and "REG:" in line:
            usage[(sm, name)] = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}
            name = None
    return usage


def demangle(names: list[str]) -> dict[str, str]:
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def kernel_key(base_name: str, parameters: str) -> str:
    """A spelling of a kernel's name and parameter types that the demangler and gcc agree on."""
    text = re.sub(r"\(anonymous namespace\)::|\{anonymous\}::|\b[A-Za-z_]\w*::", "", parameters)
    text = text.replace("long int", "long").replace("long unsigned int", "unsigned long").replace("unsigned int", "unsigned")
    text = re.sub(r"\bconst\b|__grid_constant__|\s", "", text)
    return f"{base_name}({text})"


def split_signature(demangled: str) -> tuple[str, str, str]:
    """(base name, template arguments, parameters) of `void ns::name<T...>(params)`."""
    depth, open_paren = 0, len(demangled) - 1
    for open_paren in range(len(demangled) - 1, -1, -1):  # the parenthesis that opens the parameter list
        depth += {")": 1, "(": -1}.get(demangled[open_paren], 0)
        if depth == 0:
            break
    head, params = demangled[:open_paren].removeprefix("void "), demangled[open_paren + 1:-1]
    template = head[head.index("<"):] if "<" in head else ""
    base = re.sub(r"\(anonymous namespace\)::|\b[A-Za-z_]\w*::", "", head[:len(head) - len(template)])
    return base, template, params


# --- CUDA: compile ------------------------------------------------------------------------------------

def _cache_dir(out: Path) -> Path:
    folder = out / "compiled"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def nvcc_command(source: Path, archs: list[int], output: Path) -> list[str]:
    """nvcc as torch.utils.cpp_extension runs it for setup.py's CUDAExtension, device code only (a fatbin)."""
    from torch.utils import cpp_extension
    site = Path(torch.__file__).resolve().parent.parent
    includes = ([str(ROOT / "csrc")] + [str(p) for p in sorted(site.glob("nvidia/*/include")) if p.is_dir()]
                + cpp_extension.include_paths(device_type="cuda") + [sysconfig.get_paths()["include"]])
    defines = ["PAANET_FAST_WITH_CUDA=1", "TORCH_API_INCLUDE_EXTENSION_H", "TORCH_EXTENSION_NAME=_C",
               f"_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    return (["nvcc", "--fatbin", str(source), "-o", str(output)] + [f"-I{i}" for i in includes]
            + [f"-D{d}" for d in defines] + cpp_extension.COMMON_NVCC_FLAGS + ["--compiler-options", "-fPIC"]
            + ["-O3", "-lineinfo"]  # setup.py's extra_compile_args["nvcc"]
            + [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs] + ["-std=c++20", "-Xptxas", "-v"])


def _sources_hash(archs: list[int]) -> str:
    digest = hashlib.sha256(repr(archs).encode())
    for path in sorted([*ROOT.glob("kernels/*"), *ROOT.glob("csrc/*.h")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def start_cuda_compile(archs: list[int], out: Path) -> list[tuple[Path, Path, subprocess.Popen | None]]:
    """Starts nvcc for every kernels/*.cu (in the background); (fatbin, ptxas log, process or None if cached)."""
    folder = _cache_dir(out) / f"cuda-{_sources_hash(archs)}"
    folder.mkdir(exist_ok=True)
    jobs = []
    for source in sorted((ROOT / "kernels").glob("*.cu")):
        fatbin, log = folder / f"{source.stem}.fatbin", folder / f"{source.stem}.ptxas.txt"
        if fatbin.exists() and log.exists():
            jobs.append((fatbin, log, None))
            continue
        with open(log, "w") as sink:
            process = subprocess.Popen(nvcc_command(source, archs, fatbin), stdout=sink, stderr=subprocess.STDOUT)
        jobs.append((fatbin, log, process))
    return jobs


def parse_ptxas(log: str) -> dict[tuple[int, str], dict[str, int]]:
    """(sm, mangled name) -> registers, spill stores and loads (bytes), static shared memory, from -Xptxas -v."""
    found: dict[tuple[int, str], dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        if (m := re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", line)):
            current = found.setdefault((int(m.group(2)), m.group(1)), {"smem": 0})
        elif current is not None and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            current.update(spill_stores=int(m.group(1)), spill_loads=int(m.group(2)))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m.group(1))
            if (s := re.search(r"(\d+) bytes smem", line)):
                current["smem"] = int(s.group(1))
    return found


@dataclasses.dataclass
class Kernel:
    """One compiled kernel instantiation for one architecture."""
    backend: str
    sm: int
    name: str  # base name, then the instantiation (template arguments, or Triton's constexprs)
    instantiation: str
    key: str  # matches the launches (CUDA: kernel_key; Triton: the compile's identity)
    registers: int
    spill_bytes: int
    static_shared: int
    sass: SassCounts
    float_kernel: bool  # computes in float32 or lower (no double instantiation)


def finish_cuda_compile(jobs) -> list[Kernel]:
    kernels = []
    for fatbin, log, process in jobs:
        if process is not None and process.wait() != 0:
            fatbin.unlink(missing_ok=True)
            sys.exit(f"gpu_static: nvcc failed, see {log}:\n" + log.read_text()[-3000:])
        ptxas = parse_ptxas(log.read_text())
        sass = sass_of(fatbin)
        names = demangle(sorted({name for _, name in ptxas}))
        for (sm, mangled), info in sorted(ptxas.items()):
            base, template, params = split_signature(names[mangled])
            shown = re.sub(r"\(anonymous namespace\)::|\b[A-Za-z_]\w*::|\s", "", template)
            kernels.append(Kernel("cuda", sm, base, shown, kernel_key(base, params), info["registers"],
                                  info.get("spill_stores", 0), info["smem"], sass[(sm, mangled)],
                                  "double" not in template))
    return kernels


# --- the operators and a training step -----------------------------------------------------------------

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
    # The weight and bias are float32 parameters: under autocast the front end casts them (counted).
    return dict(features=features, weight=torch.randn(1, channels * len(STRIDES), 3, 3, generator=gen),
                bias=torch.randn(1, generator=gen), size=[size, size],
                grad_logits=randn(batch, 1, size, size), grad_products=[torch.randn_like(f) for f in features])


def operator_calls(ops: Operators, inputs: dict[str, Any], reverse: bool) -> dict[str, Callable[[], Any]]:
    """The four calls of one PAAD layer, in order; each returns what the next needs."""
    state: dict[str, Any] = {}
    dtype = inputs["features"][0].dtype

    def forward_mini_decoder():
        weight, bias = inputs["weight"].to(dtype), inputs["bias"].to(dtype)  # autocast's casts (no-ops in float32)
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


def computing_aten_ops(fn: Callable[[], Any], excluded_scope: str | None = None) -> tuple[Counter, list[dict]]:
    """Runs fn under torch.profiler; the aten ops that would run a device kernel, by name, and each with its
    input shapes: the leaf ops other than views, allocations and no-op casts (FREE_ATEN), and the ops of
    OPAQUE_ATEN as one each. Ops inside a record_function named `excluded_scope` (the Triton
    interpreter's own work) are left out."""
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
        if (excluded_scope in ancestors or any(a.removeprefix("aten::") in OPAQUE_ATEN for a in ancestors)
                or not (leaf or short in OPAQUE_ATEN)):
            continue
        names[short] += 1
        ops.append({"op": short, "shapes": [list(s) for s in event.input_shapes if isinstance(s, list)]})
    return names, ops


def emulated_cuda_operators(emulated) -> Operators:
    return Operators(emulated.mini_decoder, emulated.mini_decoder_backward, emulated.gam_multiply,
                     emulated.gam_multiply_backward)


def count_step(ops: Operators, take_launches: Callable[[], list[str]], batch: int, channels: int, size: int,
               dtype: torch.dtype, excluded_scope: str | None = None) -> dict[str, dict[str, Any]]:
    """Launches and computing ATen ops of one training step, per operator call kind (summed over layers)."""
    counts: dict[str, dict[str, Any]] = {}
    take_launches()
    for layer in range(LAYERS_PER_STEP):
        inputs = step_inputs(batch, channels, size, dtype)
        for name, call in operator_calls(ops, inputs, reverse=layer % 2 == 1).items():
            aten, _ = computing_aten_ops(call, excluded_scope)
            launched = take_launches()
            entry = counts.setdefault(name, {"kernels": Counter(), "aten": Counter()})
            entry["kernels"].update(launched)
            entry["aten"].update(aten)
    return counts


def _parse_launch_line(line: str) -> tuple[str, tuple[int, int, int], int, int]:
    """(kernel key, grid, threads per block, dynamic shared bytes) of a line of the emulation's launch log."""
    label, pretty, grid, block, shared = line.split("|")
    params = re.search(r"Kernel = void \(\*\)\((.*?)\)(?:; Args|\])", pretty)
    key = kernel_key(label.split("<")[0], params.group(1) if params else "")
    return key, tuple(int(x) for x in grid.split(",")), math.prod(int(x) for x in block.split(",")), int(shared)


def cuda_launch_names(emulated) -> list[str]:
    """The kernels launched since the last call: name and first parameter type (a template's instantiation)."""
    names = []
    for line in emulated.emulation_take_launches().splitlines():
        key = _parse_launch_line(line)[0]
        depth, end = 0, len(key) - 1
        for end, char in enumerate(key):  # the end of the first parameter
            depth += {"<": 1, ">": -1}.get(char, 0)
            if char == "," and depth == 0:
                break
        names.append(key[:end] + ")")
    return names


def count_cuda_steps(emulated, dtype: torch.dtype) -> list[dict[str, dict[str, Any]]]:
    emulated.emulation_configure(2, False)  # real runs: the emulated kernels compute
    return [count_step(emulated_cuda_operators(emulated), lambda: cuda_launch_names(emulated), b, c, s, dtype)
            for b, c, s in COUNT_SIZES]


TRITON_SCOPE = "gpu_static: triton kernel"


def count_triton_steps_here(dtype: torch.dtype) -> list[dict[str, dict[str, Any]]]:
    """In a process with TRITON_INTERPRET=1: the Triton host code's launches, each kernel interpreted."""
    from paanet_fast.triton import host
    launched: list[str] = []
    original = host.launch

    def counting_launch(kernel, grid, *args, **constexprs):
        launched.append(getattr(kernel, "__name__", None) or kernel.fn.__name__)
        with torch.profiler.record_function(TRITON_SCOPE):
            original(kernel, grid, *args, **constexprs)

    def take() -> list[str]:
        names = list(launched)
        launched.clear()
        return names

    host.launch = counting_launch
    ops = Operators(host.mini_decoder_forward, host.mini_decoder_backward, host.gam_multiply_forward,
                    host.gam_multiply_backward)
    return [count_step(ops, take, b, c, s, dtype, TRITON_SCOPE) for b, c, s in COUNT_SIZES]


def count_triton_steps(dtype_name: str) -> list[dict[str, dict[str, Any]]]:
    """count_triton_steps_here in a child process (the interpreter is chosen when triton kernels are defined)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, INTERPRETER_CHILD, dtype_name], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"gpu_static: counting the Triton launches failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def step_totals(per_call: dict[str, dict[str, Any]]) -> dict[str, int]:
    kernels = sum(sum(e["kernels"].values()) for e in per_call.values())
    aten = sum(sum(e["aten"].values()) for e in per_call.values())
    return {"kernels": kernels, "aten": aten, "total": kernels + aten}


# --- launches at the benchmark shapes ----------------------------------------------------------------------

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


def cuda_launches_at_benchmark(emulated, arch: Arch, dtype: torch.dtype) -> dict[str, tuple[list[Launch], list[dict]]]:
    """Per operator call: its kernel launches (the emulation's log, kernels not run) and its ATen ops."""
    emulated.emulation_configure(arch.sms, True)
    found = {}
    for name, call in benchmark_calls(emulated_cuda_operators(emulated), dtype).items():
        _, aten = computing_aten_ops(call)
        launches = []
        for line in emulated.emulation_take_launches().splitlines():
            key, grid, threads, shared = _parse_launch_line(line)
            launches.append(Launch(key, key.split("(")[0], grid, threads, shared))
        found[name] = (launches, aten)
    emulated.emulation_configure(2, False)
    return found


# --- Triton: record the launches at the benchmark shapes, compile each for each config --------------------

@dataclasses.dataclass
class TritonLaunch:
    kernel: Any  # the autotuner (or JIT function)
    grid: Callable
    args: tuple
    constexprs: dict


def triton_launches_at_benchmark(dtype: torch.dtype) -> dict[str, tuple[list[TritonLaunch], list[dict]]]:
    """Per operator call: the launches the Triton host code makes (recorded, not run) and its ATen ops."""
    from paanet_fast.triton import host
    recorded: list[TritonLaunch] = []
    original = host.launch
    host.launch = lambda kernel, grid, *args, **constexprs: recorded.append(TritonLaunch(kernel, grid, args, constexprs))
    try:
        ops = Operators(host.mini_decoder_forward, host.mini_decoder_backward, host.gam_multiply_forward,
                        host.gam_multiply_backward)
        found = {}
        for name, call in benchmark_calls(ops, dtype).items():
            _, aten = computing_aten_ops(call)
            found[name] = (list(recorded), aten)
            recorded.clear()
        return found
    finally:
        host.launch = original


def compile_triton(launch: TritonLaunch, config, sm: int, out: Path) -> tuple[Kernel, Launch]:
    """The kernel as this launch specialises it (argument types, divisibility, constants) under `config`,
    compiled for sm_<sm>; and the launch it makes at the benchmark shapes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    fn = launch.kernel.fn if hasattr(launch.kernel, "configs") else launch.kernel
    target = GPUTarget("cuda", sm, 32)
    backend = make_backend(target)
    kwargs = {**launch.constexprs, **config.all_kwargs()}
    bound, specialization, options = create_function_from_signature(fn.signature, fn.params, backend)(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    cubin = _cache_dir(out) / f"triton-{compiled.metadata.hash}-sm{sm}.cubin"
    if not cubin.exists():
        cubin.write_bytes(compiled.asm["cubin"])
    usage, sass = _cubin_facts(cubin)
    shown = {k: v for k, v in config.kwargs.items()} | {"warps": config.num_warps}
    shown |= {k: v for k, v in launch.constexprs.items() if k not in ("NUM_SCALES",)}
    instantiation = f"{signature.get(next(n for n in fn.arg_names if n.endswith('_ptr')))} " + \
        " ".join(f"{k}={v}" for k, v in shown.items())
    key = f"{fn.__name__}:{compiled.metadata.hash}"
    # Triton's shared memory is all dynamic (metadata.shared, what its launcher asks for; the cubin reports
    # the same allocation), so none is counted as static.
    kernel = Kernel("triton", sm, fn.__name__, f"{instantiation} #{compiled.metadata.hash[:6]}", key, usage["REG"],
                    usage["LOCAL"], 0, sass, "fp64" not in json.dumps(signature))
    grid = launch.grid({**bound, **kwargs}) if callable(launch.grid) else launch.grid
    grid = tuple(grid) + (1,) * (3 - len(grid))
    return kernel, Launch(key, fn.__name__, grid, config.num_warps * 32, compiled.metadata.shared)


@functools.lru_cache(maxsize=None)
def _cubin_facts(cubin: Path) -> tuple[dict[str, int], SassCounts]:
    """Resource usage and SASS counts of a one-kernel cubin (a launch repeated with another shape reuses them)."""
    return next(iter(resource_usage(cubin).values())), next(iter(sass_of(cubin).values()))


def triton_configs(kernel: Any, quick: bool) -> list:
    import triton
    configs = list(getattr(kernel, "configs", [triton.Config({})]))
    return configs[:1] if quick else configs


# --- the model ---------------------------------------------------------------------------------------------

def kernel_time_us(arch: Arch, kernel: Kernel, launch: Launch) -> float:
    """Issue time: every SASS instruction of the kernel once per thread (loops counted once: a lower
    bound where a loop runs more than once), over the SMs the grid occupies, each issuing
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
             "counted once, so a lower bound for kernels whose 'in loops' column is large) / (issue rate x SMs in use); "
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


# --- the report --------------------------------------------------------------------------------------------

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
    parser.add_argument(INTERPRETER_CHILD, metavar="DTYPE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count_triton_in_interpreter:  # the child process of count_triton_steps
        counted = count_triton_steps_here(DTYPES[args.count_triton_in_interpreter])
        print(json.dumps([{k: {"kernels": dict(v["kernels"]), "aten": dict(v["aten"])} for k, v in c.items()}
                          for c in counted]))
        return 0
    archs = [90] if args.quick and args.arch == sorted(ARCHS) else sorted(args.arch)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = start_cuda_compile(archs, args.out)  # nvcc runs while the rest is counted

    from cuda_emulation.build import load_emulated_kernels
    emulated = load_emulated_kernels()
    step_counts = {}
    for dtype_name, dtype in DTYPES.items():
        step_counts[("cuda", dtype_name)] = count_cuda_steps(emulated, dtype)
        step_counts[("triton", dtype_name)] = count_triton_steps(dtype_name)

    # Launches at the benchmark shapes; Triton kernels compiled per launch and config.
    timed_dtypes = {"float32": torch.float32} if args.quick else DTYPES
    cuda_bench = {(sm, d): cuda_launches_at_benchmark(emulated, ARCHS[sm], dt) for sm in archs for d, dt in timed_dtypes.items()}
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
           "step_counts": {f"{b} {d}": [{k: {"kernels": dict(v["kernels"]), "aten": dict(v["aten"])} for k, v in c.items()}
                                        for c in counted] for (b, d), counted in step_counts.items()},
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
            rows.append([f"sm_{sm} CUDA float/half/bf16 kernels: FP64 / CALL / 64-bit cvt instructions",
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
            rows.append([f"sm_{sm} Triton kernels: FP64 / CALL / 64-bit cvt instructions (all configs)",
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
           "Spill B: spill stores (CUDA, ptxas) or local memory a thread (Triton). Triton kernels: the "
           "argument types, the config and the compile's hash (one row per specialisation the host's "
           "launches make); their shared memory is all dynamic. Occupancy and launch "
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
