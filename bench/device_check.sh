#!/usr/bin/env bash
# The GPU check, in one call on a lent GPU machine (no network; torch with CUDA preinstalled):
# build the extension with CUDA, run the test suite (CUDA variants included), run the CUDA
# benchmarks and print their summary tables, within one deadline (BUDGET_S, default 350 s from
# the start of the build) so that it ends inside 6 minutes; stages left without time are named.
#   bash bench/device_check.sh                   (writes logs and JSON to $OUT when it is set)
#   SUITES="linear sampler" bash bench/device_check.sh   (a subset of the benchmark suites)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
status=0
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}" SEDD_KERNELS_CUDA=1
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
  export TORCH_CUDA_ARCH_LIST
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

echo "== build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
start=$(date +%s)
if ! timeout 300 "$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
echo "built in $(( $(date +%s) - start )) s"
"$PY" -c 'import sedd_kernels as s; print(s.build_info())'

# Everything after the build shares one deadline (BUDGET_S seconds from the start, default 350):
# a stage that would start with under 30 s left is skipped and named, so the call never overruns.
deadline=$(( start + ${BUDGET_S:-350} ))
left() { echo $(( deadline - $(date +%s) )); }
cap() { local l; l=$(left); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
skipped=""

echo "== tests (the CUDA variants; the CPU ones run in CI)"
timeout "$(cap 240)" "$PY" -m pytest tests -q -p no:cacheprovider -k "cuda and not test_bad_input" \
  2>&1 | tee "$OUT/tests.log" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# input errors in a process of their own, verbose, so that a crash names its case
timeout "$(cap 90)" "$PY" -m pytest tests -v -p no:cacheprovider -k "cuda and test_bad_input" \
  2>&1 | tee "$OUT/tests_bad_input.log" | grep -E "FAIL|Error|Fatal|passed|failed" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# memcheck over a small subset: the step / categorical kernels (never run before this change) and
# the in-place loss kernel, at small shapes (compute-sanitizer slows kernels ~100x)
if command -v compute-sanitizer >/dev/null && [ "$(left)" -ge 60 ]; then
  echo "== compute-sanitizer memcheck (small subset)"
  timeout "$(cap 90)" compute-sanitizer --tool memcheck --error-exitcode 7 "$PY" -m pytest tests -q \
    -p no:cacheprovider -k "cuda and (shapes_and_determinism or frozen_and_immobile or with_grad_kernel_matches or opcheck)" \
    2>&1 | tee "$OUT/memcheck.log" | grep -E "ERROR SUMMARY|passed|failed|Invalid" | tail -8
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
else
  skipped="$skipped memcheck"
fi

# never-run-on-a-GPU suites first; score_entropy (measured on an H100 before) last. On CUDA the
# suites run their "gpu" level (harness.py): the paper's shapes; each prints its summary table.
for suite in ${SUITES:-steps block rows linear linear_ce categorical sampler predictors train optimizer perturb score_entropy}; do
  if [ "$(left)" -lt 30 ]; then skipped="$skipped $suite"; continue; fi
  echo "== benchmarks (CUDA): $suite"
  SEDD_BENCH_DEVICES=cuda SEDD_BENCH_JSON="$OUT/bench_$suite.json" timeout "$(cap 200)" "$PY" \
    -m pytest "bench/bench_$suite.py" --benchmark-only -q -s -p no:cacheprovider \
    --benchmark-columns=median,iqr,rounds 2>&1 | tee "$OUT/bench_$suite.log" \
    | sed -n '/summary (/,/^$/p;/Error/p'
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
[ -n "$skipped" ] && echo "== skipped for the time budget:$skipped (run them with SUITES=...)"
echo "device_check exit status $status (total $(( $(date +%s) - start )) s)"
exit $status
