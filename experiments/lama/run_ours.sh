#!/usr/bin/env bash
# "Ours" on LAMA: the gradient (AutoPrompt) search per relation with SmolLM2, started from the
# relation's LAMA prompt (its words before [Y] become the triggers; the search keeps a change
# only if it lowers the training loss). Relations whose LAMA prompt has words after [Y] (a causal
# LM cannot read those) start from 5 neutral triggers instead: '{sub_label} [T] x5 [P]'.
# Then `run.py` scores the found prompts on the same test facts as the human prompt sets.
# Usage: bash experiments/lama/run_ours.sh [RELATION ...]   (default: every shipped relation)
set -uo pipefail
export AUTOPROMPT_SEARCH_DATA=${AUTOPROMPT_SEARCH_DATA:-$(cd .. && pwd)/shared/data}
OUT=${OUT:-experiments/lama/runs}
CLI=${CLI:-.venv/bin/autoprompt-search}
ITERATIONS=${ITERATIONS:-10}
RELATIONS=${*:-$(ls search_spaces/tasks/lama | sed -n 's/^lama-\(P[0-9]*\)\.yaml$/\1/p')}
mkdir -p "$OUT"
for REL in $RELATIONS; do
  dir=$OUT/$REL
  [ -f "$dir/result.json" ] && continue
  resume=""; [ -f "$dir/checkpoint.json" ] && resume=--resume
  common=(--strategy gradient --task "lama-$REL" --model smollm2-135m --out "$dir" --seed 0
          --k 8 --batch-size 16 --iterations "$ITERATIONS" $resume)
  if ! $CLI search "${common[@]}" --init human 2> "$OUT/$REL.err"; then
    if grep -q "after \[P\]\|no words right before" "$OUT/$REL.err"; then
      rm -rf "$dir"
      $CLI search "${common[@]}" --template "{sub_label} [T] [T] [T] [T] [T] [P]" \
        || echo "FAILED: $REL" >&2
    else
      echo "FAILED: $REL (see $OUT/$REL.err)" >&2
    fi
  fi
done
