"""Builds the CUDA kernel sources (kernels/*.cu) as C++ for the CPU against cuda_emulation.h.

The sources are used unchanged but for three mechanical rewrites (launch syntax, dynamic shared
memory, dispatch key), and cuda_emulation.h stands in for kernels/runtime.cuh (the device guard,
stream and launch check). Used by tests/test_cuda_emulated.py (the kernels against the reference),
tests/test_cuda_sanitized.py (the same under ThreadSanitizer and AddressSanitizer) and
benchmarks/gpu_static.py (their launches, through the emulation's launch log). The build is cached
under the temporary folder (TMPDIR); a rebuild takes a minute or two.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[\w, ]*>)?)<<<(.*?)>>>\(", re.S)


def emulated_source(source: str) -> tuple[str, int]:
    """`source` with its launches, dynamic shared memory and CUDA registrations made CPU code."""
    source, launches = LAUNCH.subn(r"emulation::Launch(\2).template run<\1>(", source)
    source = re.sub(r"extern __shared__[^;]*?(\w+)\[\];", r"unsigned char* \1 = emulation::dynamic_shared;", source)
    source = source.replace("STABLE_TORCH_LIBRARY_IMPL(paanet_fast, CUDA, m)",
                            "STABLE_TORCH_LIBRARY_IMPL(paanet_cuda_emulated, CPU, m)")
    return source, launches


def stable_macros() -> list[tuple[str, str]]:
    """setup.py's STABLE_MACROS (TORCH_TARGET_VERSION, Py_LIMITED_API), read from its TORCH_TARGET and
    PY_LIMITED_API, so that the kernels are compiled here against the same stable surface."""
    setup = (ROOT / "setup.py").read_text()
    torch_major, torch_minor = map(int, re.search(r"^TORCH_TARGET = \((\d+), (\d+)\)", setup, re.M).groups())
    py_major, py_minor = map(int, re.search(r"^PY_LIMITED_API = \((\d+), (\d+)\)", setup, re.M).groups())
    return [("TORCH_TARGET_VERSION", f"0x{torch_major:02x}{torch_minor:02x}000000000000"),
            ("Py_LIMITED_API", f"0x{py_major:02X}{py_minor:02X}0000")]


def _write_if_changed(path: Path, text: str) -> None:
    """Keeps the file's time stamp when its text is unchanged, so that ninja does not rebuild it.
    Written beside and renamed into place: the sanitized builds run side by side with each other and
    with the suite's own (tests/sanitized_runs.py), and no compiler may read another's half-written file."""
    if not path.exists() or path.read_text() != text:
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)


# A build takes a minute or two; a lock older than this was left by a build that was killed.
STALE_LOCK_SECONDS = 15 * 60
# cpp_extension before torch 2.14 waits while the lock file exists (FileBaton); later ones hold an
# OS lock on a file that stays, which the kernel releases when its holder dies. Only the former
# needs stale locks removed: removing the latter's file would let a second build in beside the first.
LOCK_FILE_BLOCKS = hasattr(cpp_extension, "FileBaton")


def _remove_stale_lock(lock: Path) -> None:
    """cpp_extension waits without end for the lock of a build that was killed (Ctrl-C during a
    test run): a lock that old is removed, with a warning, instead of hanging the tests."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_SECONDS:
        warnings.warn(f"removing {lock}, left {age / 60:.0f} minutes ago by a build that did not finish")
        lock.unlink(missing_ok=True)


# With this variable set to a key of SANITIZERS, the kernels are built with those sanitizers (in a
# separate build folder), for a process started with the runtime preloaded (tests/test_cuda_sanitized.py).
SANITIZER_VARIABLE = "PAANET_FAST_EMULATION_SANITIZER"
# name: (-fsanitize= value, the runtime to preload). AddressSanitizer comes with
# UndefinedBehaviorSanitizer (misaligned 16-byte packs, 32-bit index overflow), as is usual.
SANITIZERS = {"thread": ("thread", "libtsan.so"), "address": ("address,undefined", "libasan.so")}


def compiler_library(name: str) -> Path:
    """The shared library `name` (a sanitizer's runtime, libstdc++.so) of the compiler that
    cpp_extension builds with."""
    compiler = os.environ.get("CXX", "c++")
    found = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found) or not os.path.exists(found):  # the bare name comes back when it is missing
        raise RuntimeError(f"{compiler} has no {name}: install the package that brings it (Debian: libgcc-12-dev "
                           f"brings the sanitizers' runtimes: libtsan2, libasan8, libubsan1)")
    return Path(found).resolve()


def load_emulated_kernels() -> torch._ops._OpNamespace:
    """torch.ops.paanet_cuda_emulated: the CUDA kernels registered for CPU tensors, and the launch log
    (emulation_configure, emulation_take_launches), the fast divider (emulation_divide), the order
    blocks run in (emulation_ran_blocks) and the sanitizers' probes (emulation_neighbours,
    emulation_pack_load), from tests/cuda_emulation/launch_log.cpp."""
    sanitizer = os.environ.get(SANITIZER_VARIABLE, "")
    if sanitizer not in ("", *SANITIZERS):
        raise ValueError(f"{SANITIZER_VARIABLE}={sanitizer!r}: expected one of {tuple(SANITIZERS)} or nothing")
    if sanitizer:
        # This process runs with the runtime preloaded; the compiler and linker that cpp_extension
        # starts must not (they crash under it).
        os.environ.pop("LD_PRELOAD", None)
    out = Path(tempfile.gettempdir()) / "paanet_fast_cuda_emulation"
    out.mkdir(exist_ok=True)
    common = (ROOT / "kernels/common.cuh").read_text()
    if '#include "runtime.cuh"\n' not in common:
        raise RuntimeError("kernels/common.cuh no longer includes runtime.cuh: the emulation's rewrite needs updating")
    common, launches = emulated_source(common.replace('#include "runtime.cuh"\n', '#include "cuda_emulation.h"\n'))
    sources = []
    for kernel_file in sorted((ROOT / "kernels").glob("*.cu")):
        text, found = emulated_source(kernel_file.read_text())
        launches += found
        if "<<<" in text:
            raise RuntimeError(f"{kernel_file.name}: a launch the emulation's rewrite does not recognise")
        sources.append(out / f"{kernel_file.stem}.cpp")
        _write_if_changed(sources[-1], text)
    if launches == 0:
        raise RuntimeError("no kernel launch found in kernels/: the emulation's rewrite needs updating")
    _write_if_changed(out / "common.cuh", common)
    schemas = (ROOT / "csrc/ops.cpp").read_text().replace("STABLE_TORCH_LIBRARY(paanet_fast, m)",
                                                          "STABLE_TORCH_LIBRARY(paanet_cuda_emulated, m)")
    if "paanet_cuda_emulated" not in schemas:
        raise RuntimeError("csrc/ops.cpp: the emulation's rewrite of the library name needs updating")
    _write_if_changed(out / "schemas.cpp", schemas)
    # Not torch's shared extension cache: builds of other trees would replace it.
    build = out / (f"build-{sanitizer}" if sanitizer else "build")
    sanitize = [f"-fsanitize={SANITIZERS[sanitizer][0]}", "-fno-sanitize-recover=all", "-g",
                "-fno-omit-frame-pointer"] if sanitizer else []
    build.mkdir(exist_ok=True)
    if LOCK_FILE_BLOCKS:
        _remove_stale_lock(build / "lock")
    cpp_extension.load(
        "paanet_cuda_emulated",
        [str(s) for s in sources] + [str(out / "schemas.cpp"), str(HERE / "launch_log.cpp"),
                                     str(ROOT / "csrc/checks.cpp"), str(ROOT / "csrc/low_res.cpp")],
        extra_include_paths=[str(out), str(HERE), str(ROOT / "csrc")],
        extra_cflags=["-O1", "-std=c++20", "-fno-strict-aliasing", "-Wno-unknown-pragmas"]
        + [f"-D{name}={value}" for name, value in stable_macros()] + sanitize,
        extra_ldflags=sanitize[:1], build_directory=str(build), is_python_module=False)
    return torch.ops.paanet_cuda_emulated
