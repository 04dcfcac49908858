"""PAANet's training step beside smp's Unet on other encoders (issue 13): what PAANet's attention
costs over a U-Net, on a CNN (efficientnet-b0) and a transformer (mit_b2) from smp.

The step, providers and memory measures are bench_model.py's (B=4, 256x256, Adam; PAANet with the
compiled backend of the device and PAANetLoss, smp's Unet with BCE; random encoder weights);
bench_model.py has resnet50, the paper's encoder, with both.

    pytest benchmarks/bench_encoders.py --benchmark-only
"""
from __future__ import annotations

import pytest

from bench_model import FAST, benchmark_training_step

ENCODERS = ["efficientnet-b0", "mit_b2"]


@pytest.mark.parametrize("provider", [FAST, "smp-unet"])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_training_step_beside_unet(benchmark, encoder, provider):
    pytest.importorskip("segmentation_models_pytorch", reason='the encoders are smp\'s: needs the "encoders" extra')
    benchmark_training_step(benchmark, provider, encoder, f"training step, {encoder}")
