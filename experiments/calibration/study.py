"""The calibration study of issue 11: human prompts x calibration modes x scoring rules, split seeds 13/21/42.

Stages (each resumable: a file that exists is not recomputed; run them in this order):

``split``
    For every task, split seed and human prompt (and scoring rule): the per-example class
    log-probabilities of the split's train and dev examples, and the prompt's content-free and
    PMI offsets (these do not depend on the split). ``split_scores/<task>/<seed>/<prompt>.<rule>.json``.
``verbalizer``
    For every task and split seed: the cached-distribution verbalizer search
    (``search-labels --mode cached``, 4 folds over train + dev, with and without train-prior
    calibration) from the template a user would pick on dev, then that verbalizer scored on the
    test subset. ``verbalizer/<task>/<seed>.json``.
``table``
    Everything from the caches above and ``test_scores/`` (``score_test.py``): per task,
    calibration mode and rule, the four baselines of the issue (the literature's standard prompt,
    the prompt picked on dev, mean/std/range of the human prompts, the test oracle), the jointly
    dev-picked prompt and calibration, the verbalizer search; mean +- std over split seeds;
    McNemar p of each against the uncalibrated dev-picked prompt of the same seed; compute.
    Writes ``table.md`` and ``table.json``.

Selection never looks at test labels: a prompt (or a calibration mode) is picked by its dev
accuracy, ties broken by the order of the task file; test scores are read only to report.

    OMP_NUM_THREADS=1 python experiments/calibration/study.py split
    OMP_NUM_THREADS=1 python experiments/calibration/study.py verbalizer
    python experiments/calibration/study.py table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.sampling import stratified_sample
from autoprompt_search.core.tasks import Task
from autoprompt_search.scoring.calibration import (
    Calibration,
    apply_offsets,
    estimate_calibration,
    prior_offsets,
)
from autoprompt_search.scoring.scorer import PromptScorer

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data"
TASKS = ["sst-2", "sst-5", "agnews", "trec"]
SEEDS = [13, 21, 42]
MODES = [m.value for m in Calibration]
TEST_N, TEST_SEED = 1000, 0


def _load_backend(name: str):
    from autoprompt_search.models import load_model

    return load_model(name)


def make_scorer(backend, task: Task, template: str, verbalizer, rule: str) -> PromptScorer:
    kwargs = {} if rule == "direct" else {"rule": rule}
    return PromptScorer(backend, task, template, verbalizer, batch_size=16, **kwargs)


def _rows(t: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in t]


# --- stage: split ---------------------------------------------------------------------------
def stage_split(args, backend) -> None:
    for name in args.tasks:
        for seed in args.seeds:
            task = Task.load(name, data_root=args.data_root, seed=seed)
            train, dev = task.examples("train"), task.examples("dev")
            for prompt in task.prompts:
                for rule in args.rules:
                    path = HERE / "split_scores" / name / str(seed) / f"{prompt.name}.{rule}.json"
                    if path.exists():
                        continue
                    path.parent.mkdir(parents=True, exist_ok=True)
                    start = time.perf_counter()
                    record = {"task": name, "seed": seed, "prompt": prompt.name, "rule": rule,
                              "template": prompt.template, "model": backend.name,
                              "verbalizer": prompt.verbalizer or task.verbalizer}
                    try:
                        scorer = make_scorer(backend, task, prompt.template, prompt.verbalizer, rule)
                        train_s = scorer.class_logprobs(train)
                        dev_s = scorer.class_logprobs(dev)
                        record.update(train=_rows(train_s), dev=_rows(dev_s),
                                      train_gold=[ex.label for ex in train],
                                      dev_gold=[ex.label for ex in dev])
                        offsets = {"none": [0.0] * len(task.labels),
                                   "train-prior": prior_offsets(train_s.float()).tolist()}

                        def score(examples, scorer=scorer):
                            return scorer.class_logprobs(examples).float()

                        cf = estimate_calibration("content-free", scorer, score=score)
                        offsets["content-free"] = list(cf.offsets)
                        if rule == "direct":
                            offsets["pmi"] = list(estimate_calibration("pmi", scorer).offsets)
                        record["offsets"] = offsets
                    except UserError as exc:
                        record["skipped"] = str(exc)
                    record["seconds"] = round(time.perf_counter() - start, 1)
                    path.write_text(json.dumps(record) + "\n")
                    print(f"split {name} {seed} {prompt.name} {rule}: {record['seconds']} s"
                          + (" (skipped)" if "skipped" in record else ""), flush=True)


# --- loading the caches --------------------------------------------------------------------
def load_split(name: str, seed: int, prompt: str, rule: str) -> dict | None:
    path = HERE / "split_scores" / name / str(seed) / f"{prompt}.{rule}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return None if "skipped" in record else record


def load_test(name: str, prompt: str, rule: str) -> dict | None:
    suffix = "" if rule == "direct" else f".{rule}"
    path = HERE / "test_scores" / name / f"{prompt}{suffix}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return None if "skipped" in record else record


def predictions(scores, offsets) -> np.ndarray:
    s = apply_offsets(torch.tensor(scores), torch.tensor(offsets))
    return s.argmax(-1).numpy()


def accuracy(scores, offsets, gold) -> float:
    return float((predictions(scores, offsets) == np.asarray(gold)).mean())


def dev_pick(candidates: list[tuple[str, float]]) -> str:
    """The first of the best by dev accuracy (task-file order breaks ties)."""
    best = max(acc for _, acc in candidates)
    return next(key for key, acc in candidates if acc == best)


# --- stage: verbalizer ---------------------------------------------------------------------
def stage_verbalizer(args, backend) -> None:
    from autoprompt_search.search.cached_labels import search_label_words_cached
    from autoprompt_search.search.verbalizers import Calibration as VCal

    for name in args.tasks:
        base = Task.load(name, data_root=args.data_root)
        test = stratified_sample(base.examples("test"), TEST_N, seed=TEST_SEED)
        for seed in args.seeds:
            path = HERE / "verbalizer" / name / f"{seed}.json"
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            task = Task.load(name, data_root=args.data_root, seed=seed)
            # the template a user picks on dev (direct rule, best calibration on dev), among the
            # prompts whose [P] ends the text (the cache reads the distribution at [P])
            cands = []
            for prompt in task.prompts:
                rec = load_split(name, seed, prompt.name, "direct")
                if rec is None or not prompt.template.rstrip(" .").endswith("[P]"):
                    continue
                for mode in MODES:
                    if mode in rec["offsets"]:
                        cands.append(((prompt.name, mode),
                                      accuracy(rec["dev"], rec["offsets"][mode], rec["dev_gold"])))
            (pname, pmode) = dev_pick(cands)
            prompt = next(p for p in task.prompts if p.name == pname)
            start = time.perf_counter()
            found = search_label_words_cached(backend, task, prompt.template,
                                              calibrations=(VCal.NONE, VCal.TRAIN_PRIOR), seed=seed)
            search_s = time.perf_counter() - start
            scorer = make_scorer(backend, task, prompt.template, found.verbalizer, "direct")
            train_s = scorer.class_logprobs(task.examples("train")).float()
            offsets = (prior_offsets(train_s).tolist() if found.calibrate != "none"
                       else [0.0] * len(task.labels))
            start = time.perf_counter()
            test_s = scorer.class_logprobs(test)
            test_seconds = time.perf_counter() - start
            gold = [ex.label for ex in test]
            record = {"task": name, "seed": seed, "template_prompt": pname, "template": prompt.template,
                      "template_dev_calibration": pmode, "verbalizer": found.verbalizer,
                      "calibrate": found.calibrate, "offsets": offsets,
                      "held_out_mean": found.held_out_mean, "held_out_std": found.held_out_std,
                      "setting": found.setting, "search_seconds": round(search_s, 1),
                      "test_seconds": round(test_seconds, 1), "ids": [ex.id for ex in test],
                      "gold": gold, "scores": _rows(test_s),
                      "accuracy": accuracy(_rows(test_s), offsets, gold)}
            path.write_text(json.dumps(record) + "\n")
            print(f"verbalizer {name} {seed}: {pname} -> {found.verbalizer} ({found.calibrate}) "
                  f"test {record['accuracy']:.3f}; {search_s:.0f} s search", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["split", "verbalizer", "table"])
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--rules", nargs="+", default=["direct"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data-root", default=str(DATA))
    args = ap.parse_args()
    if args.stage == "table":
        from table import write_tables  # noqa: PLC0415  (experiments/calibration/table.py)

        write_tables(args)
        return
    backend = _load_backend(args.model)
    {"split": stage_split, "verbalizer": stage_verbalizer}[args.stage](args, backend)


if __name__ == "__main__":
    main()
