#!/usr/bin/env bash
# The real-text runs of docs/block.md: AR, SEDD (score and clean parametrisations) and block
# diffusion (K = 4, 16), with and without the variance reductions, on the same data and budget
# (tiny preset, 1500 steps x 32 x 64 = 3.1M tokens each), then each run's held-out figure from
# evaluate.py and the learning-curve table and plot (bench/learning_curves.py).
#   bash bench/real_text.sh [OUT]        (default runs/real_text; about an hour on 2 CPU cores)
# Needs a text corpus: DATA (default ../shared/data/shakespeare.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/real_text}"
DATA="${DATA:-../shared/data/shakespeare.txt}"
STEPS="${STEPS:-1500}"
mkdir -p "$OUT"
common=(--data "$DATA" --tokenizer bpe:2048 --steps "$STEPS" --eval-every 100 --save-every "$STEPS"
        --sample-every 1000000 --no-progress --no-report --device cpu --seed 0)
run() {
  local name=$1; shift
  [ -f "$OUT/$name.eval" ] && return
  python python/train.py "${common[@]}" --out "$OUT/$name" "$@" > "$OUT/$name.out" 2>&1
  python python/evaluate.py --checkpoint "$OUT/$name" --num-sequences 256 --timesteps 16 \
    --device cpu > "$OUT/$name.eval" 2>&1
}
run ar --model ar
run sedd-score --model sedd --noise-levels uniform
run sedd-score-ld --model sedd --noise-levels low-discrepancy
run sedd-clean --model sedd --parametrisation clean --noise-levels uniform
run sedd-clean-ld --model sedd --parametrisation clean --noise-levels low-discrepancy
run block4 --model block --block-size 4 --noise-levels uniform
run block4-vr --model block --block-size 4 --noise-levels low-discrepancy --mask-rate 0.45,0.95
run block16 --model block --block-size 16 --noise-levels uniform
run block16-vr --model block --block-size 16 --noise-levels low-discrepancy --mask-rate 0.3,0.8
names=(ar sedd-score sedd-score-ld sedd-clean sedd-clean-ld block4 block4-vr block16 block16-vr)
python bench/learning_curves.py "$OUT" "${names[@]/#/$OUT/}"
