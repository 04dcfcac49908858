"""Builds the CUDA kernel sources (kernels/*.cu) as C++ for the CPU against cuda_emulation.h.

The sources are used unchanged but for three mechanical rewrites (launch syntax, dynamic shared
memory, dispatch key). Used by tests/test_cuda_emulated.py (the kernels against the reference) and
benchmarks/gpu_static.py (their launches, through the emulation's launch log). The build is cached
under the temporary folder (TMPDIR); a rebuild takes a minute or two.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[\w, ]*>)?)<<<(.*?)>>>\(", re.S)


def emulated_source(source: str) -> tuple[str, int]:
    """`source` with its launches, dynamic shared memory and CUDA registrations made CPU code."""
    source, launches = LAUNCH.subn(r'emulation::Launch(\2)("\1", \1, ', source)
    source = re.sub(r"extern __shared__[^;]*?(\w+)\[\];", r"unsigned char* \1 = emulation::dynamic_shared;", source)
    source = source.replace("TORCH_LIBRARY_IMPL(paanet_fast, CUDA, m)", "TORCH_LIBRARY_IMPL(paanet_cuda_emulated, CPU, m)")
    return source, launches


def _write_if_changed(path: Path, text: str) -> None:
    """Keeps the file's time stamp when its text is unchanged, so that ninja does not rebuild it."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def load_emulated_kernels() -> torch._ops._OpNamespace:
    """torch.ops.paanet_cuda_emulated: the CUDA kernels registered for CPU tensors, and the launch log
    (emulation_configure, emulation_take_launches: tests/cuda_emulation/launch_log.cpp)."""
    out = Path(tempfile.gettempdir()) / "paanet_fast_cuda_emulation"
    out.mkdir(exist_ok=True)
    common = (ROOT / "kernels/common.cuh").read_text()
    for header in ("ATen/cuda/CUDAContext.h", "c10/cuda/CUDAException.h", "c10/cuda/CUDAGuard.h"):
        common = common.replace(f"#include <{header}>\n", "")
    common = common.replace("#include <ATen/ATen.h>\n", '#include <ATen/ATen.h>\n#include "cuda_emulation.h"\n', 1)
    common, launches = emulated_source(common)
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
    schemas = (ROOT / "csrc/ops.cpp").read_text().replace("TORCH_LIBRARY(paanet_fast, m)",
                                                          "TORCH_LIBRARY(paanet_cuda_emulated, m)")
    _write_if_changed(out / "schemas.cpp", schemas)
    build = out / "build"  # not torch's shared extension cache: builds of other trees would replace it
    build.mkdir(exist_ok=True)
    cpp_extension.load(
        "paanet_cuda_emulated",
        [str(s) for s in sources] + [str(out / "schemas.cpp"), str(HERE / "launch_log.cpp"),
                                     str(ROOT / "csrc/checks.cpp"), str(ROOT / "csrc/low_res.cpp")],
        extra_include_paths=[str(out), str(HERE), str(ROOT / "csrc")],
        extra_cflags=["-O1", "-std=c++20", "-fno-strict-aliasing", "-Wno-unknown-pragmas"],
        build_directory=str(build), is_python_module=False)
    return torch.ops.paanet_cuda_emulated
