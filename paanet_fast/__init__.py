"""paanet_fast: PAANet for medical image segmentation with fused C++/CUDA/Triton operators.

The names below, and the submodules (`paanet_fast.export`, ...), are imported when first used
(module __getattr__), so that the command line can parse its arguments and print its help before
torch is imported. The module's namespace holds nothing else: `dir(paanet_fast)` lists the public
names (and the submodules imported so far).
"""

__version__ = "0.2.0"
# name -> the submodule that defines it
_DEFINED_IN = {"PAANet": "model", "PAANetOutput": "model", "PAANetLoss": "losses", "available_backends": "backends",
               "export_onnx": "export"}  # onnx itself is imported only when export_onnx runs
__all__ = ["PAANet", "PAANetOutput", "PAANetLoss", "available_backends", "export_onnx", "metrics", "ops"]


def __getattr__(name: str) -> object:
    import importlib  # here, not at the top: a module-level import would be one more name in dir()

    if name in _DEFINED_IN:
        value = getattr(importlib.import_module(f".{_DEFINED_IN[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule exists; something it imports is missing
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
