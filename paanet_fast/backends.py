"""Registry of operator backends and the rule that picks one for a device.

Backends: "reference" (the literal formulas, plain PyTorch), "portable" (the low-resolution
formulation in plain PyTorch: any device), "cpp" (compiled CPU kernels), "cuda" (compiled CUDA
kernels), "triton" (Triton kernels; GPU, or CPU under TRITON_INTERPRET=1). "auto" picks, for CPU
tensors, cpp; for CUDA tensors, cuda (unless the build has no code for the card: paanet_fast.cuda_arch)
then triton; and falls back to portable, with one warning that says why, where none of those could
be loaded or none exists for the device (mps, xpu...). Before "auto" first uses a compiled backend
for a (device, dtype), that backend must pass a tiny comparison with portable
(paanet_fast.first_use); one that fails is skipped like a missing one.
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from . import cuda_arch, first_use
from ._load_failure import load_failure_reason
from .options import KNOWN_BACKENDS

_AUTO_ORDER = {"cpu": ("cpp",), "cuda": ("cuda", "triton")}
# Modules that register backends when imported; any exception leaves the backend unavailable.
# paanet_fast.ops registers the two plain-PyTorch backends (the package imports it lazily).
_PROVIDERS = {"reference": "paanet_fast.ops", "portable": "paanet_fast.ops", "cpp": "paanet_fast._compiled",
              "cuda": "paanet_fast._compiled", "triton": "paanet_fast.triton"}


@dataclass(frozen=True)
class Backend:
    """One implementation of both operators, for tensors on `device_types` (None: any device)."""

    name: str
    device_types: frozenset[str] | None
    mini_decoder: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    gam_multiply: Callable[..., list[torch.Tensor]]

    def computes(self, device_type: str) -> bool:
        return self.device_types is None or device_type in self.device_types


_registry: dict[str, Backend] = {}
_unavailable: dict[str, str] = {}
_warned_fallback: set[str] = set()


def register(backend: Backend) -> None:
    _registry[backend.name] = backend
    _unavailable.pop(backend.name, None)


def mark_unavailable(name: str, why: str) -> None:
    _unavailable[name] = why


def _load(name: str) -> Backend | None:
    if name not in _registry and name not in _unavailable and name in _PROVIDERS:
        try:
            importlib.import_module(_PROVIDERS[name])
        # Not only ImportError: a missing build or missing triton, but also e.g. triton 3.2 raising
        # "RuntimeError: 0 active drivers" at kernel definition on a machine without a GPU.
        except Exception as exc:  # noqa: BLE001  an optional backend that fails is a reason, not a crash
            mark_unavailable(name, load_failure_reason(_PROVIDERS[name], exc))
        if name not in _registry:
            _unavailable.setdefault(name, f"{_PROVIDERS[name]} did not register it")
    return _registry.get(name)


def _device_usable(device_type: str) -> bool:
    return device_type == "cpu" or (device_type == "cuda" and torch.cuda.is_available())


def _runs_here(backend: Backend) -> bool:
    # The CPU is always present, so a backend for any device always runs.
    return backend.device_types is None or any(_device_usable(d) for d in backend.device_types)


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine: loaded, and a device they compute is present."""
    return [name for name in KNOWN_BACKENDS if (b := _load(name)) is not None and _runs_here(b)]


def unavailable_reason(name: str) -> str | None:
    _load(name)
    return _unavailable.get(name)


def _refusal(name: str, device: torch.device) -> str | None:
    """Why a loaded backend still cannot run on this device: the CUDA kernels on a card the build
    did not compile for (paanet_fast.cuda_arch)."""
    return cuda_arch.unsupported_reason(device) if name == "cuda" and device.type == "cuda" else None


def _runs_on(name: str, device: torch.device) -> bool:
    """For auto: whether backend `name` runs on this device; if not, one warning per reason."""
    why = _refusal(name, device)
    if why is not None and why not in _warned_fallback:
        _warned_fallback.add(why)
        warnings.warn(f"{why}; auto skips the {name} backend there", RuntimeWarning, stacklevel=4)
    return why is None


def resolve(name: str | None, device: torch.device, dtype: torch.dtype | None = None) -> Backend:
    """The backend that computes tensors on `device` for the requested name (None means "auto").

    With `dtype` (the features' dtype), "auto" runs the first-use check of paanet_fast.first_use.
    """
    name = "auto" if name is None else name
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ()):
            backend = _load(candidate)
            if (backend is not None and _runs_on(candidate, device)
                    and first_use.passes(backend, _load("portable"), device, dtype)):
                return backend
        # A backend that failed its first-use check has said so in its own warning.
        why_not = {c: _unavailable.get(c) or _refusal(c, device) for c in _AUTO_ORDER.get(device.type, ())}
        reasons = "; ".join(f"{c}: {why}" for c, why in why_not.items() if why)
        if device.type not in _warned_fallback and (reasons or device.type not in _AUTO_ORDER):
            _warned_fallback.add(device.type)
            warnings.warn(f"paanet_fast: no compiled backend for {device.type} tensors "
                          f"({reasons or 'none exists for this device type'}); using the portable backend "
                          "(plain PyTorch, slower than the compiled kernels)", RuntimeWarning, stacklevel=3)
        return _load("portable")
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {KNOWN_BACKENDS}")
    backend = _load(name)
    if backend is None:
        raise RuntimeError(f"backend {name!r} is not available: {_unavailable.get(name)}")
    if (why := _refusal(name, device)) is not None:
        raise RuntimeError(why)
    if not backend.computes(device.type):
        hint = " (Triton runs CPU tensors only under TRITON_INTERPRET=1, set before importing paanet_fast)" \
            if name == "triton" and device.type == "cpu" else ""
        raise ValueError(f"backend {name!r} computes {sorted(backend.device_types)} tensors, "
                         f"but the inputs are on {device}{hint}")
    return backend


def check_name(name: str | None) -> str:
    """Validate a backend name and import the providers it may resolve to (for constructors).

    Resolving then imports nothing: torch.compile cannot trace an import, so a model compiled
    before its first eager call would otherwise fail with fullgraph=True. A provider that fails to
    import is only recorded; the error comes when the backend is used.
    """
    name = "auto" if name is None else name
    if name != "auto" and name not in KNOWN_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {KNOWN_BACKENDS}")
    for candidate in {c for order in _AUTO_ORDER.values() for c in order} if name == "auto" else (name,):
        _load(candidate)
    return name
