"""Issue 18: a model trained from scratch validates with batch-norm statistics of its current weights.

smp's efficientnet keeps running averages with momentum 0.01: after a few epochs from scratch they
still described the first weights, eval-mode predictions were all background and the validation
DSC stayed 0.0000 while the loss fell. Training now recomputes the statistics before validating.
The check, for one encoder of each family after two steps: on the training images, the saved
model's eval-mode logits follow the logits that the batch's own statistics give, in pattern and in
scale (on a handful of other images the statistics of so few samples would differ by chance).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from fake_datasets import single_thread  # noqa: F401 (fixture)
from paanet_fast.checkpoint import load_checkpoint, model_from_checkpoint
from paanet_fast.data import image_to_tensor
from paanet_fast.data.synthetic import generate_sample
from paanet_fast.train import TrainConfig, train

NEEDS_SMP = pytest.mark.skipif(importlib.util.find_spec("segmentation_models_pytorch") is None,
                               reason='needs the "encoders" extra (scripts/setup.sh installs it, so CI runs these)')
# torchvision's ResNet; smp's efficientnet (BN momentum 0.01), torchvision-based mobilenet and
# transformer (batch norm in its decoder only); timm's through smp's "tu-" names.
ENCODERS = ["resnet18", *(pytest.param(name, marks=NEEDS_SMP)
                          for name in ("efficientnet-b0", "mobilenet_v2", "mit_b0", "tu-resnet18"))]
SIZE = 32


def _images(ids: list[str], seed: int) -> torch.Tensor:
    return torch.stack([image_to_tensor(generate_sample(seed, int(i.rsplit("_", 1)[1]), SIZE)[0]) for i in ids])


def _with_batch_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode (no dropout, no stochastic depth), but batch norm normalises with the batch's statistics."""
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train()
            module.momentum = 0.0  # leave the running averages as they are
    return model


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("encoder", ENCODERS)
def test_eval_mode_predictions_follow_the_batch_statistics_after_a_short_run(tmp_path, encoder):
    config = TrainConfig(dataset="synthetic", out=str(tmp_path / "run"), num_images=10, image_size=SIZE, batch_size=4,
                         epochs=1, lr=1e-3, encoder=encoder, encoder_weights="none", backend="cpp", workers=0)
    train(config)  # 8 training images: 2 steps
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    x = _images(state["split"]["train"], config.seed)  # as validation sees images: not augmented
    with torch.no_grad():
        running_statistics = model_from_checkpoint(state, backend="cpp").eval()(x).flatten()
        batch_statistics = _with_batch_statistics(model_from_checkpoint(state, backend="cpp"))(x).flatten()
    correlation = torch.corrcoef(torch.stack([running_statistics, batch_statistics]))[0, 1].item()
    scale = (running_statistics.std() / batch_statistics.std()).item()
    assert correlation > 0.8 and 0.5 < scale < 2, (correlation, scale)
    foreground = (running_statistics > 0).float().mean().item()
    assert 0 < foreground < 1, foreground  # not all one class
