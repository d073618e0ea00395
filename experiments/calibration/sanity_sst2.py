"""Sanity check of the calibration modes on real data (not tuned on test).

SmolLM2-135M-Instruct, SST-2 (the default 16-shot split, seed 42), the manual prompt
``{sentence} It was [P] .``, 200 class-stratified test examples (core.sampling, seed 0):
the accuracy per calibration mode. Run: ``OMP_NUM_THREADS=1 python experiments/calibration/sanity_sst2.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from autoprompt_search.api import load_task
from autoprompt_search.core.sampling import stratified_sample
from autoprompt_search.models import load_model
from autoprompt_search.scoring.calibration import Calibration
from autoprompt_search.scoring.evaluation import evaluate_examples
from autoprompt_search.scoring.scorer import PromptScorer

TEMPLATE = "{sentence} It was [P] ."


def main(data_root: str = "../shared/data") -> None:
    task = load_task("sst-2", Path(data_root).resolve())
    backend = load_model("smollm2-135m")
    examples = stratified_sample(task.examples("test"), 200, seed=0)
    scorer = PromptScorer(backend, task, TEMPLATE)
    rows = []
    for mode in Calibration:
        start = time.perf_counter()
        ev = evaluate_examples(scorer, examples, (), "test", calibration=mode)
        preds = ev.predictions
        rows.append({"calibration": mode.value, "accuracy": ev.metrics["accuracy"],
                     "macro_f1": ev.metrics["macro_f1"], "n": ev.metrics["n"],
                     "predicted_positive": sum(p == "positive" or p == 1 for p in preds),
                     "offsets": None if ev.calibration is None else ev.calibration.offsets,
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    json.dump(rows, sys.stdout if len(sys.argv) < 2 else open(sys.argv[1], "w"), indent=2)


if __name__ == "__main__":
    main()
