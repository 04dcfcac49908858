"""What a compiled kernel is made of: its SASS counted (cuobjdump -sass), its resources (cuobjdump
-res-usage), and the names the demangler and the CUDA emulation give it, made comparable."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path


FP64_OPCODES = {"DADD", "DMUL", "DFMA", "DSETP", "DSET", "DMNMX", "DMMA"}
CONVERSIONS = {"I2F", "F2I", "F2F", "I2I", "I2FP", "F2IP"}
INSTRUCTION_BYTES = 16  # every SASS instruction from Volta (sm_70) on
SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


@dataclasses.dataclass
class SassCounts:
    instructions: int = 0  # without NOPs and the final self-branch
    in_loops: int = 0  # inside a backward branch's range
    fp64: int = 0  # FP64 arithmetic, FP64 MUFU, FRND.F64 and conversions from or to F64
    calls: int = 0  # CALL (subroutines: 64-bit division, the slow path of an IEEE divide, ...)
    # ptxas (sm_80 above all) leaves some loops through a predicated CALL.REL.NOINC to the
    # instruction after next, which returns nowhere: a branch, not a subroutine, so not in `calls`.
    call_branches: int = 0
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
        if base == "CALL":
            skips_one = target is not None and int(target.group(1), 16) == address + 2 * INSTRUCTION_BYTES
            counts.call_branches += skips_one
            counts.calls += not skips_one
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


def _type_spelling(text: str) -> str:
    text = re.sub(r"\(anonymous namespace\)::|\{anonymous\}::|\b[A-Za-z_]\w*::", "", text)
    text = text.replace("long int", "long").replace("long unsigned int", "unsigned long").replace("unsigned int", "unsigned")
    text = re.sub(r"\bconst\b|__grid_constant__|\s", "", text)
    # The demangler spells a dependent accumulation type as written (paanet::opmath_t<T>, an alias of
    # OpMath<T>::type); gcc resolves it.
    return re.sub(r"OpMath<(?:Half|BFloat16|float)>::type", "float", text).replace("OpMath<double>::type", "double")


def kernel_key(base_name: str, template: str, parameters: str) -> str:
    """A spelling of a kernel's name, template arguments and parameter types that the demangler and gcc
    agree on (the template arguments tell apart instantiations of the same function type)."""
    return f"{base_name}{_type_spelling(template)}({_type_spelling(parameters)})"


def split_signature(demangled: str) -> tuple[str, str, str]:
    """(base name, template arguments, parameters) of `void ns::name<T...>(params)`, as the demangler or gcc
    spells it."""
    depth, open_paren = 0, len(demangled) - 1
    for open_paren in range(len(demangled) - 1, -1, -1):  # the parenthesis that opens the parameter list
        depth += {")": 1, "(": -1}.get(demangled[open_paren], 0)
        if depth == 0:
            break
    head, params = demangled[:open_paren].removeprefix("void "), demangled[open_paren + 1:-1]
    template = head[head.index("<"):] if "<" in head else ""
    base = re.sub(r"\(anonymous namespace\)::|\{anonymous\}::|\b[A-Za-z_]\w*::", "", head[:len(head) - len(template)])
    return base, template, params



def cache_dir(out: Path) -> Path:
    """The folder under `out` where compiled kernels are kept."""
    folder = out / "compiled"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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

