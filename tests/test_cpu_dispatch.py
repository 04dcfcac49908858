"""The CPU kernels' run-time dispatch (csrc/cpu/kernels.h): one binary for any x86-64 that runs its
loops for the baseline, AVX2 or AVX-512, as ATen picks its own.

Each instruction set this CPU has is forced with ATEN_CPU_CAPABILITY in a fresh interpreter, which
then runs the operator parity tests (tests/test_ops_parity.py: outputs and gradients against the
reference on fresh random odd shapes, float64 and float32, every memory layout). The disassembly
shows that the wide registers appear only in the dispatched loops, so the baseline runs anywhere.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import paanet_fast._C

ROOT = Path(__file__).resolve().parent.parent
# ATen's names, widest last; each includes the ones before it.
CAPABILITIES = ("default", "avx2", "avx512")
PARITY_TESTS = "random_shapes or model_strides or tall_maps or any_layout"


def _cpu_has(capability: str) -> bool:
    best = torch.backends.cpu.get_cpu_capability().lower()
    return best in CAPABILITIES and CAPABILITIES.index(capability) <= CAPABILITIES.index(best)


def _run(args: list[str], capability: str | None) -> subprocess.CompletedProcess:
    """Runs Python with ATEN_CPU_CAPABILITY set to `capability` (None: unset)."""
    env = {key: value for key, value in os.environ.items() if key != "ATEN_CPU_CAPABILITY"}
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_each_instruction_set_runs_its_loops_and_matches_the_reference(capability):
    if not _cpu_has(capability):
        pytest.skip(f"this CPU has no {capability} (ATen: {torch.backends.cpu.get_cpu_capability()})")
    # torch first: it loads the libraries _C links against (the package itself imports torch lazily).
    chosen = _run(["-c", "import torch, paanet_fast._C as C; print(C.cpu_kernels())"], capability)
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert chosen.stdout.split() == [capability]
    parity = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ops_parity.py", "-k", PARITY_TESTS],
                  capability)
    assert parity.returncode == 0, parity.stdout[-5000:]
    assert re.search(r"\b\d+ passed\b", parity.stdout) and " failed" not in parity.stdout


@pytest.mark.parametrize("setting", [None, *CAPABILITIES, "AVX2", "sse"])
def test_the_choice_is_atens_for_its_own_kernels(setting):
    """The extension reads the CPU itself (ATen's choice is not in the stable ABI); it must agree with
    ATen's for every setting of ATEN_CPU_CAPABILITY that this CPU can run: unset, each instruction set
    it has, and values ATen ignores (it is case-sensitive, and knows no "sse")."""
    if torch.backends.cpu.get_cpu_capability().lower() not in CAPABILITIES:
        pytest.skip(f"not an x86-64 CPU (ATen: {torch.backends.cpu.get_cpu_capability()})")
    if setting in CAPABILITIES and not _cpu_has(setting):
        pytest.skip(f"this CPU has no {setting} (ATen: {torch.backends.cpu.get_cpu_capability()})")
    chosen = _run(["-W", "ignore", "-c", "import torch, paanet_fast._C as C; "
                   "print(C.cpu_kernels(), torch.backends.cpu.get_cpu_capability().lower())"], setting)
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    ours, aten = chosen.stdout.split()
    assert ours == aten


def test_wide_registers_appear_only_in_the_dispatched_loops():
    """ymm (AVX) and zmm (AVX-512) registers in the extension's code, counted per function."""
    objdump = shutil.which("objdump")
    assert objdump is not None, "objdump (binutils, which the C++ build needs too) is not on PATH"
    listing = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", paanet_fast._C.__file__],
                             capture_output=True, text=True, check=True, timeout=300).stdout
    wide, function = Counter(), ""
    for line in listing.splitlines():
        if (start := re.match(r"^[0-9a-f]+ <(.*)>:$", line)) is not None:
            function = start.group(1)
        elif (register := re.search(r"%([yz]mm)\d", line)) is not None:
            where = next((ns for ns in ("avx2", "avx512") if f"paanet::cpu::{ns}::" in function), function)
            wide[where, register.group(1)] += 1
    outside = {key: n for key, n in wide.items() if key[0] not in ("avx2", "avx512")}
    assert outside == {}, f"wide registers outside the dispatched loops: {outside}"
    assert wide["avx2", "ymm"] > 0 and wide["avx2", "zmm"] == 0
    assert wide["avx512", "zmm"] > 0
