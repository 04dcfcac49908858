"""benchmarks/gpu_report.py, the report a lent GPU runs first (benchmarks/gpu_check.sh): its quick run
on the CPU, so that a mistake in the script shows here and not on a card's short lease, and the step
profile's attribution of time to paanet_fast's operators."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import gpu_report  # noqa: E402


def test_quick_cpu_run_writes_every_table_and_the_step_profile(tmp_path):
    code = gpu_report.main(["--device", "cpu", "--batch", "1", "--size", "64", "--encoder", "resnet18",
                            "--warmup", "1", "--repeats", "1", "--skip-compile-model",
                            "--providers", "reference", "cpp", "--out", str(tmp_path)])
    assert code == 0
    report = (tmp_path / "gpu_report.md").read_text()
    for case in ("mini_decoder forward", "mini_decoder forward+backward", "gam_multiply forward",
                 "gam_multiply forward+backward", "training step resnet18"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {case} |"))
        reference_ms, cpp_ms = (float(cell.split()[0]) for cell in row.split("|")[2:4])
        assert reference_ms > 0 and cpp_ms > 0
    assert "### Where a resnet18 training step's time goes, cpp" in report
    # Six PAAD layers: a mini_decoder and a gam_multiply call each way, the backward calls included
    # (the autograd engine's thread is profiled too).
    profile = re.search(r"(\d+\.\d+) ms of wall time a step; the host busy \(no device\) (\d+\.\d+) ms .*"
                        r"paanet_fast's operators (\d+\.\d+) ms .* (\d+) calls a step", report)
    assert profile is not None, report
    wall, busy, ours, calls = (float(g) for g in profile.groups())
    assert calls == 24
    assert 0 < ours < busy <= wall
    kernels = [line for line in report.splitlines() if line.startswith("| `aten::")]
    assert 1 <= len(kernels) <= 8
    milliseconds = [float(line.split("|")[2]) for line in kernels]
    assert milliseconds == sorted(milliseconds, reverse=True) and sum(milliseconds) <= busy


def test_outermost_keeps_only_the_calls_no_other_call_of_the_prefix_contains():
    class Event:
        def __init__(self, name, parent=None):
            self.name, self.cpu_parent = name, parent

    outer = Event("paanet_fast::mini_decoder")
    inner = Event("paanet_fast::cpp_mini_decoder", Event("aten::empty", outer))
    other = Event("aten::add")
    backward = Event("paanet_fast::mini_decoder_backward", Event("autograd::engine"))
    assert gpu_report.outermost([outer, inner, other, backward], "paanet_fast::") == [outer, backward]


@pytest.mark.parametrize("profiled, short", [
    ("void paanet::cuda::(anonymous namespace)::rows_kernel<float, float>(paanet::cuda::RowsArgs<float>)",
     "rows_kernel<float, float>"),
    ("void paanet::cuda::(anonymous namespace)::gam_region_kernel<true, c10::BFloat16>(paanet::cuda::X<c10::BFloat16>)",
     "gam_region_kernel<true, c10::BFloat16>"),
    ("forward_kernel", "forward_kernel"),  # Triton's kernels go by their function's name
    ("Memcpy DtoD (Device -> Device)", "Memcpy DtoD"),
])
def test_short_kernel_name_keeps_the_kernel_and_its_template_arguments(profiled, short):
    assert gpu_report.short_kernel_name(profiled) == short


def test_triton_host_time_without_launches_runs_the_host_code_alone():
    # Under the interpreter the triton backend takes CPU tensors; with its launches recorded nothing is
    # interpreted, so this is the host code's own time, as on a card.
    code = """
import sys
sys.path.insert(0, "benchmarks")
import gpu_report
args = gpu_report.parse_args(["--device", "cpu", "--batch", "1", "--size", "64", "--repeats", "3"])
line, = gpu_report.triton_host_without_launches(gpu_report.op_problem(args), args)
print(line)
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS.parent, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    cells = dict(re.findall(r"(mini_decoder forward\+backward|mini_decoder forward|gam_multiply forward\+backward"
                            r"|gam_multiply forward) (\S+?)[,.](?: |$)", run.stdout.strip()))
    assert len(cells) == 4, run.stdout
    times = {case: float(ms) for case, ms in cells.items()}  # a number each, no error
    assert all(0 < ms < 1000 for ms in times.values())
    assert times["mini_decoder forward+backward"] > times["mini_decoder forward"]
