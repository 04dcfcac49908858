#!/usr/bin/env bash
# Builds ONE paanet_fast wheel against the torch of the running venv, then installs that same file,
# unrebuilt, next to other torch releases and runs the test suite there (issue 23: one stable-ABI
# build for every torch from the minimum on):
#   bash scripts/check_wheel.sh 2.10.0 2.11.0 2.12.1 2.13.0        # the whole suite, four torches
#   bash scripts/check_wheel.sh 2.12.1 -- tests/test_ops_errors.py  # some files only (pytest arguments)
#   WHEEL=dist/paanet_fast-...whl bash scripts/check_wheel.sh 2.13.0  # a wheel built before: no build
#   bash scripts/check_wheel.sh --prepare 2.10.0 2.11.0             # only make the venvs (downloads)
# (pytest runs with -q: one more -q among the arguments drops the counts from its last line.)
# Prints one line per torch: its versions, the wheel file and its sha256, pytest's counts, the time
# and the date; exits non-zero if any torch failed (the build, _C loading, a fallback, a test).
# Not part of CI (.ci/run): PyPI's x86-64 torch wheels are CUDA builds, a few GB per version.
#
# The wheel: `pip wheel --no-build-isolation --no-deps` in a copy of this checkout (setup.py writes
# paanet_fast/_build_info.py into its source tree), with the build switches of the environment
# (PAANET_FAST_CUDA, TORCH_CUDA_ARCH_LIST), into $WHEEL_DIR (default $root/dist/; emptied of wheels first).
#
# Where: $PAANET_FAST_CHECK_ROOT (default ~/.cache/paanet_fast/wheel) holds torch-VERSION/venv, one venv
# per torch, reused when run again. Its torch comes from PyPI with its torchvision, 0.(minor+15).patch
# (TORCHVISION_<major>_<minor>=... overrides one, e.g. TORCHVISION_2_12=0.27.0), and the triton its
# metadata names. When that torch's CUDA major is the running venv's, the venv shares the running
# venv's nvidia-* libraries (a symlink site-packages/nvidia, which is where torch's RPATH looks)
# instead of downloading them again (3 GB; the venv then needs the running venv to stay); otherwise pip
# installs them. The other packages are the
# running venv's, at its versions (`pip freeze`), without pip's dependency resolution.
# These venvs are not scripts/check_torch.sh's (one build per torch): its setup.sh would install the
# nvidia-* packages that the symlink stands in for, and its editable install would replace the wheel.
#
# The tests run in $root/torch-VERSION/tree: a copy of this checkout whose paanet_fast/ is a symlink
# to the installed wheel's package, so that `import paanet_fast` gives the wheel's files everywhere,
# also in the tests' subprocesses that run with cwd or PYTHONPATH at the tree's root; the pytest
# process itself imports it from site-packages (it runs as venv/bin/pytest, without the tree on
# sys.path). Tests that compile sources of the tree (tests/cuda_emulation builds kernels/*.cu, the
# sdist and build tests) find them in the copy.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD

versions=() pytest_args=() prepare=false
[ "${1:-}" = --prepare ] && { prepare=true; shift; }
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; pytest_args=("$@"); break ;;
    *) versions+=("$1"); shift ;;
  esac
done
[ ${#versions[@]} -gt 0 ] || { echo "usage: bash scripts/check_wheel.sh TORCH_VERSION... [-- pytest arguments]" >&2; exit 2; }
for version in "${versions[@]}"; do
  [[ $version =~ ^2\.[0-9]+\.[0-9]+$ ]] || { echo "check_wheel.sh: expected torch versions such as 2.12.1, got $version" >&2; exit 2; }
done
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests)

root=${PAANET_FAST_CHECK_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/paanet_fast/wheel}
builder=${PYTHON:-python}  # the venv whose torch the wheel is built against
mkdir -p "$root"
root=$(cd "$root" && pwd)
wheel_dir=${WHEEL_DIR:-$root/dist}


# --- one venv per torch ----------------------------------------------------------------------------
builder_site=$("$builder" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
builder_cuda=$("$builder" -c 'import torch; print((torch.version.cuda or "").split(".")[0])')
base_python=$("$builder" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')

# torch's own requirements for this platform, with the markers evaluated: NAME<TAB>REQUIREMENT per line.
TORCH_REQUIREMENTS='
import importlib.metadata as m
from pip._vendor.packaging.requirements import Requirement
for text in m.requires("torch") or []:
    r = Requirement(text)
    if r.marker is None or r.marker.evaluate({"extra": ""}):
        print(r.name.lower().replace("_", "-"), str(r).split(";")[0].strip(), sep="\t")
'

make_venv() {  # make_venv VERSION: $root/torch-VERSION/venv with that torch, its torchvision and the project's deps
  local version=$1 venv=$root/torch-$1/venv minor patch torchvision var vpip reqs cuda_major
  IFS=. read -r _ minor patch <<<"$version"
  var=TORCHVISION_2_$minor
  torchvision=${!var:-0.$((minor + 15)).$patch}
  if [ -f "$venv/.check_wheel_ready" ] && [ "$(cat "$venv/.check_wheel_ready")" = "$version $torchvision" ]; then
    return 0
  fi
  echo "check_wheel: making $venv (torch $version, torchvision $torchvision) ..."
  rm -f "$venv/.check_wheel_ready"
  [ -x "$venv/bin/python" ] || "$base_python" -m venv "$venv"
  vpip="$venv/bin/python -m pip --no-cache-dir"
  $vpip install -q --upgrade pip
  # ===: exactly that version, not a local variant such as 2.13.0+cpu that a --find-links folder may
  # hold (PyPI's torchvision is a CUDA build, which does not load beside a CPU-only torch).
  $vpip install -q --no-deps "torch===$version" "torchvision===$torchvision"
  reqs=$("$venv/bin/python" -c "$TORCH_REQUIREMENTS")
  cuda_major=$(cut -f2 <<<"$reqs" | grep -oE '^(nvidia-[a-z-]+-cu|cuda-toolkit\[[^]]*\]==)[0-9]+' | grep -oE '[0-9]+$' | head -n 1 || true)
  if [ -n "$cuda_major" ] && [ "$cuda_major" = "$builder_cuda" ] && [ -d "$builder_site/nvidia" ]; then
    echo "check_wheel: torch $version uses CUDA $cuda_major like the running venv: sharing its $builder_site/nvidia"
    ln -sfn "$builder_site/nvidia" "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia"
    # shellcheck disable=SC2046  # one argument per requirement
    $vpip install -q $(grep -vE '^(nvidia-|cuda-toolkit\b)' <<<"$reqs" | cut -f2 | tr '\n' ' ')
  else
    $vpip install -q "torch===$version"  # now with its dependencies: its CUDA libraries and triton
  fi
  # setuptools>=77 (the SPDX license string) for the tests that build the sdist, as in setup.sh, within
  # torch's own bound on it (2.11 and 2.12: <82).
  # shellcheck disable=SC2046
  $vpip install -q "setuptools>=77" $(grep '^setuptools' <<<"$reqs" | cut -f2)
  # The project's runtime, test, encoder and export packages at the running venv's versions, except
  # those torch brought (its pins win). --no-deps: pip's resolver would otherwise fetch the nvidia-*
  # packages that the symlink stands in for.
  "$builder" -m pip freeze --exclude-editable | grep -E '^[A-Za-z0-9_.-]+==' \
    | grep -viE '^(torch|torchvision|triton|paanet[-_]fast|nvidia-[^=]*|cuda-[^=]*)==' > "$root/torch-$version/builder-freeze.txt"
  "$venv/bin/python" - "$root/torch-$version/builder-freeze.txt" > "$root/torch-$version/extra.txt" <<'PY'
import importlib.metadata as m, sys
installed = {d.metadata["Name"].lower().replace("_", "-") for d in m.distributions()}
for line in open(sys.argv[1]):
    if line.split("==")[0].lower().replace("_", "-") not in installed:
        print(line.strip())
PY
  $vpip install -q --no-deps -r "$root/torch-$version/extra.txt"
  # triton 3.6's interpreter (torch 2.10 and 2.11) reads a scalar argument as int(array of shape (1,)),
  # which numpy 2.4 refuses ("only 0-dimensional arrays can be converted"); 3.7 squeezes it first.
  if "$venv/bin/python" -c 'import sys, triton; sys.exit(tuple(map(int, triton.__version__.split(".")[:2])) >= (3, 7))'; then
    $vpip install -q --no-deps "numpy<2.4"
  fi
  "$venv/bin/python" -m pip check | grep -v '^nvidia\|which is not installed.$' || true
  "$venv/bin/python" -c 'import torch, torchvision.ops
assert (torch.randn(3) @ torch.randn(3)).isfinite()
print(f"check_wheel: torch {torch.__version__} (CUDA {torch.version.cuda}) and torchvision {torchvision.__version__} import")'
  echo "$version $torchvision" > "$venv/.check_wheel_ready"
}

if $prepare; then
  for version in "${versions[@]}"; do make_venv "$version"; done
  exit 0
fi

# --- the wheel, built once ------------------------------------------------------------------------
if [ -n "${WHEEL:-}" ]; then
  wheel=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
  [ -f "$wheel" ] || { echo "check_wheel.sh: WHEEL=$WHEEL is not a file" >&2; exit 2; }
else
  builder_torch=$("$builder" -c 'import torch; print(torch.__version__)')
  echo "check_wheel: building the wheel against torch $builder_torch in $wheel_dir ..."
  bash "$checkout/scripts/copy_checkout.sh" "$wheel_dir/src"
  rm -f "$wheel_dir"/*.whl
  (cd "$wheel_dir/src" && "$builder" -m pip wheel -q --no-build-isolation --no-deps -w "$wheel_dir" .)
  wheel=$(ls "$wheel_dir"/paanet_fast-*.whl)
fi
sha=$(sha256sum "$wheel" | cut -d' ' -f1)
built_against=$(unzip -p "$wheel" paanet_fast/_build_info.py | sed -n "s/^TORCH_VERSION = '\([^']*\)'.*/\1/p")
if [ -n "${builder_torch:-}" ] && [ "$built_against" != "$builder_torch" ]; then
  echo "check_wheel: the wheel's _build_info says torch ${built_against:-(none)}, it was built with torch $builder_torch" >&2
  exit 1
fi
echo "check_wheel: wheel $(basename "$wheel") sha256 $sha, built against torch ${built_against:-?}"

# --- install the wheel and test, per torch ---------------------------------------------------------
# Before the suite: the installed wheel is what imports, it was built against $built_against, and its
# kernels loaded (no fallback to portable), else the reason, and this torch counts as failed.
LOAD_CHECK='
import os, sys, sysconfig
import paanet_fast
from paanet_fast import _build_info
from paanet_fast.backends import unavailable_reason
site = os.path.realpath(sysconfig.get_paths()["purelib"])
where = os.path.realpath(paanet_fast.__file__)
if not where.startswith(site + os.sep):
    sys.exit(f"paanet_fast imports from {where}, not from the installed wheel in {site}")
print(f"check_wheel: paanet_fast from {os.path.dirname(where)}, _C built against torch {_build_info.TORCH_VERSION}")
if _build_info.TORCH_VERSION != sys.argv[1]:
    sys.exit(f"the installed _build_info says torch {_build_info.TORCH_VERSION}, the wheel was built against {sys.argv[1]}")
if "cpp" not in paanet_fast.available_backends():
    reason = unavailable_reason("cpp")
    sys.exit(f"the compiled backend is unavailable: {reason}")
import paanet_fast._C
'

# After the suite: no test wrote into the installed package (the tree's paanet_fast/ is a symlink to
# it), so that the counts are those of the wheel's files: every file against the hash in its RECORD.
INTACT_CHECK='
import base64, hashlib, importlib.metadata as m, sys
changed = []
for f in m.distribution("paanet_fast").files:
    if f.hash is None:
        continue
    try:
        data = f.locate().read_bytes()
    except FileNotFoundError:
        changed.append(f"{f} (removed)")
        continue
    if base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest()).rstrip(b"=").decode() != f.hash.value:
        changed.append(str(f))
if changed:
    sys.exit("the tests changed files of the installed wheel: " + ", ".join(changed))
'

status=0 summaries=()
for version in "${versions[@]}"; do
  dir=$root/torch-$version
  start=$SECONDS
  if ! make_venv "$version"; then
    summaries+=("check_wheel: torch $version: FAILED to make the venv $dir/venv")
    status=1; continue
  fi
  python=$dir/venv/bin/python
  "$python" -m pip --no-cache-dir install -q --no-deps --force-reinstall "$wheel"
  bash "$checkout/scripts/copy_checkout.sh" "$dir/tree"
  rm -rf "$dir/tree/paanet_fast"
  ln -s "$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/paanet_fast" "$dir/tree/paanet_fast"
  versions_line=$("$python" -c 'import importlib.metadata as m
print(", ".join(f"{n} {m.version(n)}" for n in ("torch", "torchvision", "triton") if n != "triton" or any(
    d.metadata["Name"] == n for d in m.distributions())))')
  head="check_wheel: $versions_line; wheel $(basename "$wheel") (sha256 $sha, built against torch ${built_against:-?})"
  if ! (cd "$dir" && "$python" -c "$LOAD_CHECK" "$built_against") 2>&1 | tee "$dir/load.log"; then
    summaries+=("$head: _C DID NOT LOAD: $(tail -n 1 "$dir/load.log"); $((SECONDS - start)) s on $(date -u +%F)")
    status=1; continue
  fi
  set +e
  (cd "$dir/tree" && "$dir/venv/bin/pytest" -q -p no:cacheprovider "${pytest_args[@]}") | tee "$dir/pytest.log"
  rc=${PIPESTATUS[0]}
  set -e
  counts=$(grep -E '^=* ?[0-9]+ (passed|failed|skipped|error|deselected)' "$dir/pytest.log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//' || true)
  if ! intact=$("$python" -c "$INTACT_CHECK" 2>&1); then
    counts="$counts; ${intact##*$'\n'}"
    rc=1
  fi
  [ "$rc" = 0 ] || status=1
  summaries+=("$head: ${counts:-no pytest summary (exit $rc)}; $((SECONDS - start)) s on $(date -u +%F) (log: $dir/pytest.log)")
done
printf '%s\n' "${summaries[@]}"
exit "$status"
