"""PAANet's training step beside smp's Unet on the same encoders (issue 13; issue 9 point 7).

One step (forward, loss, backward, Adam) at B=4, 256x256: PAANet with the compiled backend of
the device and PAANetLoss, smp's Unet with BCE-with-logits, both with random encoder weights.
resnet50 is the paper's encoder (torchvision's for PAANet, smp's twin of it for the Unet: the same
network); efficientnet-b0 and mit_b2 are a CNN and a transformer from smp. What PAANet's
attention costs over a U-Net is the ratio of the two providers on each encoder.

    pytest benchmarks/bench_encoders.py --benchmark-only
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

from peak_memory import peak_memory_bytes
from paanet_fast import PAANet, PAANetLoss
from paanet_fast.backends import available_backends

smp = pytest.importorskip("segmentation_models_pytorch", reason='needs the "encoders" extra')

DEVICE = torch.device(os.environ.get("PAANET_BENCH_DEVICE", "cpu"))
FAST = "cpp" if DEVICE.type == "cpu" else "cuda"
ENCODERS = ["resnet50", "efficientnet-b0", "mit_b2"]
PROVIDERS = [f"paanet-{FAST}", "smp-unet"]
BATCH = int(os.environ.get("PAANET_BENCH_BATCH", "4"))
SIZE = int(os.environ.get("PAANET_BENCH_SIZE", "256"))  # smaller values only to check that the file runs


def make_model(provider: str, encoder: str) -> tuple[nn.Module, nn.Module, dict]:
    """(model, loss, forward keyword arguments) for one provider."""
    if provider == "smp-unet":
        return smp.Unet(encoder_name=encoder, encoder_weights=None, classes=1), nn.BCEWithLogitsLoss(), {}
    return PAANet(encoder, encoder_weights=None, backend=FAST), PAANetLoss(), {"return_aux": True}


def make_step(provider: str, encoder: str):
    torch.manual_seed(0)
    model, loss_fn, kwargs = make_model(provider, encoder)
    model = model.to(DEVICE).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=DEVICE)
    target = (torch.rand(BATCH, 1, SIZE, SIZE, device=DEVICE) > 0.5).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x, **kwargs), target).backward()
        optimizer.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)

    return step


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_training_step_beside_unet(benchmark, encoder, provider):
    if provider.startswith("paanet") and FAST not in available_backends():
        pytest.skip(f"the {FAST} backend is not available here")
    step = make_step(provider, encoder)
    step()  # warm-up: allocator, Adam state
    benchmark.extra_info["peak_memory_mib"] = round(peak_memory_bytes(step, DEVICE) / 2**20, 1)
    benchmark.extra_info.update(device=str(DEVICE), batch=BATCH, size=SIZE, encoder=encoder)
    benchmark.group = f"training step, {encoder}"
    benchmark.pedantic(step, rounds=3, iterations=1)
