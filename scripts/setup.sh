#!/usr/bin/env bash
# Creates .venv (or $VENV), installs torch and builds paanet_fast with its C++ and, where nvcc and a
# CUDA build of torch are present, CUDA extensions. Safe to run again: it reuses what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
venv=${VENV:-.venv}
torch_spec=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip
# shellcheck disable=SC2086  # torch_spec is a list of requirements
$pip install -q $torch_spec
$pip install -q ninja "setuptools>=77" wheel numpy
# No build isolation: the extension must compile against the torch installed above.
$pip install -q --no-build-isolation -e ".[test,encoders,export]"
"$venv/bin/python" - <<'PY'
import torch, paanet_fast
from paanet_fast.backends import unavailable_reason
print(f"paanet_fast {paanet_fast.__version__} on torch {torch.__version__}: backends {paanet_fast.available_backends()}")
for name in ("cpp", "cuda"):
    if name not in paanet_fast.available_backends():
        print(f"  {name} unavailable: {unavailable_reason(name) or 'built, but this machine has no device for it'}")
PY
