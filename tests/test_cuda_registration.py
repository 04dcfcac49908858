"""A build asked to compile the CUDA sources (PAANET_FAST_CUDA=1, as CI does, or nvcc and a CUDA torch
found at build time) must have compiled the kernels in and registered them for the CUDA dispatch key
of every operator, and the "cuda" backend must be offered; no GPU is needed for that.

Whether the build was asked is what setup.py recorded in paanet_fast._build_info when it built the
extension, not the environment of the test run.
"""
import os
import re
import shutil
import subprocess

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


@pytest.mark.skipif(shutil.which("readelf") is None or shutil.which("nm") is None,
                    reason="binutils (readelf, nm) are not installed")
def test_cuda_build_reaches_torch_only_through_its_stable_c_shim():
    """The CUDA kernels need neither torch's CUDA libraries nor a shared CUDA runtime (linked statically),
    and no C++ symbol of torch: so the module loads into a torch built with another CUDA major and into
    a CPU-only torch, from the stable ABI's oldest release on."""
    import paanet_fast._C as extension

    dynamic = subprocess.run(["readelf", "-d", extension.__file__], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    assert "libtorch_cpu.so" in needed, dynamic  # the stable C shim's library, and the parse found the list
    unwanted = [lib for lib in needed if re.match(r"lib(cudart|c10_cuda|torch_cuda|torch_python)\b", lib)]
    assert not unwanted, f"{extension.__file__} needs {unwanted}: it would load only next to this exact torch and CUDA"
    undefined = subprocess.run(["nm", "-D", "--undefined-only", "--demangle", extension.__file__], capture_output=True,
                               text=True, check=True).stdout.splitlines()
    unstable = [line.strip() for line in undefined if re.search(r"\b(c10|at|torch|caffe2)::", line)]
    assert not unstable, f"C++ symbols of torch (no stable ABI): {unstable[:10]}"
