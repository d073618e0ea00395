#!/usr/bin/env bash
# The suite's search runs: every strategy x 16-shot split seeds 13, 21, 42 on SmolLM2-135M, the
# same budgets on every task, one folder per run under experiments/suite/runs/ (config, log,
# result and, for soft prompts, the vectors are committed; checkpoints are not).
# Re-running skips finished runs and resumes interrupted ones.
# Usage: bash experiments/suite/run_searches.sh [TASK ...]   (from the repository root)
#        METHODS="gradient optuna" SEEDS=13 bash experiments/suite/run_searches.sh trec
#        JOBS=2 bash experiments/suite/run_all.sh   (every task, method and seed, 2 at a time)
set -uo pipefail
export AUTOPROMPT_SEARCH_DATA=${AUTOPROMPT_SEARCH_DATA:-$(cd .. && pwd)/shared/data}
OUT=${OUT:-experiments/suite/runs}
CLI=${CLI:-.venv/bin/autoprompt-search}
TASKS=${*:-sst-2 sst-5 agnews trec}
SEEDS=${SEEDS:-13 21 42}
template() {  # five trigger slots after the task's text field
  local field=sentence; [ "$1" = agnews ] && field=text
  echo "{$field} [T] [T] [T] [T] [T] [P]"
}

run() {  # run NAME ARGS...: one search, skipped when done, resumed when interrupted
  local dir=$OUT/$1; shift
  [ -f "$dir/result.json" ] && return 0
  local resume=""
  [ -f "$dir/checkpoint.json" ] || [ -f "$dir/study.journal" ] && resume=--resume
  $CLI search --out "$dir" --model smollm2-135m $resume "$@"
}

search() {  # search METHOD TASK SEED
  local common=(--task "$2" --split-seed "$3" --seed "$3")
  case $1 in
    # soft prompt (then projected) and PEZ: 120 steps from the words of the task's first human prompt
    soft|pez) run "$2-s$3-$1" --strategy "$1" "${common[@]}" --template "$(template "$2")" \
                --steps 120 --batch-size 8 --eval-every 20 --dev-limit 32 ;;
    # black-box: Optuna TPE over the task's shipped space, human prompts enqueued first
    optuna) run "$2-s$3-optuna" --strategy optuna "${common[@]}" --trials 16 \
              --search-examples 32 --batch-size 16 ;;
    # gradient (AutoPrompt): 5 triggers, neutral init, 12 iterations or 240 s
    gradient) run "$2-s$3-gradient" --strategy gradient "${common[@]}" --template "$(template "$2")" \
                --k 16 --batch-size 16 --iterations 12 --time-budget 240 ;;
  esac
}

for METHOD in ${METHODS:-soft pez optuna gradient}; do
  for TASK in $TASKS; do
    for SEED in $SEEDS; do
      search "$METHOD" "$TASK" "$SEED" || echo "FAILED: $METHOD $TASK split $SEED" >&2
    done
  done
done
