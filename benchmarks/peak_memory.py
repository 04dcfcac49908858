"""Peak memory of one call, for the benchmarks.

CUDA: torch.cuda.max_memory_allocated over the call, minus what was allocated before it.
CPU: the growth of the process's peak resident set (VmHWM) over the call. The kernel's peak
counter is reset first (writing 5 to /proc/self/clear_refs), so the figure is the call's own high
water mark above the memory resident when it started: tensors it allocates and frees count, as do
allocator caches and library workspaces, which is what a user's machine has to provide.
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


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
    _CLEAR_REFS.write_text("5")
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024
