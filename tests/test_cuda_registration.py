"""CI builds the CUDA sources on a machine without a GPU: the kernels must be compiled in and
registered for the CUDA dispatch key of every operator, and the "cuda" backend must be offered."""
import os

import pytest
import torch

OPS = ("mini_decoder", "mini_decoder_backward", "gam_multiply", "gam_multiply_backward")

pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true",
    reason="only under CI (CI=true), which builds the CUDA sources; a local build may skip them")


@pytest.mark.parametrize("op", OPS)
def test_cuda_kernel_is_registered(op):
    import paanet_fast._C  # noqa: F401  (loading the extension runs its registrations)

    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"paanet_fast::{op}", "CUDA"), (
        f"paanet_fast::{op} has no CUDA kernel: was the extension built without nvcc or with PAANET_FAST_CUDA=0?")


def test_cuda_backend_is_registered():
    """Registered even without a GPU (available_backends() lists it only where a GPU is present)."""
    from paanet_fast.backends import resolve

    assert resolve("cuda", torch.device("cuda")).name == "cuda"
