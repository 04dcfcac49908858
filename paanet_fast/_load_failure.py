"""Why an optional backend's module failed to import, said so that the user can act on it.

The compiled extension paanet_fast._C uses only PyTorch's stable ABI: setup.py records in
paanet_fast._build_info the oldest torch it loads into (STABLE_ABI) and the torch it was compiled
against. Under an older torch than STABLE_ABI it cannot load (upgrade torch); under a supported
torch a failure is not a version mismatch, so the reason says so instead of advising a rebuild.
A build from before the stable ABI (no STABLE_ABI recorded) was tied to its exact torch.
"""
from __future__ import annotations

import importlib

import torch
from torch.torch_version import TorchVersion

COMPILED_PROVIDER = "paanet_fast._compiled"
BUILD = "pip install -e ."
REBUILD = "pip install --no-build-isolation -e ."


def _torch_and_cuda(version: str, cuda: str | None) -> str:
    return f"torch {version} ({f'CUDA {cuda}' if cuda else 'CPU-only'})"


def _build_record() -> str:
    """What the build was compiled against and loads into, against what is running, and what to do."""
    running = _torch_and_cuda(torch.__version__, torch.version.cuda)
    try:
        info = importlib.import_module("paanet_fast._build_info")
    except ImportError:
        return f"the extension has not been built (running {running}): build it with `{BUILD}` in the source folder"
    built_version = getattr(info, "TORCH_VERSION", None)
    rebuild = f"rebuild it against the running torch with `{REBUILD}` in the source folder"
    if built_version is None:
        return f"built by an older setup.py against an unrecorded torch, running {running}: {rebuild}"
    built = _torch_and_cuda(built_version, getattr(info, "TORCH_CUDA_VERSION", None))
    minimum = getattr(info, "STABLE_ABI", None)
    if minimum is None:  # a build from before the stable ABI: it loads only into its own torch
        if built == running:
            return f"built against the running {running}; if the build is stale or incomplete, {rebuild}"
        return f"built against {built} but running {running}: {rebuild}"
    if TorchVersion(torch.__version__) < minimum:
        return (f"its stable-ABI kernels need torch {minimum} or newer, running {running}: upgrade torch "
                f"(`pip install \"torch>={minimum}\"`)")
    return (f"built against {built} with stable-ABI kernels, which load into torch {minimum} and newer, running "
            f"{running}: not a torch version mismatch, so the import error above says what is missing "
            "(`python -m paanet_fast doctor` shows the build and the environment)")


def load_failure_reason(module: str, exc: BaseException) -> str:
    """The reason recorded for a backend whose provider `module` raised `exc` on import."""
    reason = f"{module} could not be imported: {exc}"
    return f"{reason} ({_build_record()})" if module == COMPILED_PROVIDER else reason
