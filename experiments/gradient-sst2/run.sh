#!/usr/bin/env bash
# SST-2 16-shot, SmolLM2-135M: gradient trigger search on three split seeds, then test
# accuracy of the found prompts and of the task's human prompts.
# Usage: bash experiments/gradient-sst2/run.sh   (from the repository root)
set -euo pipefail
export AUTOPROMPT_SEARCH_DATA=${AUTOPROMPT_SEARCH_DATA:-$(cd .. && pwd)/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # the machine is shared: one thread per process
OUT=${OUT:-experiments/gradient-sst2/runs}
CLI=${CLI:-.venv/bin/autoprompt-search}
TEMPLATE="{sentence} [T] [T] [T] [T] [T] [P] ."
for SPLIT in 13 21 42; do
  $CLI search --strategy gradient --task sst-2 --split-seed $SPLIT --model smollm2-135m \
    --template "$TEMPLATE" --out $OUT/split-$SPLIT --seed 0 \
    --k 16 --batch-size 16 --position random --iterations 40 --time-budget 420 \
    $( [ -f $OUT/split-$SPLIT/checkpoint.json ] && [ ! -f $OUT/split-$SPLIT/result.json ] && echo --resume )
done
# test accuracy of the found and the human prompts on the same first 150 test examples
.venv/bin/python experiments/gradient-sst2/evaluate.py $OUT --limit 150 --no-human --json test-found.json
.venv/bin/python experiments/gradient-sst2/evaluate.py $OUT --limit 150 --only-human --json test-human.json
.venv/bin/python experiments/gradient-sst2/summarize.py $OUT
