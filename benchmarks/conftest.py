"""After pytest-benchmark's own tables, `pytest benchmarks/ --benchmark-only` prints the project's
comparison table (report.py): per case and provider the median, the speed-ups against the reference
and against torch.compile(reference), and peak memory."""
from __future__ import annotations

import pytest

import report


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    session = getattr(config, "_benchmarksession", None)
    timed = [bench for bench in getattr(session, "benchmarks", []) if bench]  # false: not timed (disabled)
    if not timed:
        return
    data = config.hook.pytest_benchmark_generate_json(config=config, benchmarks=timed, include_data=False,
                                                      machine_info=session.get_machine_info(), commit_info={})
    terminalreporter.write_sep("=", "paanet_fast: speed-ups and peak memory (benchmarks/report.py)")
    terminalreporter.write_line(report.table(data))
