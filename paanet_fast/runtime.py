"""Device choice, mixed precision and timing shared by training, evaluation and prediction."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch

from .backends import resolve
from .options import AMP_MODES
_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto": the process's GPU when CUDA is available, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolved_backend(name: str, device: torch.device) -> str:
    """The operator backend that `name` ("auto" or explicit) runs on `device`."""
    return resolve(name, device).name


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast to float16/bfloat16 for `amp` "fp16"/"bf16"; a no-op for "none"."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AMP_DTYPES[amp])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so that wall-clock timings measure it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ForwardTimer:
    """Accumulates the synchronised wall-clock time of timed blocks and the images they processed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.images = 0

    @contextlib.contextmanager
    def time(self, images: int) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.images += images

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")
