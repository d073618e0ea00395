#!/usr/bin/env bash
# Human-prompt evaluations for the suite and sensitivity studies (SmolLM2, test split,
# first N test examples). Each call writes compare.json + report.html/.md + plots.
set -euo pipefail
N=${N:-200}
BIN=${BIN:-.venv/bin}
DATA=$(realpath "${AUTOPROMPT_SEARCH_DATA:-../shared/data}")
for task in sst-2 agnews; do
  [ -f experiments/sensitivity/$task/compare.json ] || \
    $BIN/autoprompt-search compare --task $task --human --split test --limit $N \
      --data-root "$DATA" --cache-dir experiments/eval-cache --out experiments/sensitivity/$task
done
for task in sst-5 trec; do
  [ -f experiments/suite/human/$task/compare.json ] || \
    $BIN/autoprompt-search compare --task $task --human --split test --limit $N \
      --data-root "$DATA" --cache-dir experiments/eval-cache --out experiments/suite/human/$task
done
