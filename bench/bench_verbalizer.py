"""Verbalizer screening benchmark: verbalizers scored per second from cached [P] distributions
against scoring each one directly (a forward pass over the examples per verbalizer), same run.

cache:  one pass over the examples keeps each one's log-distribution at [P]
        (scoring/distributions.py); every verbalizer is then read from it;
direct: ``PromptScorer(..., verbalizer=v).class_logprobs`` per verbalizer.

Verbalizers: random draws of one or two single-token words per class from the words that
re-tokenise to themselves at [P] (seeded). The cached and direct class scores of the directly
scored verbalizers are compared (largest difference printed).

    python bench/bench_verbalizer.py                  # SmolLM2, SST-2 train + dev if the data is there
    python bench/bench_verbalizer.py --model tiny     # tiny random model (seconds)
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from autoprompt_search.core.tasks import Task
from autoprompt_search.core.tokens import allowed_token_mask, token_texts
from autoprompt_search.models import load_model, wrap_model
from autoprompt_search.scoring.distributions import cache_distributions
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.scoring.targets import predict_space
from autoprompt_search.testing import tiny_causal_lm


def word_pool(backend, template, size: int, seed: int) -> list[str]:
    """``size`` seeded words that are one token at [P]."""
    allowed = allowed_token_mask(backend.tokenizer, backend.vocab_size)
    texts = token_texts(backend.tokenizer)
    space = predict_space(template)
    ids = torch.nonzero(allowed)[:, 0].tolist()
    random.Random(seed).shuffle(ids)
    pool = []
    for tid in ids:
        word = texts[tid].strip()
        if word and tuple(backend.encoder.label_ids(word, space)) == (tid,):
            pool.append(word)
            if len(pool) == size:
                break
    return pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model spec, or 'tiny'")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--verbalizers", type=int, default=2000, help="verbalizers screened from the cache")
    ap.add_argument("--direct", type=int, default=3, help="verbalizers scored directly (slow)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    backend = wrap_model(*tiny_causal_lm(), name="tiny") if args.model == "tiny" else load_model(args.model)
    if (Path(args.data_root) / "fewshot").is_dir():
        task = Task.load("sst-2", data_root=args.data_root)
        template = "{sentence} It was [P] ."
    else:
        task = Task.load("bbc-news")
        template = "{text} Topic: [P]"
    examples = task.examples("train") + task.examples("dev")
    scorer = PromptScorer(backend, task, template, batch_size=args.batch_size)
    pool = word_pool(backend, scorer.template, 400, args.seed)
    rng = random.Random(args.seed)
    verbalizers = [{lab: rng.sample(pool, rng.choice((1, 2))) for lab in task.labels}
                   for _ in range(args.verbalizers)]
    print(f"model {backend.name} ({backend.kind}, {backend.dtype}), task {task.name}, "
          f"{torch.get_num_threads()} threads, {len(examples)} train + dev examples, "
          f"vocabulary {backend.vocab_size}")

    start = time.perf_counter()
    cache = cache_distributions(scorer, examples)
    t_cache = time.perf_counter() - start
    scorers = [PromptScorer(backend, task, template, verbalizer=v, batch_size=args.batch_size)
               for v in verbalizers]  # resolving the words is not timed on either side
    start = time.perf_counter()
    cached = [cache.class_logprobs(s.label_words) for s in scorers]
    t_read = time.perf_counter() - start

    direct = scorers[: args.direct]
    direct[0].class_logprobs(examples)  # warm-up
    start = time.perf_counter()
    scores = [s.class_logprobs(examples) for s in direct]
    t_direct = (time.perf_counter() - start) / len(direct)
    diff = max(float((d - c).abs().max()) for d, c in zip(scores, cached))

    per_cached = (t_cache + t_read) / len(scorers)
    print(f"{'path':<40}{'verbalizers/s':>14}{'vs direct':>11}")
    print(f"{'direct (a pass per verbalizer)':<40}{1 / t_direct:>14.2f}{1.0:>10.1f}x")
    print(f"{'cache, reads only':<40}{len(scorers) / t_read:>14.1f}"
          f"{t_direct * len(scorers) / t_read:>10.0f}x")
    print(f"{f'cache, with its pass ({len(scorers)} verbalizers)':<40}{1 / per_cached:>14.1f}"
          f"{t_direct / per_cached:>10.0f}x")
    print(f"cache pass {t_cache:.2f} s ({cache.logp.numel() * cache.logp.element_size() / 2**20:.1f} MiB); "
          f"max |cached - direct| class log-prob over {len(direct)} verbalizers: {diff:.2e}")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
