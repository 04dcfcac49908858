"""The emulated CUDA kernels under ThreadSanitizer and AddressSanitizer: what compute-sanitizer's
racecheck and memcheck would look for on a GPU, found on the CPU.

tests/test_cuda_emulated.py runs again in a child process whose emulated kernels are built with
`-fsanitize=thread` or `-fsanitize=address` (tests/cuda_emulation/build.py, SANITIZER_VARIABLE) and
whose sanitizer runtime is preloaded. The emulation runs the threads of a block as concurrent threads
with a real barrier for __syncthreads, so ThreadSanitizer reports any shared-memory (or global)
access of one thread that another thread's write is not ordered with by a barrier: a missing or
misplaced __syncthreads, whatever the interleaving of this run. AddressSanitizer reports a read or
write past the end of a tensor or of a __shared__ array. Blocks run one after another, so races
between blocks are not seen here (the backward's last-block summation is checked in its SASS:
benchmarks/RESULTS.md). A kernel with a planted defect (launch_log.cpp, neighbour_kernel) shows
that each sanitizer does report what it is there for.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cuda_emulation.build import SANITIZER_RUNTIMES, SANITIZER_VARIABLE, compiler_library

TESTS = Path(__file__).resolve().parent
# Each sanitizer's options variable and options: stop at the first report, and write reports to a file
# (pytest captures the child's stderr, and a halted run would lose it). Leaks are not looked for:
# Python keeps much of its memory until exit.
OPTIONS = {"thread": ("TSAN_OPTIONS", "halt_on_error=1"),
           "address": ("ASAN_OPTIONS", "halt_on_error=1 detect_leaks=0")}
# What the planted defect makes each sanitizer report.
PLANTED = {"thread": ("race", "WARNING: ThreadSanitizer: data race"),
           "address": ("overflow", "ERROR: AddressSanitizer: global-buffer-overflow")}


def _run_sanitized(sanitizer: str, args: list[str], reports: Path, timeout: int) -> tuple[int, str, str]:
    """Runs `python args` in tests/ with the kernels built for `sanitizer`; (exit code, its output, the
    sanitizer's reports)."""
    # AddressSanitizer intercepts C++ throws; it finds the real __cxa_throw only in a C++ runtime
    # loaded when it starts, and triton's module throws (and catches) while it is imported.
    preload = [compiler_library(SANITIZER_RUNTIMES[sanitizer])]
    preload += [compiler_library("libstdc++.so")] if sanitizer == "address" else []
    variable, options = OPTIONS[sanitizer]
    env = dict(os.environ, LD_PRELOAD=" ".join(map(str, preload)), **{SANITIZER_VARIABLE: sanitizer},
               **{variable: f"{options} log_path={reports / 'report'}"},
               # torch's parallel loops synchronise inside libgomp, which is not instrumented: the
               # sanitizer would take torch's own reference computations for races.
               OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, *args], cwd=TESTS, env=env, capture_output=True, text=True,
                            timeout=timeout)
    report_text = "\n".join(p.read_text() for p in sorted(reports.glob("report*")))
    return result.returncode, result.stdout + result.stderr, report_text


@pytest.mark.slow
@pytest.mark.parametrize("sanitizer", list(OPTIONS))
def test_the_emulated_kernel_tests_pass_with_no_sanitizer_report(sanitizer, tmp_path):
    # The lock test launches nothing. Under ThreadSanitizer (a minute and a half) bfloat16 is left
    # out: its kernels take float16's paths (the same pack width), only their conversions differ.
    selection = "not lock" + (" and not bfloat16" if sanitizer == "thread" else "")
    code, output, reports = _run_sanitized(
        sanitizer, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_cuda_emulated.py", "-k", selection],
        tmp_path, timeout=1200)
    assert not reports, f"{sanitizer} sanitizer:\n{reports[:6000]}"
    assert code == 0, output[-6000:]
    assert " passed" in output and "failed" not in output, output[-3000:]


@pytest.mark.parametrize("sanitizer", list(OPTIONS))
def test_the_sanitizer_reports_a_planted_defect(sanitizer, tmp_path):
    defect, expected = PLANTED[sanitizer]
    probe = ("from cuda_emulation.build import load_emulated_kernels\n"
             f"load_emulated_kernels().emulation_neighbours(64, synchronized={defect != 'race'}, "
             f"wrap={defect != 'overflow'})\n")
    code, output, reports = _run_sanitized(sanitizer, ["-c", probe], tmp_path, timeout=600)
    assert code != 0, output[-3000:]
    assert expected in reports and "neighbour_kernel" in reports, f"{output[-3000:]}\n{reports[:3000]}"
