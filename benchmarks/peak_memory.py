"""Peak memory of one call, for the benchmarks.

CUDA: torch.cuda.max_memory_allocated over the call, minus what was allocated before it.
CPU: the growth of the process's peak resident set (VmHWM) over the call. The kernel's peak
counter is reset first (writing 5 to /proc/self/clear_refs), so the figure is the call's own high
water mark above the memory resident when it started: tensors it allocates and frees count, as do
allocator caches and library workspaces, which is what a user's machine has to provide.

glibc keeps freed blocks below its mmap threshold (which grows up to 32 MiB as large blocks are
freed) resident for reuse, so a call whose buffers fit into memory freed by an earlier call would
show no growth at all. During the measured call, blocks of 128 KiB or more are therefore each
given their own mapping (returned to the system when freed) and the heap is trimmed first; outside
it the thresholds are pinned at glibc's steady state (32 MiB), set when this module is imported
so that every provider is timed under the same allocator settings.

The second measure, process_peak_mib, is what a user's machine must hold for the whole process:
the peak resident set (VmHWM) on the CPU, runtime, model, optimizer state and every call
included; on a GPU, the caching allocator's peak reservation. Both counters only ever grow, so each
provider is measured in a fresh process of its own (fresh_process_peak_mib). Not ru_maxrss: Linux
carries it across exec, so a child started by a large parent (pytest after other benchmarks)
reports at least the parent's resident set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
_STEADY_MMAP, _STEADY_TRIM = 32 << 20, 64 << 20
_MEASURE_MMAP = 128 << 10


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()


def _set_thresholds(mmap: int, trim: int) -> None:
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, trim)


_set_thresholds(_STEADY_MMAP, _STEADY_TRIM)


@contextmanager
def _large_blocks_mapped() -> Iterator[None]:
    _set_thresholds(_MEASURE_MMAP, _MEASURE_MMAP)
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        yield
    finally:
        _set_thresholds(_STEADY_MMAP, _STEADY_TRIM)


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in {_STATUS}")


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes of memory the call needed beyond what was in use when it started."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _large_blocks_mapped():
        _CLEAR_REFS.write_text("5")
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) * 1024


_PEAK_LINE = "process peak MiB:"


def process_peak_mib(device: torch.device) -> float:
    """This process's peak memory so far: peak resident set on the CPU, peak reservation on a GPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    return _status_kib("VmHWM") / 1024


def print_process_peak(device: torch.device) -> None:
    """The last line of a process that fresh_process_peak_mib runs."""
    print(_PEAK_LINE, process_peak_mib(device), flush=True)


def fresh_process_peak_mib(script: Path, args: Sequence[str], timeout: float = 1800) -> float:
    """Run `python script *args` in a new interpreter (the same environment) and return the peak it
    printed with print_process_peak."""
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                            cwd=script.parent, env=os.environ.copy())
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith(_PEAK_LINE):
        raise RuntimeError(f"{script.name} {' '.join(args)} did not report its peak memory "
                           f"(exit status {result.returncode}):\n{result.stdout}{result.stderr}")
    return float(lines[-1].removeprefix(_PEAK_LINE))
