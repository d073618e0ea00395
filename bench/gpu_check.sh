#!/usr/bin/env bash
# GPU check (issue 14): `evaluate` and every strategy briefly on CUDA, compared with the CPU.
#
#   bash bench/gpu_check.sh            # on a machine with a CUDA GPU, after `make install`
#
# Stated tolerances:
#   * tiny models (tests marked gpu): float32 class log-probs within 1e-3, identical predictions;
#     a search's best dev accuracy within one example of the CPU run;
#   * SmolLM2 on SST-2 (first N=200 test examples, every human prompt): float32 accuracy on cuda
#     within 0.5 points of the CPU (a flipped near-tie), bfloat16 on cuda within 3 points;
#   * each strategy runs a few steps with --device cuda and records device/dtype in config.json;
#     black-box also with 2 Ray workers sharing the GPU (--gpus-per-worker 0.5).
# Exits non-zero on the first failed check. DEVICE=cpu MODEL=FOLDER runs the same commands on the
# CPU with another model (a dry run of the script itself; the comparisons are then trivial). Needs the shared data (fewshot/) for the SmolLM2 part:
# $AUTOPROMPT_SEARCH_DATA, else ../shared/data, else shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
cli() { "$PY" -c 'import sys; from autoprompt_search.cli import main; sys.argv[0] = "autoprompt-search"; main()' "$@"; }
N=${N:-200}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-smollm2-135m}
BF16_TOL=${BF16_TOL:-0.03}
GPUS_PER_WORKER=$([ "$DEVICE" = cpu ] && echo 0 || echo 0.5)
OUT=${OUT:-$(mktemp -d)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')"
  "$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
fi

echo "== tiny models: pytest -m gpu"
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py

for d in "${AUTOPROMPT_SEARCH_DATA:-}" ../shared/data shared/data; do
  if [ -n "$d" ] && [ -d "$d/fewshot" ]; then DATA=$(cd "$d" && pwd); break; fi
done
if [ -z "${DATA:-}" ]; then echo "no shared data folder: SmolLM2 checks skipped"; exit 0; fi

echo "== SmolLM2 evaluate, sst-2 human prompts, first $N test examples"
for run in "cpu float32" "$DEVICE float32" "$DEVICE bfloat16"; do
  set -- $run
  cli evaluate --task sst-2 --human --limit "$N" --model "$MODEL" --device "$1" --dtype "$2" --data-root "$DATA" \
    --json "$OUT/eval-$1-$2.json" > /dev/null
done
"$PY" - "$OUT" "$DEVICE" "$BF16_TOL" <<'PY'
import json, sys
out = sys.argv[1]
def acc(name):
    rows = json.load(open(f"{out}/eval-{name}.json"))["results"]
    return {r["prompt"]: r["accuracy"] for r in rows if "accuracy" in r}  # skipped prompts have none
device = sys.argv[2]
cpu, f32, bf16 = acc("cpu-float32"), acc(f"{device}-float32"), acc(f"{device}-bfloat16")
worst = {"float32": 0.0, "bfloat16": 0.0}
for p in cpu:
    worst["float32"] = max(worst["float32"], abs(f32[p] - cpu[p]))
    worst["bfloat16"] = max(worst["bfloat16"], abs(bf16[p] - cpu[p]))
    print(f"  {100*cpu[p]:5.1f} cpu  {100*f32[p]:5.1f} cuda-f32  {100*bf16[p]:5.1f} cuda-bf16  {p}")
print(f"  largest difference from the CPU: float32 {100*worst['float32']:.1f} points, "
      f"bfloat16 {100*worst['bfloat16']:.1f} points")
assert worst["float32"] <= 0.005 + 1e-9, "cuda float32 differs from the CPU by more than 0.5 points"
tol = float(sys.argv[3])
assert worst["bfloat16"] <= tol + 1e-9, f"bfloat16 differs from the CPU by more than {100 * tol:.1f} points"
PY

echo "== every strategy briefly on $DEVICE"
T="{sentence} [T] [T] [T] [P] ."
cli search --strategy gradient --task sst-2 --template "$T" --model "$MODEL" --device "$DEVICE" --data-root "$DATA" \
  --out "$OUT/gradient" --iterations 2 --k 8 --batch-size 8
cli search --strategy soft --task sst-2 --template "$T" --model "$MODEL" --device "$DEVICE" --data-root "$DATA" \
  --out "$OUT/soft" --steps 4 --batch-size 8 --eval-every 2
cli search --strategy pez --task sst-2 --template "$T" --model "$MODEL" --device "$DEVICE" --data-root "$DATA" \
  --out "$OUT/pez" --steps 4 --batch-size 8 --eval-every 2
cli search --strategy optuna --task sst-2 --model "$MODEL" --device "$DEVICE" --data-root "$DATA" --out "$OUT/optuna" \
  --trials 6 --startup-trials 2 --search-examples 16 --storage memory --plots false \
  --workers 2 --gpus-per-worker "$GPUS_PER_WORKER"
for s in gradient soft pez optuna; do
  "$PY" -c "import json,sys; c=json.load(open('$OUT/$s/config.json')); assert c['device'].startswith('$DEVICE'), c['device']; print('  $s:', c['device'], c['dtype'])"
done
echo "gpu check passed; outputs in $OUT"
