"""Inference throughput of a PAANet (issue 10): images/s at batch 1 and 8, 256x256, resnet50.

Providers: PyTorch eager with the compiled backend of the CPU (cpp), onnxruntime (CPU execution
provider) on the file export_onnx writes, and torch.compile of the eager model. Each is timed on
the same input in eval mode without autograd; extra_info holds images/s and peak memory.

    pytest benchmarks/bench_inference.py --benchmark-only

PAANET_BENCH_SIZE and PAANET_BENCH_ENCODER make the case smaller, only to check that the file runs.
"""
from __future__ import annotations

import os
from typing import Callable

import pytest
import torch

from peak_memory import peak_memory_bytes
from paanet_fast import PAANet, export_onnx
from paanet_fast.backends import available_backends

PROVIDERS = ["eager-cpp", "onnxruntime", "compile-cpp"]
BATCHES = [1, 8]
SIZE = int(os.environ.get("PAANET_BENCH_SIZE", "256"))
ENCODER = os.environ.get("PAANET_BENCH_ENCODER", "resnet50")
DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> PAANet:
    if "cpp" not in available_backends():
        pytest.fail("the cpp backend is not built: the inference benchmark compares against it")
    torch.manual_seed(0)
    return PAANet(ENCODER, encoder_weights=None, backend="cpp").eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("inference") / "paanet.onnx")


def make_inference(provider: str, model: PAANet, onnx_file, x: torch.Tensor) -> Callable[[], object]:
    if provider == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        feeds = {"image": x.numpy()}
        return lambda: session.run(None, feeds)
    forward = torch.compile(model) if provider.startswith("compile") else model

    def infer() -> torch.Tensor:
        with torch.inference_mode():
            return forward(x)

    return infer


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_inference(benchmark, request, provider, batch, model):
    # Only the onnxruntime provider needs the file (its export takes minutes for resnet50).
    onnx_file = request.getfixturevalue("onnx_file") if provider == "onnxruntime" else None
    x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    infer = make_inference(provider, model, onnx_file, x)
    infer()  # warm-up: compilation, allocator, onnxruntime's first-run planning
    benchmark.group = f"inference, batch {batch}"
    benchmark.extra_info.update(batch=batch, size=SIZE, encoder=ENCODER, device=str(DEVICE),
                                peak_memory_mib=round(peak_memory_bytes(infer, DEVICE) / 2**20, 1))
    benchmark.pedantic(infer, rounds=5, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = round(batch / benchmark.stats.stats.median, 2)
