"""The command line starts fast: help and argument errors come before torch is imported (issue 18:
`paanet-fast --help` took 6 s), and the OpenMP wait policy is set without restarting the process."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
# Modules that take seconds to import; `python -X importtime` names every module it imports.
HEAVY = re.compile(r"\|\s+(torch|numpy|PIL|matplotlib|albumentations)(\.|$)", re.MULTILINE)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "paanet_fast", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env or ENV)


@pytest.mark.parametrize("args, status, expected", [
    (["--help"], 0, "{doctor,train,evaluate,predict,export}"),
    (["train", "--help"], 0, "a run of about"),
    (["predict", "--help"], 0, "Exit status"),
    (["evaluate", "--help"], 0, "--checkpoint"),
    (["export", "--help"], 0, "--opset"),
    (["train", "--dataset", "nope", "--out", "x"], 2, "invalid choice: 'nope'"),
    (["train", "--out", "x"], 2, "--dataset is required"),
    (["train", "--dataset", "synthetic", "--data-root", "d", "--out", "x"], 2, "--data-root is not used"),
    (["predict", "--onnx", "m.onnx", "--device", "cuda", "a.png", "--out", "x"], 2, "--onnx runs on the CPU"),
    (["predict", "--checkpoint", "c.pt", "a.png", "--out", "x", "--batch-size", "0"], 2, "must be a positive integer"),
])
def test_help_and_argument_errors_do_not_import_torch(args, status, expected):
    result = _run(*args)
    assert result.returncode == status, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert expected in " ".join((result.stdout + "\n".join(lines)).split())
    assert HEAVY.findall(result.stderr) == []


def test_the_openmp_wait_policy_is_set_before_torch_loads_without_a_restart(tmp_path):
    """libgomp prints its settings when it is loaded (OMP_DISPLAY_ENV): once, with the passive policy."""
    env = {k: v for k, v in ENV.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_DISPLAY_ENV"] = "TRUE"
    result = subprocess.run([sys.executable, "-m", "paanet_fast", "evaluate", "--checkpoint", str(tmp_path / "no.pt"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=env)
    assert result.returncode == 2 and "no.pt" in result.stderr  # torch was imported: the checkpoint was looked for
    output = result.stdout + result.stderr
    assert output.count("OPENMP DISPLAY ENVIRONMENT BEGIN") == 1, output
    assert re.search(r"OMP_WAIT_POLICY = 'PASSIVE'", output), output


def test_the_package_imports_its_names_when_they_are_used():
    script = ("import sys, paanet_fast; lazy = 'torch' not in sys.modules; "
              "from paanet_fast import PAANet, PAANetOutput, PAANetLoss, available_backends, export_onnx, metrics, ops; "
              "print(lazy, sorted(paanet_fast.__all__) == sorted(set(dir(paanet_fast)) & set(paanet_fast.__all__)), "
              "PAANet.__module__, metrics.__name__, callable(export_onnx), "
              "callable(paanet_fast.export.dynamic_image_shapes), paanet_fast.backends.resolve.__module__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=ENV)
    assert result.stdout.split() == ["True", "True", "paanet_fast.model", "paanet_fast.metrics", "True", "True",
                                     "paanet_fast.backends"], result.stderr
    with pytest.raises(AttributeError, match="has no attribute 'nonexistent'"):
        import paanet_fast

        paanet_fast.nonexistent


def test_dir_of_the_package_lists_its_public_names_only():
    """Not the helpers of the lazy import (issue 25: dir() showed Any, annotations, importlib)."""
    script = "import paanet_fast; print(*[n for n in dir(paanet_fast) if not n.startswith('_')])"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=ENV)
    import paanet_fast

    assert result.stdout.split() == sorted(paanet_fast.__all__), result.stderr
