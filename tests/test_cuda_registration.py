"""A build asked to compile the CUDA sources (PAANET_FAST_CUDA=1, as CI does, or nvcc and a CUDA torch
found at build time) must have compiled the kernels in and registered them for the CUDA dispatch key
of every operator, and the "cuda" backend must be offered; no GPU is needed for that.

Whether the build was asked is what setup.py recorded in paanet_fast._build_info when it built the
extension, not the environment of the test run.
"""
import os

import pytest
import torch

OPS = ("mini_decoder", "mini_decoder_backward", "gam_multiply", "gam_multiply_backward")


def _cuda_requested() -> bool:
    try:
        from paanet_fast import _build_info
    except ImportError:
        pytest.fail("paanet_fast/_build_info.py is missing: the extension was built by an older setup.py; rebuild "
                    "it (pip install --no-build-isolation -e .)")
    return _build_info.CUDA_REQUESTED or os.environ.get("CI") == "true"


@pytest.fixture(autouse=True)
def cuda_was_requested():
    if not _cuda_requested():
        pytest.skip("this build of paanet_fast._C was not asked to compile CUDA kernels (no nvcc or a CPU-only torch "
                    "at build time, or PAANET_FAST_CUDA=0)")


@pytest.mark.parametrize("op", OPS)
def test_cuda_kernel_is_registered(op):
    import paanet_fast._C  # noqa: F401  (loading the extension runs its registrations)

    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"paanet_fast::{op}", "CUDA"), (
        f"paanet_fast::{op} has no CUDA kernel although the build was asked for them: a stale extension "
        "(rebuild it) or a build that silently left the CUDA sources out")


def test_cuda_backend_is_registered():
    """Registered even without a GPU (available_backends() lists it only where a GPU is present)."""
    from paanet_fast.backends import resolve

    assert resolve("cuda", torch.device("cuda")).name == "cuda"
