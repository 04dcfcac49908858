"""The benchmarks' comparison table: ratios and memory columns (report.py), printed after
pytest-benchmark's own tables by `pytest benchmarks/ --benchmark-only` (benchmarks/conftest.py)."""
from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import report  # noqa: E402

pytest_plugins = ["pytester"]


def _bench(provider: str, median_s: float, **extra) -> dict:
    return {"name": f"test_training_step[{provider}]", "params": {"provider": provider},
            "stats": {"median": median_s}, "extra_info": extra}


def test_table_gives_ratios_to_the_reference_and_to_torch_compile_and_both_memory_measures():
    data = {"benchmarks": [_bench("reference", 6.10, peak_memory_mib=1540.0, process_peak_mib=3100.5),
                           _bench("compile-reference", 4.71, peak_memory_mib=1500.0, process_peak_mib=3900.0),
                           _bench("compile-cpp", 1.0, peak_memory_mib=600.0, process_peak_mib=2000.0),
                           _bench("cpp", 1.50, peak_memory_mib=622.0, process_peak_mib=2139.0)]}
    lines = report.table(data).splitlines()
    assert lines[2] == ("| case | provider | median ms | vs reference | vs torch.compile(reference) | "
                        "peak MiB (growth over the call) | process peak MiB (fresh process) |")
    rows = {line.split(" | ")[1]: line for line in lines[4:]}
    assert rows["cpp"] == "| training_step | cpp | 1500.00 | 4.1x | 3.1x | 622.0 | 2139.0 |"
    assert rows["reference"] == "| training_step | reference | 6100.00 | 1.0x | 0.8x | 1540.0 | 3100.5 |"
    # Only compile-reference is torch.compile(reference): another compiled provider is not its stand-in.
    assert rows["compile-cpp"] == "| training_step | compile-cpp | 1000.00 | 6.1x | 4.7x | 600.0 | 2000.0 |"


def test_table_without_a_reference_or_a_second_memory_measure_leaves_those_out():
    data = {"benchmarks": [_bench("paanet-cpp", 2.0, peak_memory_mib=10.0), _bench("smp-unet", 1.0)]}
    lines = report.table(data).splitlines()
    assert lines[2].endswith("| peak MiB (growth over the call) |") and "process peak" not in lines[2]
    assert lines[4:] == ["| training_step | paanet-cpp | 2000.00 |  |  | 10.0 |",
                         "| training_step | smp-unet | 1000.00 |  |  |  |"]


BENCH_FILE = textwrap.dedent("""
    import pytest

    @pytest.mark.parametrize("provider", ["reference", "compile-reference", "fast"])
    def test_case(benchmark, provider):
        benchmark.extra_info["peak_memory_mib"] = {"reference": 30.0, "compile-reference": 20.0, "fast": 1.5}[provider]
        benchmark.pedantic(lambda: sum(range({"reference": 20000, "compile-reference": 10000, "fast": 10}[provider])),
                           rounds=3, iterations=1)
""")


@pytest.fixture
def bench_folder(pytester, monkeypatch):
    # Run from a pytest-xdist worker (.ci/run), the inner pytest would take itself for one too, and
    # pytest-benchmark turns itself off in a worker.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    for name in ("conftest.py", "report.py"):
        shutil.copy(BENCHMARKS / name, pytester.path / name)
    pytester.makepyfile(bench_tiny=BENCH_FILE)
    return pytester


def test_benchmark_only_prints_the_table_after_pytest_benchmarks_tables(bench_folder):
    result = bench_folder.runpytest_subprocess("--benchmark-only", "-o", "python_files=bench_*.py", "-p",
                                               "no:cacheprovider")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    theirs, ours = out.find("benchmark: 3 tests"), out.find("paanet_fast: speed-ups and peak memory")
    assert 0 <= theirs < ours, out
    rows = {line.split(" | ")[1]: line for line in out[ours:].splitlines() if line.startswith("| case | ")}
    assert set(rows) == {"provider", "reference", "compile-reference", "fast"}
    assert rows["reference"].startswith("| case | reference | ") and " | 1.0x | " in rows["reference"]
    assert rows["fast"].endswith(" | 1.5 |")


def test_disabled_benchmarks_print_no_table(bench_folder):
    result = bench_folder.runpytest_subprocess("--benchmark-disable", "-o", "python_files=bench_*.py", "-p",
                                               "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert "paanet_fast: speed-ups" not in result.stdout.str()


def test_a_fresh_process_reports_its_own_peak_not_its_parents(tmp_path):
    """ru_maxrss survives exec on Linux: a child of a large parent would report the parent's size."""
    import peak_memory

    script = tmp_path / "small.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(BENCHMARKS)!r})\nimport torch\n"
                      "from peak_memory import print_process_peak\nprint_process_peak(torch.device('cpu'))\n")
    child_alone = peak_memory.fresh_process_peak_mib(script, [])
    ballast = torch.ones(2 * int(child_alone) * 2**20, dtype=torch.uint8)  # resident: written, not just reserved
    child_of_large_parent = peak_memory.fresh_process_peak_mib(script, [])
    del ballast
    assert child_of_large_parent < 1.5 * child_alone, (child_alone, child_of_large_parent)
