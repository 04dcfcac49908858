"""When paanet_fast._C cannot be loaded, the reason (unavailable_reason, auto's fallback warning)
says what to do: for the stable-ABI build, upgrade a torch older than the one it targets, and never
rebuild under a supported torch; for a build from before the stable ABI, rebuild against the running
torch; with no build, build it.

Each case is faked in a fresh interpreter: a _build_info that records a build, and an extension
whose import fails. The real extension and its record are left as they are for the other tests.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REBUILD = "pip install --no-build-isolation -e ."
RUNNING = f"torch {torch.__version__} ({f'CUDA {torch.version.cuda}' if torch.version.cuda else 'CPU-only'})"

SCRIPT = textwrap.dedent("""
    import sys, types, warnings
    case = sys.argv[1]
    record = types.ModuleType("paanet_fast._build_info")
    record.CUDA_REQUESTED, record.TORCH_VERSION, record.TORCH_CUDA_VERSION = False, "2.9.1+cu128", "12.8"
    if case in ("stable", "too_old"):
        record.TORCH_VERSION, record.TORCH_CUDA_VERSION = "2.14.1+cu130", "13.0"
        record.STABLE_ABI, record.PY_LIMITED_API = ("2.10" if case == "stable" else "99.0"), "3.10"
    sys.modules["paanet_fast._build_info"] = record
    if case == "unbuilt":
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


def test_a_stable_abi_build_under_a_supported_torch_does_not_ask_for_a_rebuild():
    reason, warning = _reason_and_warning("stable")
    for text in (reason, warning):
        assert "built against torch 2.14.1+cu130 (CUDA 13.0) with stable-ABI kernels" in text, text
        assert "load into torch 2.10 and newer" in text and RUNNING in text, text
        assert "not a torch version mismatch" in text, text
        assert "rebuild" not in text and "--no-build-isolation" not in text, text
        assert "paanet_fast._C" in text, text  # the import error itself is kept


def test_a_torch_older_than_the_stable_abi_target_is_told_to_upgrade():
    reason, warning = _reason_and_warning("too_old")
    for text in (reason, warning):
        assert "need torch 99.0 or newer" in text and RUNNING in text, text
        assert 'pip install "torch>=99.0"' in text and "rebuild" not in text, text


def test_a_build_from_before_the_stable_abi_names_both_versions_and_the_rebuild_command():
    reason, warning = _reason_and_warning("mismatch")
    for text in (reason, warning):
        assert "torch 2.9.1+cu128 (CUDA 12.8)" in text, text
        assert RUNNING in text, text
        assert REBUILD in text, text
        assert "paanet_fast._C" in text, text


def test_a_missing_build_says_how_to_build_it():
    reason, warning = _reason_and_warning("unbuilt")
    for text in (reason, warning):
        assert "has not been built" in text and "`pip install -e .`" in text, text
