#!/usr/bin/env bash
# Every suite search (4 tasks x 4 methods x split seeds 13, 21, 42), JOBS at a time (default 2,
# one thread each), longest first. Finished runs are skipped, interrupted ones resumed.
# Usage: JOBS=2 bash experiments/suite/run_all.sh   (from the repository root)
set -uo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HERE=$(dirname "$0")
mkdir -p "$HERE/runs/logs"  # per-run output (not committed)
for METHOD in gradient optuna soft pez; do
  for TASK in ${TASKS:-sst-2 agnews sst-5 trec}; do
    for SEED in 13 21 42; do
      echo "$METHOD $TASK $SEED"
    done
  done
done | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'METHODS=$0 SEEDS=$2 bash '"$HERE"'/run_searches.sh $1 > '"$HERE"'/runs/logs/$1-s$2-$0.log 2>&1; echo "done: $0 $1 $2"'
