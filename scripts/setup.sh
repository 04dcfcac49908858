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
# setuptools>=77 (the SPDX license string): torch 2.13 and newer bring it, but TORCH_SPEC may name an older one
# (scripts/check_torch.sh installs 2.9.1 this way), which leaves a fresh venv's 65.
$pip install -q ninja "setuptools>=77" wheel numpy
# The extension takes minutes to build (about 4 on 2 idle cores): it is built again only when what it is
# built from changed (sources, build files, torch, the build switches, the CUDA toolkit found), so
# that .ci/run after the README's first command reuses it. The key of the last build is in the venv.
stamp="$venv/.paanet_fast_build"
build_key() {
  {
    "$venv/bin/python" -c 'import torch; print(torch.__version__, torch.version.cuda)'
    echo "${TORCH_CUDA_ARCH_LIST:-} ${CUDA_HOME:-} ${CUDA_PATH:-} $(command -v nvcc || true)"
    find csrc kernels -type f -print0 | sort -z | xargs -0 sha256sum
    sha256sum setup.py pyproject.toml
  } | sha256sum | cut -d" " -f1
}
case "$(echo "${PAANET_FAST_CUDA:-auto}" | tr "[:upper:]" "[:lower:]")" in
  1|true|yes|on) want_cuda=True ;;
  0|false|no|off) want_cuda=False ;;
  *) want_cuda=either ;;  # auto decides from torch and nvcc, which are in the key
esac
key=$(build_key)
built_key="" built_cuda=""
[ -f "$stamp" ] && read -r built_key built_cuda < "$stamp"
if [ "$key" = "$built_key" ] && { [ "$want_cuda" = either ] || [ "$want_cuda" = "$built_cuda" ]; } \
    && [ -x "$venv/bin/paanet-fast" ] && compgen -G "paanet_fast/_C*.so" > /dev/null; then
  echo "paanet_fast._C is up to date with its sources, torch and the build switches: not rebuilt"
else
  rm -f "$stamp"
  # No build isolation: compile against the torch installed above (an isolated build would download a second one).
  $pip install -q --no-build-isolation -e ".[test,encoders,export]"
  built_cuda=$("$venv/bin/python" -c "from paanet_fast import _build_info; print(_build_info.CUDA_REQUESTED)")
  echo "$key $built_cuda" > "$stamp"
fi
"$venv/bin/python" - <<'PY'
import torch, paanet_fast
from paanet_fast.backends import unavailable_reason
print(f"paanet_fast {paanet_fast.__version__} on torch {torch.__version__}: backends {paanet_fast.available_backends()}")
for name in ("cpp", "cuda"):
    if name not in paanet_fast.available_backends():
        print(f"  {name} unavailable: {unavailable_reason(name) or 'built, but this machine has no device for it'}")
PY
