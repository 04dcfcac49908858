"""`paanet-fast doctor` passes on this machine's backends and reports a broken one as FAIL (exit 1).

Run in-process through the command line's entry point; tests/conftest.py sets TRITON_INTERPRET=1
where there is no GPU, so the Triton backend is checked too (its operators, in the interpreter).
"""
from __future__ import annotations

import json

import torch

from broken_backends import raising_gam_multiply, wrong_mini_decoder
from paanet_fast import backends, cli, doctor, portable
from paanet_fast.backends import Backend


def test_doctor_passes_here_and_writes_json(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    assert report["versions"]["torch"] == torch.__version__
    checked = {c["backend"] for c in report["checks"] if c["device"] == "cpu" and not c.get("baseline")}
    assert {"portable", "cpp"} <= checked
    assert checked == {n for n in backends.available_backends() if n != "reference"}
    cpp = next(c for c in report["checks"] if c["backend"] == "cpp")
    assert cpp["passed"] and list(cpp["operators"]) == ["float32", "float16", "bfloat16"]
    assert cpp["ms"] > 0 and cpp["speedup_vs_reference"] > 0
    # The build's record, and the line that says which torch releases its kernels load into.
    from paanet_fast import _build_info
    assert report["versions"]["build"]["STABLE_ABI"] == "2.10" == _build_info.STABLE_ABI
    assert report["versions"]["kernels"] == (
        f"stable ABI: load into torch 2.10 and newer, Python 3.10 and newer (abi3); compiled against torch "
        f"{_build_info.TORCH_VERSION}")


def test_doctor_says_a_build_from_before_the_stable_abi_is_tied_to_its_torch():
    assert doctor._kernel_abi({"TORCH_VERSION": "2.9.1+cu128"}) == (
        "tied to torch 2.9.1+cu128 (a build from before the stable ABI)")
    assert doctor._kernel_abi({"missing": "paanet_fast/_build_info.py not found"}) == "no build record"


def test_doctor_reports_broken_backends_as_fail(monkeypatch, capsys, tmp_path):
    """A wrong answer (in place of cpp) and a kernel that does not launch (in place of triton)."""
    backends.available_backends()  # imports the providers now, so they cannot overwrite the test's entries
    monkeypatch.setattr(backends, "_registry", dict(backends._registry))
    backends.register(Backend("cpp", frozenset({"cpu"}), wrong_mini_decoder, portable.gam_multiply))
    backends.register(Backend("triton", frozenset({"cpu"}), portable.mini_decoder, raising_gam_multiply))
    json_path = tmp_path / "doctor.json"
    assert cli.main(["doctor", "--json", str(json_path)]) == 1
    out = capsys.readouterr().out
    assert "PASS portable on cpu" in out
    assert "FAIL cpp on cpu: " in out and "logits relative error" in out
    assert "FAIL triton on cpu: " in out and "RuntimeError: CUDA error: no kernel image" in out
    report = json.loads(json_path.read_text())
    assert report["passed"] is False
    failed = {c["backend"] for c in report["checks"] if not c.get("passed", True)}
    assert failed == {"cpp", "triton"}
    cpp = next(c for c in report["checks"] if c["backend"] == "cpp")
    assert cpp["model_float32"], "the model check should see the wrong logits too"
