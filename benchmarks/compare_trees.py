"""Times the same benchmarks on two builds of paanet_fast in one session, alternating, to see whether a
change made the compiled kernels slower: each round runs the selection once per tree, in separate
processes (both builds register the same operators, so they cannot share one), with that tree first
on PYTHONPATH. Prints, per case, the median over the rounds of each run's median and their range.

    python benchmarks/compare_trees.py BEFORE_TREE AFTER_TREE --rounds 5 -- benchmarks/bench_ops.py -k cpp

Each tree must hold a built paanet_fast (its _C next to the package, as `pip install -e .` or
`python setup.py build_ext --inplace` leaves it). The benchmark files themselves are taken from
AFTER_TREE, so both builds run the same cases.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_once(tree: Path, pytest_args: list[str], cwd: Path, out: Path) -> dict[str, float]:
    """Each case's median time in ms for one pytest-benchmark run against `tree`'s build."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]))
    # -P: `python -m` would put the working folder (AFTER_TREE) first on sys.path, before PYTHONPATH.
    probe = subprocess.run([sys.executable, "-P", "-c", "import torch, paanet_fast, paanet_fast._C; print(paanet_fast.__file__)"],
                           env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(probe).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"compare_trees: {tree} does not provide paanet_fast (imported {probe})")
    subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only",
                    f"--benchmark-json={out}", *pytest_args], env=env, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    return {b["name"]: b["stats"]["median"] * 1e3 for b in data["benchmarks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])  # after --: the benchmark selection, for pytest
    pytest_args = argv[split + 1:]
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    medians: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, tree in trees.items():
                times = run_once(tree, pytest_args, args.after.resolve(), Path(tmp) / f"{name}-{r}.json")
                for case, ms in times.items():
                    medians[name].setdefault(case, []).append(ms)
                print(f"round {r + 1}/{args.rounds} {name}: " + ", ".join(f"{c} {t:.2f}" for c, t in times.items()),
                      flush=True)
    print(f"\n| case | before ({args.before}) | after ({args.after}) |\n|---|---:|---:|")
    for case in medians["after"]:
        cells = []
        for name in trees:
            values = medians[name].get(case, [])
            cells.append(f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]" if values else "-")
        print(f"| {case} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
