"""`paanet-fast doctor` passes on this machine's backends and reports a broken one as FAIL (exit 1).

Run in-process through the command line's entry point; tests/conftest.py sets TRITON_INTERPRET=1
where there is no GPU, so the Triton backend is checked too (its operators, in the interpreter).
"""
from __future__ import annotations

import json

import torch

from broken_backends import raising_gam_multiply, wrong_mini_decoder
from paanet_fast import backends, cli, portable
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
