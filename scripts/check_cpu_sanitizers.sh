#!/usr/bin/env bash
# The C++ CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer, in each instruction set
# they dispatch to (AVX-512, AVX2, the baseline; ATEN_CPU_CAPABILITY picks), over the tests that call
# them. The CUDA kernels' counterpart runs in the suite (tests/test_cuda_sanitized.py); this one
# builds the whole extension again, so it is not part of CI (.ci/run): about 5 minutes on 2 cores.
#   bash scripts/check_cpu_sanitizers.sh [pytest arguments]   (default: the CPU kernels' test files)
# Where: $PAANET_FAST_CHECK_DIR (default ~/.cache/paanet_fast/sanitized-cpu) holds a copy of this
# checkout built in place with the sanitizers (CPU kernels only), run with this checkout's venv
# ($VENV, default .venv) and the sanitizer runtime preloaded. Exits non-zero at the first report.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
case $venv in /*) ;; *) venv=$PWD/$venv ;; esac  # not realpath: the venv's python is a link out of it
python=$venv/bin/python
dir=${PAANET_FAST_CHECK_DIR:-$HOME/.cache/paanet_fast/sanitized-cpu}
bash scripts/copy_checkout.sh "$dir"
cd "$dir"
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
PAANET_FAST_CUDA=0 CFLAGS="$sanitize" LDFLAGS="-fsanitize=address,undefined" \
  "$python" setup.py -q build_ext --inplace > build.log 2>&1 || { tail -n 30 build.log; exit 1; }
if [ $# -eq 0 ]; then
  # The dispatch test is left out: it reads the instructions of an unsanitized build.
  set -- tests/test_ops_parity.py tests/test_float32_parameters.py tests/test_nonfinite.py \
    tests/test_double_backward.py tests/test_ops_errors.py tests/test_ops_library.py \
    tests/test_model_backends.py -k "not triton and not cuda"
fi
# libstdc++ preloaded beside the runtime: AddressSanitizer finds the real __cxa_throw only in a C++
# runtime loaded when it starts, and triton's module throws (and catches) while it is imported.
export LD_PRELOAD="$(realpath "$(c++ -print-file-name=libasan.so)") $(realpath "$(c++ -print-file-name=libstdc++.so)")"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1
status=0
for capability in avx512 avx2 default; do
  echo "== ATEN_CPU_CAPABILITY=$capability"
  # --capture=sys: a report goes to the process's stderr, which pytest would hold back from a run
  # that the sanitizer halts.
  # A cache of torch.compile's code for each: torch 2.14's inductor would reuse code generated for
  # another instruction set (16-double AVX-512 steps compiled as AVX2: half the elements skipped).
  ATEN_CPU_CAPABILITY=$capability TORCHINDUCTOR_CACHE_DIR=$dir/inductor-$capability \
    "$python" -m pytest -q -p no:cacheprovider --capture=sys "$@" || status=1
done
exit $status
