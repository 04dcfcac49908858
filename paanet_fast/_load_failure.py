"""Why an optional backend's module failed to import, said so that the user can act on it.

The compiled extension paanet_fast._C is tied to the torch it was compiled against: under another
torch it fails to load (typically `undefined symbol: _ZN...`). setup.py records that torch in
paanet_fast._build_info, so the reason can name both versions and the command that rebuilds it.
"""
from __future__ import annotations

import importlib

import torch

COMPILED_PROVIDER = "paanet_fast._compiled"
REBUILD = "pip install --no-build-isolation -e ."


def _torch_and_cuda(version: str, cuda: str | None) -> str:
    return f"torch {version} ({f'CUDA {cuda}' if cuda else 'CPU-only'})"


def _build_record() -> str:
    """What the build was compiled against, against what is running, and how to rebuild."""
    running = _torch_and_cuda(torch.__version__, torch.version.cuda)
    rebuild = f"rebuild it against the running torch with `{REBUILD}` in the source folder"
    try:
        info = importlib.import_module("paanet_fast._build_info")
    except ImportError:
        return f"the extension has not been built (running {running}): {rebuild}"
    built_version = getattr(info, "TORCH_VERSION", None)
    if built_version is None:
        return f"built by an older setup.py against an unrecorded torch, running {running}: {rebuild}"
    built = _torch_and_cuda(built_version, getattr(info, "TORCH_CUDA_VERSION", None))
    if built == running:
        return f"built against the running {running}; if the build is stale or incomplete, {rebuild}"
    return f"built against {built} but running {running}: {rebuild}"


def load_failure_reason(module: str, exc: BaseException) -> str:
    """The reason recorded for a backend whose provider `module` raised `exc` on import."""
    reason = f"{module} could not be imported: {exc}"
    return f"{reason} ({_build_record()})" if module == COMPILED_PROVIDER else reason
