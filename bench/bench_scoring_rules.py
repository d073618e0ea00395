"""Cost of the scoring rules on one model, same run: direct, full sequence (text after [P]), channel.

Each rule scores the same seeded stratified test examples (``--limit``); reported: examples/s
(best of ``--repeats`` timed runs after one warm-up run) and accuracy. The direct rule reads the
label word at [P] (one row per example for single-token words); the full-sequence and channel
rules run one row per (example, label word).

    OMP_NUM_THREADS=1 python bench/bench_scoring_rules.py --model smollm2-135m --limit 100
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from autoprompt_search.core.sampling import stratified_sample
from autoprompt_search.core.tasks import Task
from autoprompt_search.models import load_model
from autoprompt_search.scoring.evaluation import evaluate_examples
from autoprompt_search.scoring.scorer import PromptScorer

CASES = [  # (name, template, rule)
    ("direct", "{sentence} It was [P] .", "direct"),
    ("full-sequence", "{sentence} A [P] movie.", "direct"),
    ("channel", "{sentence} It was [P] .", "channel"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sst-2")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="Also write the figures here.")
    args = ap.parse_args()
    task = Task.load(args.task, data_root=args.data_root)
    backend = load_model(args.model)
    examples = stratified_sample(task.examples("test"), args.limit, 0)
    rows = []
    for name, template, rule in CASES:
        scorer = PromptScorer(backend, task, template, batch_size=args.batch_size, rule=rule)
        ev = evaluate_examples(scorer, examples)  # warm-up (and the accuracy)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluate_examples(scorer, examples)
            times.append(time.perf_counter() - start)
        best = min(times)
        rows.append({"rule": name, "template": template, "scoring": rule,
                     "examples_per_s": len(examples) / best, "seconds": best,
                     "accuracy": ev.metrics["accuracy"]})
    base = rows[0]["examples_per_s"]
    print(f"{args.model}, {len(examples)} {args.task} test examples, torch threads "
          f"{torch.get_num_threads()}")
    for r in rows:
        print(f"{r['rule']:14s} {r['examples_per_s']:7.1f} ex/s  ({base / r['examples_per_s']:.1f}x "
              f"the direct rule's time)  accuracy {100 * r['accuracy']:.1f}  {r['template']!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "n": len(examples), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
