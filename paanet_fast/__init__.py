"""paanet_fast: PAANet for medical image segmentation with fused C++/CUDA/Triton operators.

The names below are imported when first used (module __getattr__), so that the command line can
parse its arguments and print its help before torch is imported.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"
# name -> the submodule that defines it (a submodule itself where the two are the same)
_LAZY = {"PAANet": "model", "PAANetOutput": "model", "PAANetLoss": "losses", "available_backends": "backends",
         "export_onnx": "export",  # onnx itself is imported only when it runs
         "metrics": "metrics", "ops": "ops"}
__all__ = ["PAANet", "PAANetOutput", "PAANetLoss", "available_backends", "export_onnx", "metrics", "ops"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    value = module if _LAZY[name] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
