#!/usr/bin/env bash
# The gradient-search benchmark on the three models of issue 3 (output: bench.txt).
set -euo pipefail
export AUTOPROMPT_SEARCH_DATA=${AUTOPROMPT_SEARCH_DATA:-$(cd .. && pwd)/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY="${PY:-.venv/bin/python} -u"
{
  date -u; nproc; uptime
  $PY bench/bench_gradient.py --model smollm2-135m --k 32
  $PY bench/bench_gradient.py --model bert-base --dtype float32 --k 10
  $PY bench/bench_gradient.py --model bert-base --dtype bfloat16 --k 10 --naive-dtype float32
  uptime
} 2>&1 | grep --line-buffered -v '^$' | tee experiments/gradient-sst2/bench.txt
