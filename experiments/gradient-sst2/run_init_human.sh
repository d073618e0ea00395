#!/usr/bin/env bash
# Second arm: the search starts from the standard human prompt "{sentence} It was [P] ."
# (" It", " was" become two trigger slots), scored on the whole training split each step,
# so the training loss can only go down. Then test accuracy of the found prompts.
# Usage: bash experiments/gradient-sst2/run_init_human.sh   (from the repository root)
set -euo pipefail
export AUTOPROMPT_SEARCH_DATA=${AUTOPROMPT_SEARCH_DATA:-$(cd .. && pwd)/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-experiments/gradient-sst2/runs-init-human}
CLI=${CLI:-.venv/bin/autoprompt-search}
for SPLIT in 13 21 42; do
  $CLI search --strategy gradient --task sst-2 --split-seed $SPLIT --model smollm2-135m \
    --out $OUT/split-$SPLIT --seed 0 --init human --init-prompt it-was \
    --k 16 --batch-size 32 --position cycle --iterations 20 --time-budget 300 \
    $( [ -f $OUT/split-$SPLIT/checkpoint.json ] && [ ! -f $OUT/split-$SPLIT/result.json ] && echo --resume )
done
# the found prompts on the same first 150 test examples (human prompts: see runs/test-human.json)
.venv/bin/python experiments/gradient-sst2/evaluate.py $OUT --limit 150 --no-human --json test-found.json
cp experiments/gradient-sst2/runs/test-human.json $OUT/test-human.json
.venv/bin/python experiments/gradient-sst2/summarize.py $OUT
