"""Architecture coverage without a GPU: what the build compiles for by default, and how `auto` and an
explicit backend="cuda" treat a card that the build has no code for (the card faked)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from paanet_fast import backends, cuda_arch
from paanet_fast.backends import Backend

ROOT = Path(__file__).resolve().parent.parent
OLD_DEFAULT = "8.0;8.6;8.9;9.0+PTX"  # setup.py's list before sm_75 was covered


@pytest.mark.parametrize("capability,arch_list,runs", [
    ((7, 5), OLD_DEFAULT, False),        # a T4 against the old default: no SASS, PTX only for newer cards
    ((7, 5), "7.5;8.0;9.0+PTX", True),
    ((8, 6), "8.0;9.0+PTX", True),       # sm_80 SASS runs on every 8.x from 8.0
    ((8, 0), "8.6;9.0+PTX", False),      # ...but not on an older minor
    ((9, 0), "8.0;8.6", False),          # nor on another major, without PTX
    ((10, 0), OLD_DEFAULT, True),        # compute_90 PTX is JIT-compiled on newer majors
    ((12, 1), "7.5;8.0;9.0;10.0;11.0;12.0;12.1+PTX", True),
    ((9, 0), "9.0a", True),              # arch-specific code: exactly its capability
    ((10, 0), "9.0a+PTX", False),
])
def test_runs_on(capability, arch_list, runs):
    assert cuda_arch.runs_on(capability, arch_list) is runs


def test_an_unrecognised_arch_list_entry_is_an_error():
    with pytest.raises(ValueError, match=r"unrecognised CUDA architecture 'sm_75'"):
        cuda_arch.runs_on((7, 5), "sm_75;8.0")


def _fake_backend(name: str) -> Backend:
    def never(*args):
        raise AssertionError(f"the fake {name} backend computes nothing")
    return Backend(name, frozenset({"cuda"}), never, never)


@pytest.fixture
def fake_card(monkeypatch):
    """A CUDA device of a chosen capability; cuda and triton backends registered (fakes); the build
    compiled for the old default list."""
    card = SimpleNamespace(major=7, minor=5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: card)
    monkeypatch.setattr(cuda_arch, "BUILT_ARCH_LIST", OLD_DEFAULT)
    monkeypatch.setattr(backends, "_registry", {**backends._registry, "cuda": _fake_backend("cuda"),
                                                "triton": _fake_backend("triton")})
    monkeypatch.setattr(backends, "_unavailable", {})
    monkeypatch.setattr(backends, "_warned_fallback", set())
    return card


MESSAGE = (r"built for the architectures 8\.0;8\.6;8\.9;9\.0\+PTX, none of which runs on cuda "
           r"\(compute capability 7\.5\)")


def test_auto_skips_cuda_on_a_card_the_build_cannot_run(fake_card):
    with pytest.warns(RuntimeWarning, match=MESSAGE + r".*TORCH_CUDA_ARCH_LIST=7\.5; auto skips the cuda backend"):
        assert backends.resolve(None, torch.device("cuda")).name == "triton"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning
        assert backends.resolve("auto", torch.device("cuda")).name == "triton"


def test_auto_goes_on_to_portable_and_says_why(fake_card, monkeypatch):
    monkeypatch.setattr(backends, "_registry", {n: b for n, b in backends._registry.items() if n != "triton"})
    monkeypatch.setattr(backends, "_unavailable", {"triton": "triton is not installed (test)"})
    with pytest.warns(RuntimeWarning) as record:
        assert backends.resolve(None, torch.device("cuda")).name == "portable"
    messages = [str(w.message) for w in record]
    assert len(messages) == 2, messages  # the skipped card, then the fallback naming both reasons
    assert "auto skips the cuda backend" in messages[0]
    assert "no compiled backend for cuda tensors (cuda: paanet_fast: the CUDA kernels were built" in messages[1]
    assert "triton: triton is not installed (test)" in messages[1]


def test_naming_cuda_on_that_card_raises_the_message(fake_card):
    with pytest.raises(RuntimeError, match=MESSAGE):
        backends.resolve("cuda", torch.device("cuda"))


@pytest.mark.parametrize("capability,arch_list", [((8, 6), OLD_DEFAULT), ((7, 5), "7.5;8.0;9.0+PTX"),
                                                  ((7, 5), None)])  # None: an older build's record
def test_cuda_is_used_where_the_build_runs(fake_card, monkeypatch, capability, arch_list):
    fake_card.major, fake_card.minor = capability
    monkeypatch.setattr(cuda_arch, "BUILT_ARCH_LIST", arch_list)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve(None, torch.device("cuda")).name == "cuda"
        assert backends.resolve("cuda", torch.device("cuda")).name == "cuda"


def test_without_a_gpu_there_is_nothing_to_refuse(monkeypatch):
    """The backend resolves as before (the missing GPU shows at the first launch); no driver is asked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cuda_arch, "BUILT_ARCH_LIST", OLD_DEFAULT)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: pytest.fail("asked the driver"))
    assert cuda_arch.unsupported_reason(torch.device("cuda")) is None


@pytest.mark.parametrize("capability,computes", [((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)])
def test_bfloat16_arithmetic_from_the_capability(fake_card, capability, computes):
    fake_card.major, fake_card.minor = capability
    assert cuda_arch.computes_bfloat16(torch.device("cuda")) is computes
    assert cuda_arch.computes_bfloat16(torch.device("cpu"))


# --- setup.py's default list ---------------------------------------------------------------------

_PROBE = """
import runpy, setuptools, sys
setuptools.setup = lambda **kwargs: None  # setup.py's module code only: no build
print(runpy.run_path(sys.argv[1])["CUDA_ARCH_LIST"])
"""


def _build_arch_list(tmp_path: Path, arch_list: str | None, nvcc_lists: list[str]) -> str:
    """CUDA_ARCH_LIST as setup.py decides it, with an nvcc that lists `nvcc_lists` and no GPU visible."""
    if torch.version.cuda is None:
        pytest.skip("needs a CUDA build of torch (setup.py compiles no CUDA kernels without one)")
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text("#!/bin/sh\n" + "".join(f"echo {a}\n" for a in nvcc_lists))
    nvcc.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "CUDA_PATH")}
    env.update(CUDA_HOME=str(tmp_path), PAANET_FAST_CUDA="1", CUDA_VISIBLE_DEVICES="")
    if arch_list is not None:
        env["TORCH_CUDA_ARCH_LIST"] = arch_list
    result = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT / "setup.py")], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_default_covers_sm75_to_the_newest_without_a_gpu(tmp_path):
    """The first of each major from 7.5 and the newest (with PTX); nvcc's archs below 7.5 and those
    this torch does not know (a made-up 13.5) are left out."""
    listed = ["compute_70", "compute_75", "compute_80", "compute_86", "compute_89", "compute_90", "compute_100",
              "compute_103", "compute_120", "compute_121", "compute_135"]
    assert _build_arch_list(tmp_path, None, listed) == "7.5;8.0;9.0;10.0;12.0;12.1+PTX"


def test_an_explicit_list_is_recorded_as_torch_compiles_it(tmp_path):
    assert _build_arch_list(tmp_path, "Turing;8.6", ["compute_75"]) == "7.5+PTX;8.6"
