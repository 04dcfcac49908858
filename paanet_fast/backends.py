"""Registry of operator backends and the rule that picks one for a device.

Backends: "reference" (the literal formulas, plain PyTorch), "portable" (the low-resolution
formulation in plain PyTorch: any device), "cpp" (compiled CPU kernels), "cuda" (compiled CUDA
kernels), "triton" (Triton kernels; GPU, or CPU under TRITON_INTERPRET=1). "auto" picks, for CPU
tensors, cpp; for CUDA tensors, cuda then triton; and falls back to portable, with one warning
that says why, where none of those could be loaded or none exists for the device (mps, xpu...).
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

KNOWN_BACKENDS = ("reference", "portable", "cpp", "cuda", "triton")
_AUTO_ORDER = {"cpu": ("cpp",), "cuda": ("cuda", "triton")}
# Modules that register backends when imported; any exception leaves the backend unavailable.
_PROVIDERS = {"cpp": "paanet_fast._compiled", "cuda": "paanet_fast._compiled", "triton": "paanet_fast.triton"}


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
            mark_unavailable(name, f"{_PROVIDERS[name]} could not be imported: {exc}")
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


def resolve(name: str | None, device: torch.device) -> Backend:
    """The backend that computes tensors on `device` for the requested name (None means "auto")."""
    name = "auto" if name is None else name
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ()):
            backend = _load(candidate)
            if backend is not None:
                return backend
        if device.type not in _warned_fallback:
            _warned_fallback.add(device.type)
            reasons = "; ".join(f"{c}: {_unavailable.get(c)}" for c in _AUTO_ORDER.get(device.type, ()))
            warnings.warn(f"paanet_fast: no compiled backend for {device.type} tensors "
                          f"({reasons or 'none exists for this device type'}); using the portable backend "
                          "(plain PyTorch, slower than the compiled kernels)", RuntimeWarning, stacklevel=3)
        return _registry["portable"]
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {KNOWN_BACKENDS}")
    backend = _load(name)
    if backend is None:
        raise RuntimeError(f"backend {name!r} is not available: {_unavailable.get(name)}")
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
