#!/usr/bin/env bash
# One command for a GPU machine: build the extension with its CUDA kernels, check every backend on
# the card with `paanet-fast doctor` (its JSON in $OUT/doctor.json when OUT is set), run the GPU
# cases of the test suite, time both operators and a training step (benchmarks/gpu_report.py), run
# the CUDA parity tests again under compute-sanitizer (memcheck, racecheck; logs in $OUT), and
# print the report predicted from the compiled code (benchmarks/gpu_static.py, in $OUT/gpu_static
# when OUT is set): the stages in the order a short lease needs them. Check the measured table
# against that predicted one and the "Predicted GPU figures" section of benchmarks/RESULTS.md:
# launches per step, and each operator's time against its modelled time and floor.
#
#   bash benchmarks/gpu_check.sh [gpu_report.py options]      e.g. --skip-compile-model
#
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default: this card's
# architecture only, which builds several times faster than the full list), MAX_JOBS, OUT (the
# report and the logs are also written there). PREBUILT=1 keeps an in-place build made elsewhere
# (paanet_fast/_C.abi3.so and _build_info.py, carried to the machine) when it loads this card's
# CUDA kernels, and builds only when it does not. TESTS_LIMIT, TIMINGS_LIMIT and SANITIZER_LIMIT
# (seconds; 0: none) bound the three long stages, so that a leased machine's time reaches each;
# TEST_WORKERS (default 8) runs the tests in that many processes where pytest-xdist is installed.
# GPU_STATIC=0 leaves out the predicted report (it needs no GPU: run it on any machine with nvcc).
# Exits non-zero when the build, a test or a benchmark failed. Compiling the reference model with
# torch.compile takes minutes; pass --skip-compile-model where the command has a time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
status=0
out=${OUT:-${TMPDIR:-/tmp}}
limit() { if [ "${1:-0}" -gt 0 ]; then echo "timeout $1"; fi; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
"$PYTHON" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])"
arch=$("$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('%d.%d' % torch.cuda.get_device_capability())") || exit 1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

loads_here() {
  "$PYTHON" -c "from paanet_fast.backends import available_backends, unavailable_reason as r; \
assert 'cuda' in available_backends(), r('cuda')"
}
if [ "${PREBUILT:-0}" = 1 ] && loads_here; then
  echo "== build: the carried in-place build loads this card's kernels, kept"
else
  echo "== build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
  start=$SECONDS
  if ! PAANET_FAST_CUDA=1 "$PYTHON" -m pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log"
    echo "build failed"
    exit 1
  fi
  echo "built in $((SECONDS - start)) s"
fi

echo "== doctor"
"$PYTHON" -m paanet_fast doctor ${OUT:+--json "$OUT/doctor.json"} || status=1

echo "== GPU tests (every test file with GPU cases)"
start=$SECONDS
workers=()
if "$PYTHON" -c "import xdist" 2> /dev/null; then workers=(-n "${TEST_WORKERS:-8}"); fi
CI=true $(limit "${TESTS_LIMIT:-0}") "$PYTHON" -m pytest -q -rfEs -p no:cacheprovider "${workers[@]}" --durations 10 \
  $(grep -l "cuda.is_available\|HAS_GPU" tests/test_*.py | grep -v "emulated\|sanitized\|gpu_static") \
  tests/test_cuda_registration.py 2>&1 | tee "$out/gpu_tests.log" || status=1
echo "tests took $((SECONDS - start)) s"

echo "== timings"
$(limit "${TIMINGS_LIMIT:-0}") "$PYTHON" benchmarks/gpu_report.py --out "$out" "$@" || status=1

echo "== compute-sanitizer: memcheck and racecheck over the parity tests (float32, and every layout)"
# On the card what the CPU emulation checks with AddressSanitizer and ThreadSanitizer
# (tests/test_cuda_sanitized.py), and what it cannot: warps, real alignment, the hardware's limits.
# Where the tool is missing or the machine refuses it (gVisor: "Device not supported"), that is said
# and the check goes on.
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
if [ -x "$sanitizer" ]; then
  for tool in memcheck racecheck; do
    log=$out/sanitizer-$tool.log
    timeout "${SANITIZER_LIMIT:-300}" "$sanitizer" --tool "$tool" --error-exitcode 3 "$PYTHON" -m pytest -q -p no:cacheprovider \
      tests/test_cuda.py -k "(matches_reference and float32) or any_layout" > "$log" 2>&1
    rc=$?
    tail -n 3 "$log"
    if [ $rc -eq 0 ]; then
      echo "$tool: no error"
    elif grep -q "Device not supported" "$log"; then
      echo "$tool: this machine's runtime does not support compute-sanitizer, not checked"
    else
      echo "$tool: failed (exit $rc; 3: the tool found errors, 124: over ${SANITIZER_LIMIT:-300} s), see $log"
      status=1
    fi
  done
else
  echo "no compute-sanitizer (looked on the PATH and at $sanitizer): not checked"
fi

if [ "${GPU_STATIC:-1}" != 0 ]; then
  echo "== predicted from the compiled code (to check the timings against)"
  "$PYTHON" benchmarks/gpu_static.py ${OUT:+--out "$OUT/gpu_static"} || status=1
fi
exit $status
