"""When paanet_fast._C cannot be loaded, the reason (unavailable_reason, auto's fallback warning)
names the torch it was built against, the running torch and the command that rebuilds it.

The mismatch is faked in a fresh interpreter: a _build_info that records another torch, and an
extension whose import fails, as a build against another torch fails with an undefined symbol.
The real extension and its record are left as they are for the other tests.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REBUILD = "pip install --no-build-isolation -e ."

SCRIPT = textwrap.dedent("""
    import sys, types, warnings
    record = types.ModuleType("paanet_fast._build_info")
    record.CUDA_REQUESTED, record.TORCH_VERSION, record.TORCH_CUDA_VERSION = False, "2.9.1+cu128", "12.8"
    sys.modules["paanet_fast._build_info"] = record
    if sys.argv[1] == "unbuilt":
        sys.modules["paanet_fast._build_info"] = None  # importing it fails, as before any build
    sys.modules["paanet_fast._C"] = None  # importing the extension fails

    import torch
    from paanet_fast import PAANet
    from paanet_fast.backends import available_backends, unavailable_reason

    assert "cpp" not in available_backends()
    print("REASON", unavailable_reason("cpp"))
    model = PAANet("resnet18", encoder_weights=None, growth=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(torch.randn(1, 3, 33, 35))
    print("WARNING", " | ".join(str(w.message) for w in caught if "portable" in str(w.message)))
""")


def _reason_and_warning(case: str) -> tuple[str, str]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("REASON", "WARNING")))
    return lines["REASON"], lines["WARNING"]


def test_a_build_against_another_torch_names_both_versions_and_the_rebuild_command():
    reason, warning = _reason_and_warning("mismatch")
    running = f"torch {torch.__version__} ({f'CUDA {torch.version.cuda}' if torch.version.cuda else 'CPU-only'})"
    for text in (reason, warning):
        assert "torch 2.9.1+cu128 (CUDA 12.8)" in text, text
        assert running in text, text
        assert REBUILD in text, text
        assert "paanet_fast._C" in text, text  # the import error itself is kept


def test_a_missing_build_says_how_to_build_it():
    reason, warning = _reason_and_warning("unbuilt")
    for text in (reason, warning):
        assert "has not been built" in text and REBUILD in text, text
