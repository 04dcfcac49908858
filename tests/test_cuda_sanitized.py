"""The emulated CUDA kernels under ThreadSanitizer, AddressSanitizer and UndefinedBehaviorSanitizer:
what compute-sanitizer's racecheck and memcheck, and a GPU's alignment faults, would show, found on
the CPU.

tests/test_cuda_emulated.py runs again in a child process whose emulated kernels are built with
`-fsanitize=thread`, or `-fsanitize=address,undefined` (tests/cuda_emulation/build.py, SANITIZERS),
and whose sanitizer runtime is preloaded; when the children start and when their tests run:
tests/sanitized_runs.py. The emulation runs the threads of a block as concurrent
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

import re

import pytest

from cuda_emulation.build import SANITIZERS
from sanitized_runs import finish, start_sanitized

# How the reports begin.
REPORTS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "runtime error:")


@pytest.mark.slow
@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
def test_the_emulated_kernel_tests_pass_with_no_sanitizer_report(sanitizer, sanitized_run):
    returncode, stdout, stderr = finish(sanitized_run(sanitizer), timeout=1200)
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
    returncode, _, stderr = finish(start_sanitized(sanitizer, ["-c", probe]), timeout=600)
    assert returncode != 0 and expected in stderr and kernel in stderr, stderr[-4000:]
