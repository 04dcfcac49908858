"""The CUDA kernels (kernels/*.cu) compiled as setup.py compiles them, device code only, with -Xptxas -v."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from .compiled import Kernel, cache_dir, demangle, kernel_key, sass_of, split_signature

ROOT = Path(__file__).resolve().parent.parent.parent


def nvcc_command(source: Path, archs: list[int], output: Path) -> list[str]:
    """nvcc as torch.utils.cpp_extension runs it for setup.py's CUDAExtension, device code only (a fatbin)."""
    from torch.utils import cpp_extension
    includes = ([str(ROOT / "csrc")] + cpp_extension.include_paths(device_type="cuda")
                + [sysconfig.get_paths()["include"]])
    from cuda_emulation.build import stable_macros  # tests/ is on the path (gpu_static.py)
    defines = ([f"{name}={value}" for name, value in stable_macros()]
               + ["PAANET_FAST_WITH_CUDA=1", "TORCH_API_INCLUDE_EXTENSION_H", "TORCH_EXTENSION_NAME=_C"])
    return (["nvcc", "--fatbin", str(source), "-o", str(output)] + [f"-I{i}" for i in includes]
            + [f"-D{d}" for d in defines] + cpp_extension.COMMON_NVCC_FLAGS + ["--compiler-options", "-fPIC"]
            + ["-O3", "-lineinfo"]  # setup.py's extra_compile_args["nvcc"]
            + [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs] + ["-std=c++20", "-Xptxas", "-v"])


def _sources_hash(archs: list[int]) -> str:
    digest = hashlib.sha256(repr(archs).encode())
    for path in sorted([*ROOT.glob("kernels/*"), *ROOT.glob("csrc/*.h")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def start_cuda_compile(archs: list[int], out: Path) -> list[tuple[Path, Path, subprocess.Popen | None]]:
    """Starts nvcc for every kernels/*.cu (in the background); (fatbin, ptxas log, process or None if cached)."""
    folder = cache_dir(out) / f"cuda-{_sources_hash(archs)}"
    folder.mkdir(exist_ok=True)
    jobs = []
    for source in sorted((ROOT / "kernels").glob("*.cu")):
        fatbin, log = folder / f"{source.stem}.fatbin", folder / f"{source.stem}.ptxas.txt"
        if fatbin.exists() and log.exists():
            jobs.append((fatbin, log, None))
            continue
        with open(log, "w") as sink:
            process = subprocess.Popen(nvcc_command(source, archs, fatbin), stdout=sink, stderr=subprocess.STDOUT)
        jobs.append((fatbin, log, process))
    return jobs


def parse_ptxas(log: str) -> dict[tuple[int, str], dict[str, int]]:
    """(sm, mangled name) -> registers, spill stores and loads (bytes), static shared memory, from -Xptxas -v."""
    found: dict[tuple[int, str], dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        if (m := re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", line)):
            current = found.setdefault((int(m.group(2)), m.group(1)), {"smem": 0})
        elif current is not None and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            current.update(spill_stores=int(m.group(1)), spill_loads=int(m.group(2)))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m.group(1))
            if (s := re.search(r"(\d+) bytes smem", line)):
                current["smem"] = int(s.group(1))
    return found


def finish_cuda_compile(jobs) -> list[Kernel]:
    kernels = []
    for fatbin, log, process in jobs:
        if process is not None and process.wait() != 0:
            fatbin.unlink(missing_ok=True)
            sys.exit(f"gpu_static: nvcc failed, see {log}:\n" + log.read_text()[-3000:])
        ptxas = parse_ptxas(log.read_text())
        sass = sass_of(fatbin)
        names = demangle(sorted({name for _, name in ptxas}))
        for (sm, mangled), info in sorted(ptxas.items()):
            base, template, params = split_signature(names[mangled])
            shown = re.sub(r"\(anonymous namespace\)::|\b[A-Za-z_]\w*::|\s", "", template)
            kernels.append(Kernel("cuda", sm, base, shown, kernel_key(base, template, params), info["registers"],
                                  info.get("spill_stores", 0), info["smem"], sass[(sm, mangled)],
                                  "double" not in template))
    return kernels

