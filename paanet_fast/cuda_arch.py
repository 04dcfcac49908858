"""Whether a CUDA card can run what this build compiled, and whether it computes bfloat16.

setup.py records the architectures it compiled the CUDA kernels for in paanet_fast._build_info
(CUDA_ARCH_LIST, as "7.5;8.0;9.0+PTX"). A card runs them when one of them is
- machine code (SASS) for sm_XY and the card's capability is X.Z with Z >= Y (same major), or
- PTX for compute_XY (the "+PTX" entries) and the card's capability is at least X.Y: the driver
  compiles it on first use.
Architecture-specific targets such as 9.0a run only on exactly their capability.
"""
from __future__ import annotations

import re

import torch

try:
    from ._build_info import CUDA_ARCH_LIST as BUILT_ARCH_LIST
except ImportError:  # no build record, or one from a setup.py that did not write the list: unknown
    BUILT_ARCH_LIST: str | None = None

_ENTRY = re.compile(r"(\d+)\.(\d)([a-z]?)(\+PTX)?")
# Verdicts by (capability, arch list): resolve asks on every operator call.
_verdicts: dict[tuple[tuple[int, int], str], bool] = {}


def runs_on(capability: tuple[int, int], arch_list: str) -> bool:
    """Whether code compiled for `arch_list` ("7.5;8.0;9.0+PTX") runs on a card of `capability` (major, minor)."""
    key = (tuple(capability), arch_list)
    if key not in _verdicts:
        _verdicts[key] = any(_entry_runs_on(capability, entry) for entry in arch_list.split(";"))
    return _verdicts[key]


def _entry_runs_on(capability: tuple[int, int], entry: str) -> bool:
    match = _ENTRY.fullmatch(entry.strip())
    if match is None:
        raise ValueError(f"unrecognised CUDA architecture {entry!r} in the build's list")
    major, minor, suffix, ptx = int(match[1]), int(match[2]), match[3], match[4] is not None
    if suffix:
        return tuple(capability) == (major, minor)
    return (capability[0] == major and capability[1] >= minor) or (ptx and tuple(capability) >= (major, minor))


def _capability(device: torch.device) -> tuple[int, int]:
    properties = torch.cuda.get_device_properties(device)  # torch.compile folds this to a constant
    return properties.major, properties.minor


def unsupported_reason(device: torch.device) -> str | None:
    """Why the compiled CUDA kernels cannot run on CUDA `device`, or None when they can (or when
    there is nothing to compare: no record of the build's architectures, or no GPU at all)."""
    if BUILT_ARCH_LIST is None or not torch.cuda.is_available():
        return None
    capability = _capability(device)
    if runs_on(capability, BUILT_ARCH_LIST):
        return None
    major, minor = capability
    return (f"paanet_fast: the CUDA kernels were built for the architectures {BUILT_ARCH_LIST}, none of which "
            f"runs on {device} (compute capability {major}.{minor}); rebuild paanet_fast on this machine "
            f"(the build then targets its GPUs) or with TORCH_CUDA_ARCH_LIST={major}.{minor}")


def computes_bfloat16(device: torch.device) -> bool:
    """False for CUDA cards without bfloat16 arithmetic (compute capability below 8.0: Turing, Volta)."""
    return device.type != "cuda" or _capability(device) >= (8, 0)
