"""One PAANet training step (forward, PAANetLoss, backward, Adam) per provider, with peak memory.

Providers: the reference backend, torch.compile of the reference model, the portable backend
(plain PyTorch, any device) and the compiled backend of the device (cpp on CPU). resnet50, B=4,
256x256 on CPU (as issue 3 asks); set PAANET_BENCH_DEVICE=cuda to run it on a GPU
(benchmarks/gpu_report.py is the fuller GPU report).

    pytest benchmarks/bench_model.py --benchmark-only
"""
from __future__ import annotations

import os

import pytest
import torch

from peak_memory import peak_memory_bytes
from paanet_fast import PAANet, PAANetLoss
from paanet_fast.backends import available_backends

DEVICE = torch.device(os.environ.get("PAANET_BENCH_DEVICE", "cpu"))
FAST = "cpp" if DEVICE.type == "cpu" else "cuda"
PROVIDERS = ["reference", "compile-reference", "portable", FAST]
BATCH, SIZE = 4, 256


def make_step(provider: str):
    torch.manual_seed(0)
    backend = "reference" if provider.endswith("reference") else provider
    model = PAANet("resnet50", encoder_weights=None, backend=backend).to(DEVICE).train()
    forward = torch.compile(model) if provider.startswith("compile") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = PAANetLoss()
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=DEVICE)
    target = (torch.rand(BATCH, 1, SIZE, SIZE, device=DEVICE) > 0.5).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(forward(x, return_aux=True), target).backward()
        optimizer.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)

    return step


@pytest.mark.parametrize("provider", PROVIDERS)
def test_training_step(benchmark, provider):
    if provider == FAST and FAST not in available_backends():
        pytest.skip(f"the {FAST} backend is not available here")
    step = make_step(provider)
    step()  # warm-up: compilation, allocator, Adam state
    benchmark.extra_info["peak_memory_mib"] = round(peak_memory_bytes(step, DEVICE) / 2**20, 1)
    benchmark.extra_info.update(device=str(DEVICE), batch=BATCH, size=SIZE, encoder="resnet50")
    benchmark.group = "training step"
    benchmark.pedantic(step, rounds=3, iterations=1)
