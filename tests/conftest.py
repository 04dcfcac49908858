"""Suite-wide setup shared by every test module."""
import os

import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when paanet_fast.triton is first
# imported (by any test), so it is set here, before any test module is imported. On a machine
# without a GPU the Triton backend then runs its kernels in the interpreter on CPU tensors; on a
# GPU machine it stays unset and the kernels are compiled for the GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (.ci/run: -n 2) the workers share the machine's cores: torch's threads, one a core
# in every worker (and in every process a test starts) by default, would outnumber them, and its
# OpenMP threads wait badly for a busy core.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))

# The sanitized runs' hooks and fixture (tests/sanitized_runs.py), imported after TRITON_INTERPRET is set.
from sanitized_runs import (pytest_collection_modifyitems, pytest_runtestloop, pytest_sessionfinish,  # noqa: E402,F401
                            sanitized_run)
