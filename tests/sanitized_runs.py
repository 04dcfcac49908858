"""The sanitized runs of the emulated kernel tests (tests/test_cuda_sanitized.py): child processes,
each mostly one busy core for about three minutes (its build, then pytest on
tests/test_cuda_emulated.py), that their waiting tests check.

In one process (plain `pytest`), the rest of the suite keeps about one of this machine's two cores
busy on average: the runs start with the session's tests, at the lowest priority, and are waited for
by their tests, which run last, so that they take the idle core instead of holding up the suite.
Under pytest-xdist (`-n 2`, as .ci/run) a worker cannot tell which tests it will get: each waiting
test starts its own run, also at the lowest priority (at normal priority, the run's hundreds of
emulated GPU threads took most of both cores from the workers), and waits for it; the waiting tests
come first, so that the other worker goes on meanwhile and no run is left for the end. (A worker
that started every run for the first waiting test it got would start them twice when the other
worker got the other.) conftest.py installs the hooks and the fixture.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from cuda_emulation.build import SANITIZER_VARIABLE, SANITIZERS, compiler_library

TESTS = Path(__file__).resolve().parent
# The test that waits for a run, one case per sanitizer.
WAITING_TEST = "test_the_emulated_kernel_tests_pass_with_no_sanitizer_report"
# Each sanitizer stops at its first report. Leaks are not looked for: Python keeps much of its memory
# until exit.
OPTIONS = {"thread": {"TSAN_OPTIONS": "halt_on_error=1"},
           "address": {"ASAN_OPTIONS": "halt_on_error=1 detect_leaks=0",
                       "UBSAN_OPTIONS": "halt_on_error=1 print_stacktrace=1"}}
_RUNS = pytest.StashKey[dict]()


def start_sanitized(sanitizer: str, args: list[str], background: bool = False) -> subprocess.Popen:
    """Starts `python args` in tests/ with the kernels built for `sanitizer`; in the `background`, at the
    lowest CPU priority."""
    # AddressSanitizer intercepts C++ throws; it finds the real __cxa_throw only in a C++ runtime
    # loaded when it starts, and triton's module throws (and catches) while it is imported.
    preload = [compiler_library(SANITIZERS[sanitizer][1])]
    preload += [compiler_library("libstdc++.so")] if sanitizer == "address" else []
    env = dict(os.environ, LD_PRELOAD=" ".join(map(str, preload)), **{SANITIZER_VARIABLE: sanitizer},
               **OPTIONS[sanitizer],
               # torch's parallel loops synchronise inside libgomp, which is not instrumented: the
               # sanitizer would take torch's own reference computations for races.
               OMP_NUM_THREADS="1")
    # In the background the child takes only what the suite leaves idle: as an equal it slows the suite
    # (torch's OpenMP threads wait badly on a busy machine) by more than it saves.
    return subprocess.Popen([sys.executable, *args], cwd=TESTS, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=(lambda: os.nice(19)) if background else None)


def finish(child: subprocess.Popen, timeout: int) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of a started child; killed past `timeout` seconds."""
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        pytest.fail(f"the sanitized run took over {timeout} s:\n{(stdout + stderr)[-4000:]}")
    return child.returncode, stdout, stderr


def emulated_tests_args(sanitizer: str) -> list[str]:
    """The child's command line: tests/test_cuda_emulated.py, less what `sanitizer` need not run."""
    # The stale-lock test launches nothing. ThreadSanitizer, the slower (over two minutes for every
    # case), leaves out what cannot race differently: bfloat16 (float16's paths, the same pack
    # width), the mini-decoder in float64 and float16 (its threads share the same shared-memory
    # elements in every dtype; the pack widths of gam_multiply's paths are 2, 4 and 8 elements), and
    # gam_multiply's reverse attention (a run-time flag that changes values, 1 - a for a and the
    # gradient's sign, and no access or barrier; about a quarter of the run).
    selection = "not killed_build"  # not "lock": that would match the block-order test's "blocks" too
    if sanitizer == "thread":
        selection += " and not bfloat16 and not (mini_decoder and (float64 or float16)) and not reverse"
    # --capture=sys: the sanitizers write to the process's stderr, which a halted run would lose
    # inside pytest's capture of the file descriptor.
    return ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--capture=sys", "test_cuda_emulated.py", "-k", selection]


def start_emulated_run(sanitizer: str) -> subprocess.Popen:
    """The sanitized run of the emulated kernel tests, in the background."""
    return start_sanitized(sanitizer, emulated_tests_args(sanitizer), background=True)


def _waiting(item: pytest.Item) -> bool:
    return getattr(item, "originalname", "") == WAITING_TEST


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The waiting tests last in one process, first in a pytest-xdist worker; all else in its order
    (a stable sort: every worker collects the same order, as xdist requires)."""
    first = _xdist_worker(config)
    items.sort(key=lambda item: _waiting(item) != first)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """In one process, starts the runs that the selected tests wait for, before the first test runs."""
    if _xdist_worker(session.config):
        return
    wanted = sorted({item.callspec.params["sanitizer"] for item in session.items if _waiting(item)})
    session.stash[_RUNS] = {s: start_emulated_run(s) for s in wanted}


def pytest_sessionfinish(session: pytest.Session) -> None:
    for child in session.stash.get(_RUNS, {}).values():  # a session stopped early leaves its children
        if child.poll() is None:
            child.kill()
            child.communicate()


@pytest.fixture(scope="session")
def sanitized_run(request: pytest.FixtureRequest) -> Callable[[str], subprocess.Popen]:
    """The run of a sanitizer: the one started with the session, or one started now (pytest-xdist)."""
    started = request.session.stash.setdefault(_RUNS, {})

    def run(sanitizer: str) -> subprocess.Popen:
        if sanitizer not in started:
            started[sanitizer] = start_emulated_run(sanitizer)
        return started[sanitizer]
    return run
