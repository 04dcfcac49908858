"""One PAANet training step (forward, PAANetLoss, backward, Adam) per provider, with two memory measures.

Providers: the reference backend, torch.compile of the reference model, the portable backend
(plain PyTorch, any device), the compiled backend of the device (cpp on CPU), and smp's Unet with
BCE on the same encoder (the architecture a user would pick instead; needs the "encoders" extra;
smp's resnet50 is torchvision's network). resnet50, B=4,
256x256 on CPU (as issue 3 asks); set PAANET_BENCH_DEVICE=cuda to run it on a GPU
(benchmarks/gpu_report.py is the fuller GPU report). PAANET_BENCH_BATCH, PAANET_BENCH_SIZE and
PAANET_BENCH_ENCODER make the case smaller, only to check that the file runs.

Memory (see peak_memory.py): extra_info["peak_memory_mib"] is the growth over one step in the
benchmark's process; extra_info["process_peak_mib"] is the peak of a fresh process that builds the
provider's model and runs two steps (runtime, model, Adam state included), what a user's machine
must hold. This file is also that process's script: `python bench_model.py --process-peak NAME`.
bench_encoders.py runs the same step on other encoders.

    pytest benchmarks/bench_model.py --benchmark-only
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn as nn

from peak_memory import fresh_process_peak_mib, peak_memory_bytes, print_process_peak
from paanet_fast import PAANet, PAANetLoss
from paanet_fast.backends import available_backends

DEVICE = torch.device(os.environ.get("PAANET_BENCH_DEVICE", "cpu"))
FAST = "cpp" if DEVICE.type == "cpu" else "cuda"
BATCH = int(os.environ.get("PAANET_BENCH_BATCH", "4"))
SIZE = int(os.environ.get("PAANET_BENCH_SIZE", "256"))
ENCODER = os.environ.get("PAANET_BENCH_ENCODER", "resnet50")

# (model, forward, loss) of one provider for an encoder name, the model on DEVICE in train mode;
# forward(x) -> what loss takes.
Provider = Callable[[str], tuple[nn.Module, Callable, nn.Module]]


def _paanet(backend: str, compiled: bool = False) -> Provider:
    def build(encoder: str):
        model = PAANet(encoder, encoder_weights=None, backend=backend).to(DEVICE).train()
        forward = torch.compile(model) if compiled else model
        return model, functools.partial(forward, return_aux=True), PAANetLoss()
    return build


def _smp_unet(encoder: str):
    import segmentation_models_pytorch as smp  # the "encoders" extra, needed by this provider only

    model = smp.Unet(encoder_name=encoder, encoder_weights=None, classes=1).to(DEVICE).train()
    return model, model, nn.BCEWithLogitsLoss()


# Adding a provider is one entry here; its name is what the tables show.
PROVIDERS: dict[str, Provider] = {
    "reference": _paanet("reference"),
    "compile-reference": _paanet("reference", compiled=True),
    "portable": _paanet("portable"),
    FAST: _paanet(FAST),
    "smp-unet": _smp_unet,
}


def make_step(provider: str, encoder: str = ENCODER) -> Callable[[], None]:
    torch.manual_seed(0)
    model, forward, loss_fn = PROVIDERS[provider](encoder)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=DEVICE)
    target = (torch.rand(BATCH, 1, SIZE, SIZE, device=DEVICE) > 0.5).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(forward(x), target).backward()
        optimizer.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)

    return step


def benchmark_training_step(benchmark, provider: str, encoder: str, group: str) -> None:
    """Time `provider`'s step on `encoder` and record both memory measures (see the module's docstring)."""
    if provider == FAST and FAST not in available_backends():
        pytest.skip(f"the {FAST} backend is not available here")
    if provider == "smp-unet":
        pytest.importorskip("segmentation_models_pytorch", reason='smp\'s Unet needs the "encoders" extra')
    step = make_step(provider, encoder)
    step()  # warm-up: compilation, allocator, Adam state
    benchmark.extra_info["peak_memory_mib"] = round(peak_memory_bytes(step, DEVICE) / 2**20, 1)
    benchmark.extra_info["process_peak_mib"] = round(
        fresh_process_peak_mib(Path(__file__), ["--process-peak", provider, "--encoder", encoder]), 1)
    benchmark.extra_info.update(device=str(DEVICE), batch=BATCH, size=SIZE, encoder=encoder)
    benchmark.group = group
    benchmark.pedantic(step, rounds=3, iterations=1)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_training_step(benchmark, provider):
    benchmark_training_step(benchmark, provider, ENCODER, "training step")


def _measure_process_peak(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Two training steps of one provider, then this process's peak.")
    parser.add_argument("--process-peak", required=True, choices=list(PROVIDERS), metavar="PROVIDER")
    parser.add_argument("--encoder", default=ENCODER)
    args = parser.parse_args(argv)
    step = make_step(args.process_peak, args.encoder)
    step()  # the first builds the Adam state (and compiles, for torch.compile)
    step()
    print_process_peak(DEVICE)


if __name__ == "__main__":
    _measure_process_peak(sys.argv[1:])
