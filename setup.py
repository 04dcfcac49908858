"""Builds paanet_fast._C: C++ CPU kernels always, CUDA kernels whenever nvcc and a CUDA build of
torch are present. The build never looks for a GPU: build machines usually have none.

Environment switches:
  PAANET_FAST_CUDA=1|0      force (fail if impossible) or skip the CUDA kernels; default: auto.
  TORCH_CUDA_ARCH_LIST      respected; default: the GPUs present at build time (torch's choice), or
                            without one sm_75 to the newest this nvcc knows (the first of each
                            major, which runs on its later minors, and the newest), with PTX for
                            the newest (so that newer cards JIT it).

The module uses only PyTorch's stable ABI (csrc/stable_api.h) and Python's limited API, so one
build loads into every torch from TORCH_TARGET on and every Python from PY_LIMITED_API on (a
cp310-abi3 wheel). pip's isolated build therefore works: it compiles against the torch that
[build-system] requires brings, whatever torch the user runs. `pip install --no-build-isolation`
compiles against the installed torch instead, without downloading a second one. Without torch
(a build without isolation before torch is installed) it still gives the metadata and the sdist;
a build then stops with that advice.

Beside the built extension it writes paanet_fast/_build_info.py, which records whether this build
was asked to compile the CUDA kernels (so that the tests can require them exactly then) and the torch
and CUDA versions it compiled against (named when the extension fails to load under another torch),
and the CUDA architectures it compiled for (paanet_fast.cuda_arch reads them to skip a card they miss).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# pyproject.toml's SPDX `license = "MIT"` needs setuptools >= 77; older ones stop with "invalid
# pyproject.toml config: project.license", which does not say what to do. A build without isolation
# (the way to build against the installed torch) uses the environment's setuptools: a fresh venv has 65.
if int(setuptools.__version__.split(".")[0]) < 77:
    sys.exit(f"paanet_fast needs setuptools >= 77 to build, found {setuptools.__version__}: "
             'run `pip install "setuptools>=77"` first')

ROOT = Path(__file__).parent.resolve()

# The oldest torch whose stable ABI the module targets: it then loads into every torch from there on.
TORCH_TARGET = (2, 10)
# The oldest Python whose limited API the module targets (requires-python): one cp310-abi3 wheel.
PY_LIMITED_API = (3, 10)
# Py_LIMITED_API in upper-case hex, as torch's cpp_extension also defines it for py_limited_api
# extensions: an identical redefinition is silent, a differently spelled one warns in every file.
STABLE_MACROS = [("TORCH_TARGET_VERSION", f"0x{TORCH_TARGET[0]:02x}{TORCH_TARGET[1]:02x}000000000000"),
                 ("Py_LIMITED_API", f"0x{PY_LIMITED_API[0]:02X}{PY_LIMITED_API[1]:02X}0000")]


def _real_cuda_home() -> str | None:
    """The CUDA folder of the nvcc on PATH, seeing through wrapper scripts (nvcc reports _HERE_)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "-v", "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"_HERE_=(\S+)", out.stdout + out.stderr)
    return str(Path(match.group(1)).parent) if match else None


# torch.utils.cpp_extension reads CUDA_HOME when it is imported, so resolve it first.
if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
    _home = _real_cuda_home()
    if _home:
        os.environ["CUDA_HOME"] = _home

try:
    import torch
    from torch.utils import cpp_extension
except ModuleNotFoundError:  # enough for the metadata and the sdist; a build stops (_NeedsTorch)
    torch = cpp_extension = None

NO_TORCH_MESSAGE = (
    "paanet_fast compiles its kernels against a torch at build time, and there is no torch here (a build "
    "without isolation uses the environment's packages). Either let pip bring one (drop "
    "--no-build-isolation):\n    pip install -e .\nor install torch first and build against it:\n"
    "    pip install torch\n    pip install --no-build-isolation -e .")


class _NeedsTorch(build_ext):
    """The build command where torch is missing: stop with the fix instead of compiling nothing."""

    def run(self) -> None:
        sys.exit(NO_TORCH_MESSAGE)


def _want_cuda() -> bool:
    switch = os.environ.get("PAANET_FAST_CUDA", "auto").lower()
    possible = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if switch in ("0", "false", "no", "off"):
        return False
    if switch in ("1", "true", "yes", "on") and not possible:
        sys.exit("PAANET_FAST_CUDA=1 but no CUDA build is possible: "
                 f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME}")
    return possible


def _build_info_text() -> str:
    return ('"""Written by setup.py when it built paanet_fast._C: what that build was asked to compile."""\n'
            f"CUDA_REQUESTED = {WANT_CUDA!r}  # PAANET_FAST_CUDA=1, or unset with nvcc and a CUDA torch\n"
            f"PAANET_FAST_CUDA = {os.environ.get('PAANET_FAST_CUDA', 'auto')!r}  # the switch at build time\n"
            f"TORCH_VERSION = {torch.__version__!r}  # the torch whose headers and libraries it used\n"
            f"STABLE_ABI = {'.'.join(map(str, TORCH_TARGET))!r}  # stable-ABI kernels: they load into this torch and newer\n"
            f"PY_LIMITED_API = {'.'.join(map(str, PY_LIMITED_API))!r}  # the abi3 module loads into this Python and newer\n"
            f"TORCH_CUDA_VERSION = {torch.version.cuda!r}  # that torch's CUDA (None: a CPU-only torch)\n"
            f"CUDA_ARCH_LIST = {CUDA_ARCH_LIST!r}  # compiled for (SASS, +PTX: also PTX); None: no CUDA kernels\n")


def _known_to_torch(arch: str) -> bool:
    # torch reads the list from the environment only; the caller sets the final list afterwards.
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch
    try:
        return bool(cpp_extension._get_cuda_arch_flags())
    except ValueError:  # "Unknown CUDA arch": one this torch has no name for (8.8 in torch 2.14)
        return False


def _cuda_arch_list() -> str | None:
    """The CUDA architectures this build compiles for, as "7.5;8.0;9.0+PTX", or None without CUDA kernels.

    An explicit TORCH_CUDA_ARCH_LIST wins; otherwise torch's own choice, the GPUs present, where
    there are any; with none (torch would fail) sm_75 (Turing: T4, RTX 20xx) to the newest that this
    nvcc and torch know: the first of each major and the newest, which also goes as PTX for the
    cards after it. Read back from torch's -gencode flags, so that the record says what is compiled.
    """
    if not WANT_CUDA:
        return None
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.device_count() == 0:
        nvcc = os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
        listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
        known = sorted({(int(n[:-1]), int(n[-1])) for n in re.findall(r"compute_(\d+)\b", listed)})
        known = [arch for arch in known if arch >= (7, 5) and _known_to_torch(f"{arch[0]}.{arch[1]}")]
        # Machine code for sm_XY runs on every X.Z with Z >= Y: the lowest minor of each major covers
        # the family (each arch compiled adds minutes to the build).
        first_of_major: dict[int, tuple[int, int]] = {}
        for arch in known:
            first_of_major.setdefault(arch[0], arch)
        chosen = sorted(set(first_of_major.values()) | {known[-1]})
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(f"{major}.{minor}" for major, minor in chosen) + "+PTX"
    compiled: dict[tuple[int, int, str], bool] = {}  # (major, minor, suffix such as "a") -> with PTX
    for code, major, minor, suffix in re.findall(r"code=(sm|compute)_(\d+)(\d)([a-z]?)\b",
                                                 " ".join(cpp_extension._get_cuda_arch_flags())):
        key = (int(major), int(minor), suffix)
        compiled[key] = compiled.get(key, False) or code == "compute"
    return ";".join(f"{major}.{minor}{suffix}" + ("+PTX" if ptx else "")
                    for (major, minor, suffix), ptx in sorted(compiled.items()))


if torch is not None:
    WANT_CUDA = _want_cuda()  # one decision for the extension and the build's record of it
    CUDA_ARCH_LIST = _cuda_arch_list()

    class _BuildExtension(cpp_extension.BuildExtension):
        """torch's BuildExtension, and the build's record next to the extension it builds."""

        def run(self) -> None:
            super().run()
            # A build from before the stable ABI left _C.cpython-3XY-*.so in the source tree, and
            # Python prefers that name to _C.abi3.so: it would shadow the new build.
            built = Path(self.get_ext_fullpath("paanet_fast._C")).name
            for stale in (ROOT / "paanet_fast").glob("_C.*.so"):
                if stale.name != built:
                    stale.unlink()
            # Beside the extension in the build folder (for wheels) and in the source tree (editable
            # installs copy only the extension itself there).
            for folder in {Path(self.get_ext_fullpath("paanet_fast._C")).parent.resolve(), ROOT / "paanet_fast"}:
                (folder / "_build_info.py").write_text(_build_info_text())


def _extension():
    cpp_sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    # No -march=native: the binary runs on any x86-64, and the CPU kernel loops are compiled for
    # AVX2 and AVX-512 too and picked at run time (csrc/cpu/kernels.h), as fast as a native build.
    # No -fopenmp: the kernels' parallel loops run on ATen's thread pool, behind the stable ABI.
    cxx_flags = ["-O3"]
    include_dirs = [str(ROOT / "csrc")]
    if not WANT_CUDA:
        return cpp_extension.CppExtension(
            "paanet_fast._C", cpp_sources, include_dirs=include_dirs, define_macros=STABLE_MACROS,
            py_limited_api=True, extra_compile_args={"cxx": cxx_flags})
    cu_sources = sorted(glob.glob("kernels/**/*.cu", recursive=True))
    extension = cpp_extension.CUDAExtension(
        "paanet_fast._C", cpp_sources + cu_sources,
        include_dirs=include_dirs,
        define_macros=STABLE_MACROS + [("PAANET_FAST_WITH_CUDA", "1")], py_limited_api=True,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]})
    # CUDAExtension links the shared CUDA runtime and torch's CUDA libraries, with which the module
    # would load only into a torch built with this CUDA major, and never into a CPU-only torch. The
    # kernels reach torch through the stable C shim (torch_cpu; the current stream is looked up at run
    # time: kernels/runtime.cuh) and bring their own CUDA runtime, linked statically (it needs dl and
    # rt), so that only the driver is needed from the system.
    unwanted = {"cudart", "c10_cuda", "torch_cuda"}
    extension.libraries = [lib for lib in extension.libraries if lib not in unwanted] + ["cudart_static", "dl", "rt"]
    return extension


if torch is None:
    setup(ext_modules=[Extension("paanet_fast._C", sources=[])], cmdclass={"build_ext": _NeedsTorch})
else:
    setup(ext_modules=[_extension()], cmdclass={"build_ext": _BuildExtension.with_options(use_ninja=True)},
          options={"bdist_wheel": {"py_limited_api": f"cp{PY_LIMITED_API[0]}{PY_LIMITED_API[1]}"}})
