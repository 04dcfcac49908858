"""The emulated CUDA kernels under ThreadSanitizer, AddressSanitizer and UndefinedBehaviorSanitizer:
what compute-sanitizer's racecheck and memcheck, and a GPU's alignment faults, would show, found on
the CPU.

tests/test_cuda_emulated.py runs again in a child process whose emulated kernels are built with
`-fsanitize=thread`, or `-fsanitize=address,undefined` (tests/cuda_emulation/build.py, SANITIZERS),
and whose sanitizer runtime is preloaded. The emulation runs the threads of a block as concurrent
threads with a real barrier for __syncthreads, so ThreadSanitizer reports any access of one thread
that another thread's write is not ordered with by a barrier (a missing or misplaced __syncthreads),
whatever the interleaving of the run. AddressSanitizer reports a read or write past the end of a
tensor or of a __shared__ array; UndefinedBehaviorSanitizer a 16-byte pack at an address that is not
16-byte aligned (a fault on a GPU) and signed overflow in the 32-bit index arithmetic. Blocks run
one after another, so races between blocks are not seen here (the backward's last-block summation
is checked in its SASS: benchmarks/RESULTS.md). Kernels with a planted defect
(tests/cuda_emulation/launch_log.cpp) show that each sanitizer reports what it is there for.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cuda_emulation.build import SANITIZER_VARIABLE, SANITIZERS, compiler_library

TESTS = Path(__file__).resolve().parent
# Each sanitizer stops at its first report. Leaks are not looked for: Python keeps much of its memory
# until exit.
OPTIONS = {"thread": {"TSAN_OPTIONS": "halt_on_error=1"},
           "address": {"ASAN_OPTIONS": "halt_on_error=1 detect_leaks=0",
                       "UBSAN_OPTIONS": "halt_on_error=1 print_stacktrace=1"}}
# How the reports begin.
REPORTS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "runtime error:")


def _start_sanitized(sanitizer: str, args: list[str]) -> subprocess.Popen:
    """Starts `python args` in tests/ with the kernels built for `sanitizer`."""
    # AddressSanitizer intercepts C++ throws; it finds the real __cxa_throw only in a C++ runtime
    # loaded when it starts, and triton's module throws (and catches) while it is imported.
    preload = [compiler_library(SANITIZERS[sanitizer][1])]
    preload += [compiler_library("libstdc++.so")] if sanitizer == "address" else []
    env = dict(os.environ, LD_PRELOAD=" ".join(map(str, preload)), **{SANITIZER_VARIABLE: sanitizer},
               **OPTIONS[sanitizer],
               # torch's parallel loops synchronise inside libgomp, which is not instrumented: the
               # sanitizer would take torch's own reference computations for races.
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *args], cwd=TESTS, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(child: subprocess.Popen, timeout: int) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of a started child; killed past `timeout` seconds."""
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        pytest.fail(f"the sanitized run took over {timeout} s:\n{(stdout + stderr)[-4000:]}")
    return child.returncode, stdout, stderr


def _emulated_tests_args(sanitizer: str) -> list[str]:
    # The stale-lock test launches nothing. ThreadSanitizer, the slower (over two minutes for every
    # case), leaves out what cannot race differently: bfloat16 (float16's paths, the same pack
    # width), and the mini-decoder in float64 and float16 (its threads share the same shared-memory
    # elements in every dtype; the pack widths of gam_multiply's paths are 2, 4 and 8 elements).
    selection = "not killed_build"  # not "lock": that would match the block-order test's "blocks" too
    if sanitizer == "thread":
        selection += " and not bfloat16 and not (mini_decoder and (float64 or float16))"
    # --capture=sys: the sanitizers write to the process's stderr, which a halted run would lose
    # inside pytest's capture of the file descriptor.
    return ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--capture=sys", "test_cuda_emulated.py", "-k", selection]


@pytest.fixture(scope="module")
def sanitized_runs(request):
    """The selected sanitizers' runs of the emulated kernel tests, started together: each child is
    mostly one busy core (its build, then pytest), so two run side by side in about the time of one."""
    wanted = {item.callspec.params["sanitizer"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_the_emulated_kernel_tests_pass_with_no_sanitizer_report"}
    children = {sanitizer: _start_sanitized(sanitizer, _emulated_tests_args(sanitizer)) for sanitizer in sorted(wanted)}
    yield children
    for child in children.values():  # a test that failed early leaves its child running
        if child.poll() is None:
            child.kill()
            child.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
def test_the_emulated_kernel_tests_pass_with_no_sanitizer_report(sanitizer, sanitized_runs):
    returncode, stdout, stderr = _finish(sanitized_runs[sanitizer], timeout=1200)
    output = stdout + stderr
    first = min((output.index(marker) for marker in REPORTS if marker in output), default=None)
    assert first is None, f"{sanitizer} sanitizer:\n{output[first:first + 6000]}"
    assert returncode == 0, output[-6000:]
    summary = stdout.strip().splitlines()[-1]
    assert re.match(r"\d+ passed", summary) and not re.search(r"failed|error", summary), stdout[-3000:]


PLANTED = [
    pytest.param("thread", "emulation_neighbours(64, False, True)", "WARNING: ThreadSanitizer: data race",
                 "neighbour_kernel", id="race"),
    pytest.param("address", "emulation_neighbours(64, True, False)", "ERROR: AddressSanitizer: heap-buffer-overflow",
                 "neighbour_kernel", id="overflow"),
    pytest.param("address", "emulation_pack_load(torch.arange(12.0), 1)", "misaligned address",
                 "pack_kernel", id="misaligned-pack"),
]


@pytest.mark.parametrize("sanitizer,call,expected,kernel", PLANTED)
def test_the_sanitizer_reports_a_planted_defect(sanitizer, call, expected, kernel):
    probe = f"import torch\nfrom cuda_emulation.build import load_emulated_kernels\nload_emulated_kernels().{call}\n"
    returncode, _, stderr = _finish(_start_sanitized(sanitizer, ["-c", probe]), timeout=600)
    assert returncode != 0 and expected in stderr and kernel in stderr, stderr[-4000:]
