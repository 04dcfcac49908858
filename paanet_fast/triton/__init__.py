"""The "triton" backend: Triton kernels for mini_decoder and gam_multiply (design section 2).

Layers, thinnest first: `*_kernels.py` (the @triton.jit kernels, `_math.py` their shared math),
`host.py` (allocation and launches: forward + backward, 2 + 3 for mini_decoder and 1 + 2 for
gam_multiply, no other device work), `library.py` (torch.library ops paanet_fast::triton_* with
autograd, traceable by torch.compile).

Devices: CUDA tensors; CPU tensors only when TRITON_INTERPRET=1 was set before this package was
imported (the Triton interpreter: slow, for tests). Inputs: float32, float16, bfloat16
(accumulated in float32) and float64 (in float64), 1 to 4 scales.

"auto" on CUDA tensors tries the compiled CUDA kernels first and uses Triton only when the
extension's CUDA kernels are missing (not built, or no nvcc at build time). Both implement the
same low-resolution formulation; no GPU measurement on this project yet says which is faster,
and the CUDA kernels need no JIT compilation or autotuning on first use. The order lives in
paanet_fast.backends; change it there if benchmarks/gpu_report.py shows Triton ahead.

Importing this package registers the backend, or records why it is unavailable.
"""
from ..backends import Backend, mark_unavailable, register

try:
    import triton  # noqa: F401  (the probe: everything below needs it)
except ImportError as exc:
    mark_unavailable("triton", f"triton is not installed or failed to import ({exc})")
else:
    from ._runtime import INTERPRET
    from .library import gam_multiply, mini_decoder

    register(Backend("triton", frozenset({"cuda", "cpu"} if INTERPRET else {"cuda"}), mini_decoder, gam_multiply))
