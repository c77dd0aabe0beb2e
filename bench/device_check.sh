#!/usr/bin/env bash
# The GPU check, in one call on a lent GPU machine (no network; torch with CUDA preinstalled):
# build the extension with CUDA, run the test suite (CUDA variants included), run the CUDA
# benchmarks and print their summary table. Finishes well inside 8 minutes on an H100 (the
# end-to-end sampling benchmark, added last, is estimated at ~2.5 of them; not yet run on a GPU).
#   bash bench/device_check.sh            (writes logs and JSON to $OUT when it is set)
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

echo "== tests (CPU and CUDA)"
timeout 240 "$PY" -m pytest tests -q -p no:cacheprovider -k "not test_bad_input" \
  2>&1 | tee "$OUT/tests.log" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# input errors in a process of their own, verbose, so that a crash names its case
timeout 120 "$PY" -m pytest tests -v -p no:cacheprovider -k "test_bad_input" \
  2>&1 | tee "$OUT/tests_bad_input.log" | grep -E "FAIL|Error|Fatal|passed|failed" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

for suite in score_entropy steps sampling train; do
  echo "== benchmarks (CUDA): $suite"
  SEDD_BENCH_DEVICES=cuda SEDD_BENCH_JSON="$OUT/bench_$suite.json" timeout 200 "$PY" -m pytest \
    "bench/bench_$suite.py" --benchmark-only -q -p no:cacheprovider \
    --benchmark-columns=median,iqr,rounds 2>&1 | tee "$OUT/bench_$suite.log" \
    | sed -n '/benchmark summary/,/^$/p'
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
# end-to-end sampling throughput: tiny and small presets at B x L = 8 x 1024, 64/256/1024 steps,
# fused vs reference steps, with and without the exact cache (~2.5 minutes estimated on an H100;
# the per-case lines land in the log as they finish, the table is printed from the JSON)
echo "== benchmarks (CUDA): sample (end-to-end tokens/s)"
SEDD_BENCH_DEVICES=cuda timeout 330 "$PY" -m pytest bench/bench_sample.py --benchmark-only -q -s \
  -p no:cacheprovider --benchmark-json="$OUT/bench_sample.json" --benchmark-columns=median,rounds \
  >"$OUT/bench_sample.log" 2>&1
[ $? -eq 0 ] || { status=1; grep -E "tokens/s|Error|FAIL" "$OUT/bench_sample.log" | tail -30; }
[ -s "$OUT/bench_sample.json" ] && "$PY" bench/bench_sample.py "$OUT/bench_sample.json"
echo "device_check exit status $status"
exit $status
