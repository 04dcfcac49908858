"""Markdown table from a pytest-benchmark JSON file: median time per provider, speedups against the
reference and against torch.compile of it, and peak memory.

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


def table(data: dict) -> str:
    rows: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        case = bench["name"].split("[")[0].removeprefix("test_")
        params = dict(bench.get("params") or {})
        provider = params.pop("provider", "?")
        if params:
            case += " " + ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        rows[case][provider] = bench
    lines = [f"Machine: {_machine(data.get('machine_info', {}))}; {data.get('datetime', '')}", "",
             "| case | provider | median ms | vs reference | vs torch.compile(reference) | peak MiB |",
             "|---|---|---:|---:|---:|---:|"]
    for case, providers in rows.items():
        ref = providers.get("reference", {}).get("stats", {}).get("median")
        comp = next((b["stats"]["median"] for p, b in providers.items() if "compile" in p), None)
        for provider, bench in providers.items():
            median = bench["stats"]["median"]
            peak = bench.get("extra_info", {}).get("peak_memory_mib", "")
            vs_ref = f"{ref / median:.1f}x" if ref else ""
            vs_comp = f"{comp / median:.1f}x" if comp else ""
            lines.append(f"| {case} | {provider} | {median * 1e3:.2f} | {vs_ref} | {vs_comp} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
