"""Cache per-example class log-probabilities of every human prompt on the protocol's test subset.

The test subset of each task: 1,000 examples drawn by ``stratified_sample(test, 1000, seed=0)``
(TREC: its whole 500-example test set), the same for every prompt and every split seed (the
test files do not depend on the split seed). Uncalibrated direct scores are stored per prompt;
calibration offsets are estimated later on train/content-free inputs and applied to them.
Resumable: a prompt whose file exists is skipped. ``--scoring channel`` writes
``<prompt>.channel.json`` beside the direct scores.

    OMP_NUM_THREADS=1 python experiments/calibration/score_test.py --tasks sst-2 sst-5 agnews trec
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.sampling import stratified_sample
from autoprompt_search.core.tasks import Task
from autoprompt_search.models import load_model
from autoprompt_search.scoring.scorer import PromptScorer

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data"
TEST_N, TEST_SEED = 1000, 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst-2", "sst-5", "agnews", "trec"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data-root", default=str(DATA))
    ap.add_argument("--out", default=str(HERE / "test_scores"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--scoring", default="direct", help="scoring rule: direct or channel")
    ap.add_argument("--prompts", nargs="+", default=None, help="only these prompt names")
    args = ap.parse_args()
    backend = load_model(args.model)
    for name in args.tasks:
        task = Task.load(name, data_root=args.data_root)
        examples = stratified_sample(task.examples("test"), TEST_N, seed=TEST_SEED)
        folder = Path(args.out) / name
        folder.mkdir(parents=True, exist_ok=True)
        suffix = "" if args.scoring == "direct" else f".{args.scoring}"
        for prompt in task.prompts:
            if args.prompts and prompt.name not in args.prompts:
                continue
            path = folder / f"{prompt.name}{suffix}.json"
            if path.exists():
                continue
            start = time.perf_counter()
            record = {"task": name, "prompt": prompt.name, "template": prompt.template,
                      "verbalizer": prompt.verbalizer or task.verbalizer, "model": backend.name,
                      "rule": args.scoring, "test_n": TEST_N, "test_seed": TEST_SEED,
                      "ids": [ex.id for ex in examples], "gold": [ex.label for ex in examples]}
            try:
                rule = {} if args.scoring == "direct" else {"rule": args.scoring}
                scorer = PromptScorer(backend, task, prompt.template, prompt.verbalizer,
                                      batch_size=args.batch_size, **rule)
                scores = scorer.class_logprobs(examples, progress=True)
                record["scores"] = [[round(float(v), 6) for v in row] for row in scores]
                acc = float((scores.argmax(-1) == torch.tensor(record["gold"])).float().mean())
                record["accuracy"] = acc
            except UserError as exc:
                record["skipped"] = str(exc)
                acc = float("nan")
            record["seconds"] = round(time.perf_counter() - start, 1)
            path.write_text(json.dumps(record) + "\n")
            print(f"{name:7s} {prompt.name:18s} acc {acc:.3f}  {record['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
