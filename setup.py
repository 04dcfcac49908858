"""Builds paanet_fast._C: C++ CPU kernels always, CUDA kernels whenever nvcc and a CUDA build of
torch are present. The build never looks for a GPU: build machines usually have none.

Environment switches:
  PAANET_FAST_CUDA=1|0      force (fail if impossible) or skip the CUDA kernels; default: auto.
  PAANET_FAST_PORTABLE=1    no -march=native (for binaries that travel to other machines).
  TORCH_CUDA_ARCH_LIST      respected; default "8.0;8.6;8.9;9.0+PTX" (PTX so newer cards JIT it).

Beside the built extension it writes paanet_fast/_build_info.py, which records whether this build
was asked to compile the CUDA kernels, so that the tests can require them exactly then.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools
from setuptools import setup

# pyproject.toml's SPDX `license = "MIT"` needs setuptools >= 77; older ones stop with "invalid
# pyproject.toml config: project.license", which does not say what to do. A build without isolation
# (the way to build against the installed torch) uses the environment's setuptools: a fresh venv has 65.
if int(setuptools.__version__.split(".")[0]) < 77:
    sys.exit(f"paanet_fast needs setuptools >= 77 to build, found {setuptools.__version__}: "
             'run `pip install "setuptools>=77"` first')

ROOT = Path(__file__).parent.resolve()


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

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def _nvidia_wheel_includes() -> list[str]:
    """CUDA library headers shipped by the nvidia-* wheels that a pip-installed torch depends on."""
    site = Path(torch.__file__).resolve().parent.parent
    return [str(p) for p in sorted(site.glob("nvidia/*/include")) if p.is_dir()]


def _want_cuda() -> bool:
    switch = os.environ.get("PAANET_FAST_CUDA", "auto").lower()
    possible = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if switch in ("0", "false", "no", "off"):
        return False
    if switch in ("1", "true", "yes", "on") and not possible:
        sys.exit("PAANET_FAST_CUDA=1 but no CUDA build is possible: "
                 f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME}")
    return possible


WANT_CUDA = _want_cuda()  # one decision for the extension and the build's record of it


class _BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, and the build's record next to the extension it builds."""

    def run(self) -> None:
        super().run()
        text = ('"""Written by setup.py when it built paanet_fast._C: what that build was asked to compile."""\n'
                f"CUDA_REQUESTED = {WANT_CUDA!r}  # PAANET_FAST_CUDA=1, or unset with nvcc and a CUDA torch\n"
                f"PAANET_FAST_CUDA = {os.environ.get('PAANET_FAST_CUDA', 'auto')!r}  # the switch at build time\n")
        # Beside the extension in the build folder (for wheels) and in the source tree (editable
        # installs copy only the extension itself there).
        for folder in {Path(self.get_ext_fullpath("paanet_fast._C")).parent.resolve(), ROOT / "paanet_fast"}:
            (folder / "_build_info.py").write_text(text)


def _extension():
    cpp_sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cxx_flags = ["-O3", "-fopenmp"]
    if os.environ.get("PAANET_FAST_PORTABLE", "0") != "1":
        cxx_flags.append("-march=native")
    include_dirs = [str(ROOT / "csrc")]
    if not WANT_CUDA:
        return cpp_extension.CppExtension(
            "paanet_fast._C", cpp_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.6;8.9;9.0+PTX")
    cu_sources = sorted(glob.glob("kernels/**/*.cu", recursive=True))
    return cpp_extension.CUDAExtension(
        "paanet_fast._C", cpp_sources + cu_sources,
        include_dirs=include_dirs + _nvidia_wheel_includes(),
        define_macros=[("PAANET_FAST_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
        extra_link_args=["-fopenmp"])


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": _BuildExtension.with_options(use_ninja=True)},
)
