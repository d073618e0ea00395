"""The waywardness study: soft prompts vs their nearest-token projections vs PEZ (SmolLM2).

For each task and split seed: train a soft prompt (``soft``) and a PEZ prompt (``pez``)
in the same template as the gradient-search study (``{field} [T]x5 [P]``), then score
on a fixed test subset (the first N test examples): the soft prompt, its nearest-token
projection (cosine), and PEZ's prompt. Distances of the soft vectors to their nearest
tokens are put next to typical distances between vocabulary embeddings. Then the
Khashabi et al. test: soft prompts pulled towards the embeddings of an unrelated
target text with weight gamma; accuracy vs token F1 between projection and target.

Rows go to ``results.jsonl`` (one per run; finished runs are skipped on restart, and
unfinished search runs resume from their checkpoints).

    .venv/bin/python experiments/waywardness/run.py --tasks sst-2 --seeds 13 21 42
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from autoprompt_search.api import run_search
from autoprompt_search.core.projection import project, token_f1, vocabulary_distance_scale
from autoprompt_search.core.sampling import stratified_sample
from autoprompt_search.core.tasks import Task
from autoprompt_search.models import load_model
from autoprompt_search.scoring.evaluation import evaluate_prompt  # noqa: F401  (documented alternative)
from autoprompt_search.scoring.metrics import classification_metrics
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.scoring.softprompt import SoftPrompt, SoftScorer, projection_mask

HERE = Path(__file__).resolve().parent
ANCHOR = "This news story is about world politics and business"  # unrelated to sentiment


def test_subset(task: Task, n: int):
    """The study's test subset: a seeded class-stratified sample of n examples, the examples
    ``evaluate_prompt(..., limit=n)`` scores (results.md before issue 11: the first n)."""
    return stratified_sample(task.examples("test"), n, 0)


def hard_accuracy(backend, task, template, ids, examples) -> float:
    scores = PromptScorer(backend, task, template).class_logprobs(examples, ids, progress=True)
    pred = scores.argmax(-1).numpy()
    return classification_metrics([e.label for e in examples], pred, task.labels)["accuracy"]


def soft_accuracy(backend, task, template, vectors, examples) -> float:
    return SoftScorer(backend, task, template).evaluate(examples, vectors, "test", progress=True
                                                        ).metrics["accuracy"]


def distance_stats(backend, vectors, allowed) -> dict:
    emb = backend.input_embeddings()
    out = {}
    for metric in ("cosine", "euclidean"):
        proj = project(vectors, emb, metric, 1, allowed)
        proj_all = project(vectors, emb, metric, 1, None)  # no token filter
        scale = vocabulary_distance_scale(emb, metric, sample=2000, seed=0, allowed=allowed)
        mean = float(proj.distance.mean())
        out[metric] = {"mean_nearest": mean, "mean_nearest_unfiltered": float(proj_all.distance.mean()),
                       "vocab_pair_mean": scale["pair_mean"], "vocab_nn_mean": scale["nn_mean"],
                       "ratio_to_pair": mean / scale["pair_mean"], "ratio_to_nn": mean / scale["nn_mean"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst-2", "agnews"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--train-limit", type=int, default=32)
    ap.add_argument("--dev-limit", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--test-limit", type=int, nargs="+", default=[200],
                    help="test examples per task (one value, or one per task)")
    ap.add_argument("--methods", nargs="*", default=["soft", "pez"],
                    help="soft, pez, pez-fluent (PEZ with --fluency-weight)")
    ap.add_argument("--fluency-weight", type=float, default=0.1,
                    help="weight of the prompt's log-perplexity in the loss of pez-fluent")
    ap.add_argument("--khashabi-seeds", nargs="*", type=int, default=[])
    ap.add_argument("--gammas", nargs="+", type=float, default=[0.3, 3.0])
    ap.add_argument("--anchor-init", default="random", help="init of the anchored soft prompts")
    ap.add_argument("--data-root", default=str(HERE.parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    out = Path(args.out)
    results = out / "results.jsonl"
    done = set()
    if results.is_file():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done.add((r["task"], r["seed"], r["method"], r.get("gamma")))
    backend = load_model("smollm2-135m")
    allowed = projection_mask(backend)

    def emit(row: dict) -> None:
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    limits = dict(zip(args.tasks, args.test_limit * len(args.tasks) if len(args.test_limit) == 1
                      else args.test_limit))
    common = {"steps": args.steps, "batch_size": args.batch_size, "train_limit": args.train_limit,
              "dev_limit": args.dev_limit, "eval_every": args.eval_every}
    for task_name in args.tasks:
        for seed in args.seeds:
            task = Task.load(task_name, data_root=args.data_root, seed=seed)
            field = task.fields[0]
            template = "{" + field + "} [T] [T] [T] [T] [T] [P]"
            examples = test_subset(task, limits[task_name])
            for method in args.methods:
                if (task_name, seed, method, None) in done:
                    continue
                run_dir = out / "runs" / f"{task_name}-s{seed}-{method}"
                t0 = time.time()
                strategy, _, variant = method.partition("-")  # pez-fluent: PEZ + fluency term
                options = {**common, "init": "human"}
                if variant == "fluent":
                    options["fluency_weight"] = args.fluency_weight
                result = run_search(strategy, task=task, model="smollm2-135m", template=template,
                                    out=run_dir, seed=seed, backend=backend,
                                    resume=(run_dir / "checkpoint.json").is_file(), options=options)
                row = {"task": task_name, "seed": seed, "method": method, "gamma": None,
                       "template": template, "prompt": result.prompt,
                       "trigger_tokens": result.trigger_tokens, "scores": result.scores,
                       "n_test": len(examples), "search_seconds": round(time.time() - t0, 1)}
                if method == "soft":
                    soft = SoftPrompt.load(run_dir)
                    row["test_soft"] = soft_accuracy(backend, task, template, soft.vectors, examples)
                    row["test_projected"] = hard_accuracy(backend, task, template, result.trigger_ids,
                                                          examples)
                    row["distances"] = distance_stats(backend, soft.vectors, allowed)
                else:
                    row["test_hard"] = hard_accuracy(backend, task, template, result.trigger_ids,
                                                     examples)
                row["seconds"] = round(time.time() - t0, 1)
                emit(row)
            if task_name == args.tasks[0] and seed in args.khashabi_seeds:
                for gamma in args.gammas:
                    method = "soft-anchor" + ("" if args.anchor_init == "random" else f"-{args.anchor_init}")
                    if (task_name, seed, method, gamma) in done:
                        continue
                    suffix = "" if args.anchor_init == "random" else f"-{args.anchor_init}"
                    run_dir = out / "runs" / f"{task_name}-s{seed}-anchor-{gamma:g}{suffix}"
                    t0 = time.time()
                    result = run_search("soft", task=task, model="smollm2-135m", template=template,
                                        out=run_dir, seed=seed, backend=backend,
                                        resume=(run_dir / "checkpoint.json").is_file(),
                                        options={**common, "init": args.anchor_init, "anchor_text": ANCHOR,
                                                 "anchor_weight": gamma, "metric": "euclidean"})
                    soft = SoftPrompt.load(run_dir)
                    anchor_ids = result.extra["anchor_ids"]
                    row = {"task": task_name, "seed": seed, "method": method, "gamma": gamma,
                           "anchor_text": ANCHOR, "anchor_tokens": [backend.encoder.decode_trigger(i)
                                                                    for i in anchor_ids],
                           "prompt": result.prompt, "trigger_tokens": result.trigger_tokens,
                           "scores": result.scores, "n_test": len(examples),
                           "token_f1": token_f1(result.trigger_ids, anchor_ids),
                           "exact_slots": sum(a == b for a, b in zip(result.trigger_ids, anchor_ids))}
                    row["test_soft"] = soft_accuracy(backend, task, template, soft.vectors, examples)
                    row["test_projected"] = hard_accuracy(backend, task, template, result.trigger_ids,
                                                          examples)
                    row["distances"] = distance_stats(backend, soft.vectors, allowed)
                    row["seconds"] = round(time.time() - t0, 1)
                    emit(row)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
