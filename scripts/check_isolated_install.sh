#!/usr/bin/env bash
# The plain install a user types, checked from this checkout: in a fresh venv that already holds an
# older torch than the one the build gets, `pip install -e .` with pip's build isolation (the build
# environment brings its own torch through [build-system] requires), then one synthetic epoch with
# the console script on the compiled backend. The stable-ABI kernels must load under the user's
# torch; the CUDA kernels must be built where nvcc is present.
#   bash scripts/check_isolated_install.sh
# OLD_TORCH_SPEC picks the user's torch (default: 2.13.0 with its torchvision). The copy of the
# checkout is built, not the checkout itself: an editable build writes paanet_fast/_C*.so in place.
# TORCH_CUDA_ARCH_LIST defaults to one architecture here, to keep CI's build short.
# Disk: the venv with the older CUDA torch and pip's build environment with its own torch are about
# 5.5 GB each, both under TMPDIR at once (11.6 GB at the peak, measured); pip keeps no cache of the
# wheels (PIP_NO_CACHE_DIR: about 4 GB of them come from PyPI). Fails at once, saying so, with less
# than NEED_FREE_GB (default 12) free there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
# ===: PyPI's 2.13.0 (a CUDA build), not the local 2.13.0+cpu that == also matches: PyPI's torchvision
# 0.28.0 needs torch's CUDA libraries.
old_torch_spec=${OLD_TORCH_SPEC:-"torch===2.13.0 torchvision===0.28.0"}
export PIP_NO_CACHE_DIR=${PIP_NO_CACHE_DIR:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
need_gb=${NEED_FREE_GB:-12}
free_gb=$(df -Pk "$work" | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }')
if awk -v free="$free_gb" -v need="$need_gb" 'BEGIN { exit !(free < need) }'; then
  echo "check_isolated_install: only $free_gb GB free under $(dirname "$work"), it needs about $need_gb GB" \
    "(a venv with $old_torch_spec and pip's isolated build environment with a second torch, about" \
    "5.5 GB each): free some space, or point TMPDIR elsewhere (NEED_FREE_GB overrides the figure)" >&2
  exit 1
fi

echo "== fresh venv with $old_torch_spec"
"$python" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086  # a list of requirements
"$venv_python" -m pip install -q $old_torch_spec
user_torch=$("$venv_python" -c 'import torch; print(torch.__version__)')

echo "== pip install -e . (isolated build) of a copy of the checkout, next to torch $user_torch"
bash scripts/copy_checkout.sh "$work/src"
(cd "$work/src" && TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-2} \
  "$venv_python" -m pip install -q -e .)

echo "== the build and the user's torch"
cd "$work"
"$venv_python" - "$user_torch" <<'PY'
import os, sys
import torch
import paanet_fast
from paanet_fast import _build_info
from paanet_fast.backends import available_backends, unavailable_reason

assert torch.__version__ == sys.argv[1], f"pip replaced the user's torch {sys.argv[1]} with {torch.__version__}"
assert "cpp" in available_backends(), f"the compiled kernels did not load: {unavailable_reason('cpp')}"
assert _build_info.TORCH_VERSION != torch.__version__, "the build did not use an isolated torch"
want_cuda = os.environ.get("PAANET_FAST_CUDA", "auto") not in ("0", "false", "no", "off")
if want_cuda and _build_info.TORCH_CUDA_VERSION is not None:
    assert _build_info.CUDA_REQUESTED and _build_info.CUDA_ARCH_LIST, "nvcc is here but no CUDA kernels were built"
print(f"paanet_fast from {paanet_fast.__file__}: kernels built against torch {_build_info.TORCH_VERSION} "
      f"(stable ABI {_build_info.STABLE_ABI}, CUDA kernels for {_build_info.CUDA_ARCH_LIST}), "
      f"loaded under torch {torch.__version__}")
PY

echo "== one synthetic epoch on the compiled backend"
"$work/venv/bin/paanet-fast" train --dataset synthetic --epochs 1 --num-images 16 --image-size 64 --batch-size 4 \
  --encoder resnet18 --backend cpp --device cpu --workers 0 --out "$work/run"
test -f "$work/run/best.pt" || { echo "the epoch wrote no best.pt" >&2; exit 1; }
echo "check_isolated_install: passed (torch $user_torch)"
