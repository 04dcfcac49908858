"""The source distribution (what `pip install paanet_fast` builds from) and setup.py without torch.

The sdist must hold every source that the build and the tests need, the same whatever machine made
it (no leftovers of a local build), and it must be buildable where torch is absent, as in pip's
isolated build environment. Building the extension there must stop with the advice that works.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Folders whose every source file the build or the tests read, or the README sends users to.
SOURCE_FOLDERS = ("paanet_fast", "csrc", "kernels", "tests", "benchmarks", "scripts")
TOP_LEVEL_FILES = ("README.md", "LICENSE", "setup.py", "pyproject.toml", "MANIFEST.in")
# What building, installing or testing leaves in a tree: it belongs to that machine.
MACHINE_SPECIFIC_DIRS = {"__pycache__", ".hypothesis", ".benchmarks", ".pytest_cache", "build"}
MACHINE_SPECIFIC_FILES = {"_build_info.py"}
MACHINE_SPECIFIC_SUFFIXES = {".so", ".pyc", ".pyo", ".o"}
# Written by setuptools into every sdist.
GENERATED = {"PKG-INFO", "setup.cfg"}

# Importing torch fails in these subprocesses, as in an isolated build environment.
WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; "


def _is_source(relative: Path) -> bool:
    return not (set(relative.parts[:-1]) & MACHINE_SPECIFIC_DIRS or relative.name in MACHINE_SPECIFIC_FILES
                or relative.suffix in MACHINE_SPECIFIC_SUFFIXES)


def _tree_sources() -> set[str]:
    files = {name for name in TOP_LEVEL_FILES if (ROOT / name).is_file()}
    for folder in SOURCE_FOLDERS:
        files.update(str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*") if p.is_file())
    return {f for f in files if _is_source(Path(f))}


def _sdist_files(tmp_path: Path) -> set[str]:
    script = WITHOUT_TORCH + "from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with tarfile.open(tmp_path / result.stdout.splitlines()[-1]) as tar:
        names = [Path(*Path(m.name).parts[1:]) for m in tar.getmembers() if m.isfile()]
    return {str(n) for n in names if n.name not in GENERATED and not n.parts[0].endswith(".egg-info")}


def test_sdist_holds_exactly_the_sources_of_the_tree_and_builds_without_torch(tmp_path):
    sdist, tree = _sdist_files(tmp_path), _tree_sources()
    assert sorted(tree - sdist) == [], "sources the build or the tests need, missing from the sdist"
    assert sorted(sdist - tree) == [], "files of this machine (a build, a test run) in the sdist"
    # The tree walk itself found what the build compiles and what the tests import.
    for needed in ("csrc/checks.h", "csrc/cpu/cpu_common.h", "kernels/common.cuh", "kernels/mini_decoder.cu",
                   "tests/conftest.py", "tests/ops_cases.py", "tests/cuda_emulation/cuda_emulation.h"):
        assert needed in sdist


def test_building_the_extension_without_torch_stops_with_the_fix(tmp_path):
    script = WITHOUT_TORCH + ("sys.argv = ['setup.py', 'build_ext', '--build-lib', sys.argv[1]]; "
                              "import runpy; runpy.run_path('setup.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert "pip install --no-build-isolation" in result.stderr, result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []
