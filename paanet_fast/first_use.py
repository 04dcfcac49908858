"""`auto`'s first-use check: a compiled backend proves itself on one tiny case before `auto` uses it.

The first time `auto` would pick a compiled backend (cpp, cuda, triton) for a (device, dtype), it
runs the forward and backward of both operators once on tiny odd shapes (paanet_fast.compare.TINY)
and compares them with the portable backend. A kernel that fails to launch (a GPU the build has
no code for, a driver problem) or computes a wrong answer then costs one warning and speed: `auto`
moves on to the next backend for the device, portable last. The result is kept for the process.

Not checked: a backend named explicitly (the user's choice is not second-guessed), anything while
torch.compile or torch.export traces or a CUDA graph is captured (a check cannot run inside a
graph: a model compiled or captured before its first eager call uses `auto`'s first choice
unchecked), and everything when the environment sets PAANET_FAST_VERIFY=0.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import torch

from .compare import TINY, compare_backends

if TYPE_CHECKING:  # backends imports this module
    from .backends import Backend

_verdicts: dict[tuple[str, str, torch.dtype], bool] = {}


def enabled() -> bool:
    """False when PAANET_FAST_VERIFY=0 (read at every call, so that a test or a user can flip it)."""
    return os.environ.get("PAANET_FAST_VERIFY", "1") != "0"


def passes(backend: Backend, baseline: Backend, device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether `auto` may use `backend` for `dtype` tensors on
    `device`: it agrees with `baseline` (portable) on the tiny case, or the check does not apply.

    Warns once, naming the first problem found, when it does not agree.
    """
    if dtype is None or torch.compiler.is_compiling() or torch.jit.is_tracing() or not enabled() or \
            (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return True
    key = (backend.name, str(device), dtype)
    if key not in _verdicts:
        problems = compare_backends(backend, baseline, device, dtype, (TINY,))
        _verdicts[key] = not problems
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            warnings.warn(f"paanet_fast: the {backend.name} backend failed its first-use check on {device} "
                          f"{str(dtype).removeprefix('torch.')} tensors against the {baseline.name} backend: "
                          f"{problems[0]}{more}. backend='auto' uses the next backend for {device.type} tensors "
                          f"(portable last) in this process; backend='{backend.name}' would use it anyway, and "
                          "PAANET_FAST_VERIFY=0 turns the check off. `paanet-fast doctor` checks every backend.",
                          RuntimeWarning, stacklevel=4)
    return _verdicts[key]
