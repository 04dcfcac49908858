"""Operator functions of deliberately broken backends (for the first-use check and doctor tests):
each is the portable backend with one fault a real kernel could have."""
from __future__ import annotations

import torch

from paanet_fast import portable


def raising_gam_multiply(features, gam, reverse):
    raise RuntimeError("CUDA error: no kernel image is available for execution on the device")


def wrong_mini_decoder(features, weight, bias, size):
    logits, _ = portable.mini_decoder(features, weight, bias, size)
    logits = logits * 1.001  # a 0.1 % error: far beyond float32's tolerance, invisible in a mask
    return logits, torch.sigmoid(logits)


def wrong_gradient_gam_multiply(features, gam, reverse):
    """Right products, but G gets no gradient (detached): only the backward pass can tell."""
    return portable.gam_multiply(features, gam.detach(), reverse)


def nan_gam_multiply(features, gam, reverse):
    """One unwritten element (NaN): a max-norm error alone would miss it (NaN compares false)."""
    products = portable.gam_multiply(features, gam, reverse)
    products[0] = products[0].clone()
    products[0].view(-1)[-1] = float("nan")
    return products
