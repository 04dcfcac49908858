"""Markdown table of benchmark results: median time per provider, speedups against the reference
and against torch.compile of it, and peak memory (both measures, where a benchmark has both).

`pytest benchmarks/ --benchmark-only` prints it after pytest-benchmark's own tables (conftest.py);
from a saved JSON file:

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json
"""
from __future__ import annotations

import json
import platform
import sys
from collections import defaultdict
from pathlib import Path


def _machine(info: dict) -> str:
    cpu = info.get("cpu", {}).get("brand_raw") or platform.processor() or "unknown CPU"
    cores = info.get("cpu", {}).get("count", "?")
    return f"{cpu}, {cores} cores, Python {info.get('python_version', '?')}"


# extra_info keys of the memory measures, and their column titles (see peak_memory.py).
MEMORY_COLUMNS = {"peak_memory_mib": "peak MiB (growth over the call)",
                  "process_peak_mib": "process peak MiB (fresh process)"}


def table(data: dict) -> str:
    """The comparison table of pytest-benchmark's JSON data (its "benchmarks" and "machine_info")."""
    rows: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        case = bench["name"].split("[")[0].removeprefix("test_")
        params = dict(bench.get("params") or {})
        provider = params.pop("provider", "?")
        if params:
            case += " " + ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        rows[case][provider] = bench
    memory = [key for key in MEMORY_COLUMNS if any(key in b.get("extra_info", {}) for b in data["benchmarks"])]
    lines = [f"Machine: {_machine(data.get('machine_info', {}))}; {data.get('datetime', '')}", "",
             "| case | provider | median ms | vs reference | vs torch.compile(reference) | "
             + "".join(f"{MEMORY_COLUMNS[key]} | " for key in memory),
             "|---|---|---:|---:|---:|" + "---:|" * len(memory)]
    for case, providers in rows.items():
        ref = providers.get("reference", {}).get("stats", {}).get("median")
        comp = providers.get("compile-reference", {}).get("stats", {}).get("median")
        for provider, bench in providers.items():
            median = bench["stats"]["median"]
            vs_ref = f"{ref / median:.1f}x" if ref else ""
            vs_comp = f"{comp / median:.1f}x" if comp else ""
            peaks = "".join(f"{bench.get('extra_info', {}).get(key, '')} | " for key in memory)
            lines.append(f"| {case} | {provider} | {median * 1e3:.2f} | {vs_ref} | {vs_comp} | {peaks}")
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
