#!/usr/bin/env bash
# What a user who installs from an index gets, checked from this checkout: the sdist, a wheel built
# from it (the C++ kernels, which run on any x86-64 and pick AVX2/AVX-512 loops at run time), and
# that wheel installed into a fresh venv whose PATH holds no compiler, smoke-tested there from
# outside the checkout (scripts/smoke_test.py). Builds with .venv's torch (scripts/setup.sh; VENV
# overrides it); the fresh venv gets TORCH_SPEC as setup.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build_python=${VENV:-.venv}/bin/python
torch_spec=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== sdist"
sdist=$("$build_python" -c 'import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))' \
  "$work/dist" | tail -n 1)
echo "== wheel from $sdist"
PAANET_FAST_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} "$build_python" -m pip wheel -q --no-build-isolation --no-deps \
  -w "$work/dist" "$work/dist/$sdist"
# One wheel for every Python from 3.10 and every torch from the stable-ABI target on.
wheel=$(cd "$work/dist" && ls paanet_fast-*.whl)
case "$wheel" in
  *-cp310-abi3-*) echo "wheel: $wheel" ;;
  *) echo "the wheel is not a cp310-abi3 wheel: $wheel" >&2; exit 1 ;;
esac

echo "== fresh venv, no compiler on PATH"
python3 -m venv "$work/venv"
bare_path="$work/venv/bin"  # the venv's python and pip, nothing else
for tool in cc gcc g++ c++ clang nvcc; do
  if PATH=$bare_path command -v "$tool" >/dev/null; then echo "$tool is on the bare PATH" >&2; exit 1; fi
done
# shellcheck disable=SC2086  # torch_spec is a list of requirements
env -u PYTHONPATH PATH="$bare_path" python -m pip install -q $torch_spec "$work"/dist/paanet_fast-*.whl

echo "== smoke test, from outside the checkout"
cd "$work"
env -u PYTHONPATH PATH="$bare_path" python "$root/scripts/smoke_test.py" --not-under "$root"
# The baseline loops, which a CPU without AVX2 runs.
env -u PYTHONPATH PATH="$bare_path" ATEN_CPU_CAPABILITY=default python "$root/scripts/smoke_test.py" --not-under "$root"
