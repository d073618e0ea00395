"""Test accuracy of the found prompts (one per split seed) and of the task's human prompts.

One model load; every prompt is scored on the same first N test examples (the
machine was shared by five agents on two cores, so N < 1,821 keeps this to minutes).

    python experiments/gradient-sst2/evaluate.py experiments/gradient-sst2/runs --limit 150
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autoprompt_search.api import PromptSpec, evaluate_many, load_task, spec_from_result
from autoprompt_search.core.results import PromptResult, write_json
from autoprompt_search.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--no-human", action="store_true", help="only the found prompts")
    ap.add_argument("--only-human", action="store_true", help="only the human prompts")
    ap.add_argument("--json", default="test.json", help="file name inside RUNS")
    args = ap.parse_args()
    backend = load_model("smollm2-135m")
    found = sorted(args.runs.glob("split-*/result.json"))
    specs = [] if args.only_human else [spec_from_result(PromptResult.load(p)) for p in found]
    for spec, path in zip(specs, found):
        spec.name = f"{path.parent.name}: {spec.name}"
    if not args.no_human:
        task = load_task("sst-2")
        specs += [PromptSpec(task, p.template, p.template) for p in task.prompts]
    rows = evaluate_many(specs, model=backend, split="test", limit=args.limit, progress=True)
    write_json(args.runs / args.json, {"model": backend.name, "split": "test",
                                       "limit": args.limit, "results": rows})
    print(f"wrote {args.runs / args.json}")


if __name__ == "__main__":
    main()
