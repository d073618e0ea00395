"""Scoring benchmark: examples scored per second, naive path vs fast path, same run.

naive: one example and one label word at a time, full recompute, full-vocabulary
       logits at every position (what research scripts do);
fast:  batched and length-sorted, logits only at the predict position, and for
       few-shot prompts the shared instruction + demonstrations run once and their
       key/value cache is reused (causal LMs).

    python bench/bench_scoring.py                      # SmolLM2, SST-2 if the data is there
    python bench/bench_scoring.py --model tiny         # tiny random model (seconds)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from autoprompt_search.core.tasks import Task
from autoprompt_search.models import load_model, wrap_model
from autoprompt_search.models.encoding import FewShot
from autoprompt_search.scoring.engine import PrefixMode
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.testing import tiny_causal_lm


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model spec, or 'tiny'")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--n", type=int, default=48, help="examples scored per measurement")
    ap.add_argument("--naive-n", type=int, default=12, help="examples for the (slow) naive path")
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--demos", type=int, default=4, help="demonstrations in the few-shot scenario")
    args = ap.parse_args()

    if args.model == "tiny":
        backend = wrap_model(*tiny_causal_lm(), name="tiny")
    else:
        backend = load_model(args.model)
    if (Path(args.data_root) / "fewshot").is_dir():
        task = Task.load("sst-2", data_root=args.data_root)
        template = "{sentence} It was [P] ."
    else:
        task = Task.load("bbc-news")
        template = "{text} Topic: [P]"
    examples = task.examples("test")[: args.n]
    print(f"model {backend.name} ({backend.kind}, {backend.dtype}), task {task.name}, "
          f"{torch.get_num_threads()} threads, n={len(examples)} (naive n={args.naive_n})")

    scenarios = {
        "zero-shot": None,
        f"{args.demos}-shot": FewShot("Classify each text.", tuple(task.examples("train")[: args.demos])),
    }
    print(f"{'scenario':<12}{'path':<26}{'examples/s':>12}{'vs naive':>10}")
    for name, fewshot in scenarios.items():
        scorer = PromptScorer(backend, task, template, fewshot=fewshot, batch_size=args.batch_size)
        naive_ex = examples[: args.naive_n]
        t_naive = timed(lambda: scorer.naive_class_logprobs(naive_ex)) / len(naive_ex)
        t_fast = timed(lambda: scorer.class_logprobs(examples)) / len(examples)
        rows = [("naive", t_naive), ("fast", t_fast)]
        if fewshot is not None:  # same fast path, the shared prefix recomputed in every pass
            plain = scorer.engine(prefix=PrefixMode.NONE)
            rows.append(("fast, no prefix cache", timed(lambda: plain.targets.class_scores(
                plain.word_logprobs(plain.encode(examples, [])))) / len(examples)))
        for path, t in rows:
            print(f"{name:<12}{path:<26}{1 / t:>12.1f}{t_naive / t:>9.1f}x")
        check = (scorer.class_logprobs(naive_ex) - scorer.naive_class_logprobs(naive_ex)).abs().max()
        print(f"{'':<12}max |fast - naive| class log-prob: {check:.2e}")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
