#!/usr/bin/env bash
# Builds paanet_fast against one torch release in its own venv and runs the test suite there:
#   bash scripts/check_torch.sh 2.9.1                 # the whole suite
#   bash scripts/check_torch.sh 2.6.0 tests/test_x.py # some files only (pytest arguments)
# Prints one line at the end: the versions, pytest's counts and the time. Not part of CI (.ci/run):
# PyPI's x86-64 torch wheels are CUDA builds, a few GB of downloads per version.
#
# Where: $PAANET_FAST_CHECK_DIR (default ~/.cache/paanet_fast/torch-VERSION) holds the venv and a copy
# of this checkout (its tracked and untracked, not ignored files), so that the build never overwrites
# the paanet_fast/_C*.so of the checkout's own venv. Safe to run again: it reuses the venv.
# The build is the C++ kernels only (PAANET_FAST_CUDA=0, minutes faster); the CUDA tests then skip
# or run through the CPU emulation of the .cu code, as on any machine without a GPU.
# torchvision: 0.(minor + 15).patch, the release paired with the torch (TORCHVISION=... to override).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: bash scripts/check_torch.sh TORCH_VERSION [pytest arguments]}
shift
IFS=. read -r major minor patch <<<"$version"
[ "$major" = 2 ] && [ -n "$minor" ] || { echo "check_torch.sh: expected a torch 2.x version such as 2.9.1, got $version" >&2; exit 2; }
torchvision=${TORCHVISION:-0.$((minor + 15)).${patch:-0}}
dir=${PAANET_FAST_CHECK_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/paanet_fast/torch-$version}

bash scripts/copy_checkout.sh "$dir/src"
VENV="$dir/venv" TORCH_SPEC="torch==$version torchvision==$torchvision" PAANET_FAST_CUDA=0 \
    bash "$dir/src/scripts/setup.sh"

cd "$dir/src"
python="$dir/venv/bin/python"
versions=$("$python" -c 'import importlib.metadata as m, torch, torchvision
try: triton = "triton " + m.version("triton")
except m.PackageNotFoundError: triton = "no triton"
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {triton}")')
start=$SECONDS
set +e
"$python" -m pytest -q -p no:cacheprovider "${@:-tests}" | tee "$dir/pytest.log"
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^=* ?[0-9]+ (passed|failed|skipped|error)' "$dir/pytest.log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
echo "check_torch: $versions: ${summary:-no pytest summary (exit $rc)}; $((SECONDS - start)) s on $(date -u +%F) (log: $dir/pytest.log)"
exit "$rc"
