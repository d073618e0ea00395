"""Honest human baselines for ``compare``: what a user without the test labels would pick.

"The best human prompt" on the test split is an oracle: it is chosen with the labels the
comparison is scored on. For the human prompts of the task (those of its YAML file, in their
order) :func:`human_baselines` reports four baselines, each as a test score:

(a) **standard** -- the literature's prompt of the task (``standard:`` in the task file); a task
    without one falls back to its first prompt, and the block says so;
(b) **selected** -- the prompt a user would pick: best accuracy on the dev split
    (``select_on="dev"``), or best mean held-out accuracy over ``folds`` seeded, class-stratified
    folds of train + dev (``select_on="cv"``, for a tiny dev split); ties go to the prompt that
    comes first in the task file. With ``train-prior`` calibration a fold's offsets are estimated
    from the other folds' inputs (the held-out fold stays unseen); the other modes need no data;
(c) **spread** -- mean, sample std and range (min-max) of the human prompts' test scores;
(d) **oracle** -- the best human prompt on the test split itself, labelled "oracle (selected on
    test)" (on another compared split, that split's name).

The block is computed per calibration (``none``, and the comparison's mode when it has one);
``compare`` tests every prompt against (b) of the mode its human prompts are scored with.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.config import parse_choice
from ..core.data import Example
from ..core.errors import UserError
from ..core.tasks import Task
from ..scoring.calibration import Calibration, estimate_calibration
from ..scoring.evaluation import Evaluation, evaluate_examples
from ..scoring.scorer import PromptScorer
from ..scoring.specs import PromptSpec
from .stats import spread

DEFAULT_FOLDS = 4


def oracle_label(split: str = "test") -> str:
    """The oracle's label: it is chosen on the split it is scored on."""
    return f"oracle (selected on {split})"


class SelectOn(str, enum.Enum):
    """Where the human prompt a user would pick is chosen."""

    DEV = "dev"  # best on the dev split
    CV = "cv"  # best mean held-out accuracy over k folds of train + dev


def parse_selection(select_on: str | SelectOn, folds: int | None) -> tuple[SelectOn, int | None]:
    """(``select_on``, its fold count) checked: a user error for a bad choice, ``folds`` below 2,
    or ``folds`` given with ``dev``."""
    how = parse_choice(SelectOn, select_on, "--select-on")
    if how is SelectOn.DEV:
        if folds is not None:
            raise UserError("--folds goes with --select-on cv")
        return how, None
    folds = DEFAULT_FOLDS if folds is None else int(folds)
    if folds < 2:
        raise UserError(f"--folds must be at least 2 (cross-validation holds one fold out), got {folds}")
    return how, folds


def selection_label(how: SelectOn | str) -> str:
    """How the selected prompt is named in the output: 'dev-selected' or 'cv-selected'."""
    return f"{SelectOn(how).value}-selected"


def stratified_folds(labels: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """``k`` folds of the positions ``0..len(labels)-1``: each class's positions in a seeded
    random order dealt round-robin, continuing where the previous class stopped, so the folds
    differ in size by at most one and each holds every class in proportion. Positions are sorted
    within a fold."""
    if k < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got {k}")
    if k > len(labels):
        raise UserError(f"{k} folds need at least {k} examples, got {len(labels)}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    folds: list[list[int]] = [[] for _ in range(k)]
    turn = 0
    for y in sorted(by_class):
        idx = by_class[y]
        for j in rng.permutation(len(idx)):
            folds[turn % k].append(idx[j])
            turn += 1
    return [sorted(f) for f in folds]


def first_best(scores: Sequence[float]) -> int:
    """The position of the highest score; ties go to the earliest (the task file's order)."""
    if not scores:
        raise ValueError("no scores to choose from")
    best = max(scores)
    return next(i for i, s in enumerate(scores) if s == best)


@dataclass
class ScoredHuman:
    """One human prompt of the task as compared: its name, its position in the task file, its
    spec, and its test evaluation under one calibration."""

    name: str
    index: int
    spec: PromptSpec
    test: Evaluation


def _score(ev: Evaluation) -> dict[str, Any]:
    return {"accuracy": ev.metrics["accuracy"], "macro_f1": ev.metrics.get("macro_f1"),
            "n": ev.metrics["n"]}


def cv_scores(task: Task, specs: Sequence[PromptSpec], folds: int, seed: int,
              score: Callable[[PromptSpec, list[Example], list[Example]], Evaluation]
              ) -> tuple[list[float], int]:
    """(mean held-out accuracy over the folds of train + dev per spec, number of examples).

    ``score(spec, held_out, others)`` evaluates a spec on a held-out fold; ``others`` (the rest
    of train + dev) is all a calibration that learns from data (train-prior) may see."""
    pooled = list(task.examples("train")) + list(task.examples("dev"))
    parts = stratified_folds([ex.label for ex in pooled], folds, seed)
    out = []
    for spec in specs:
        accs = []
        for f, part in enumerate(parts):
            held = [pooled[i] for i in part]
            rest = [pooled[i] for g, other in enumerate(parts) if g != f for i in other]
            accs.append(score(spec, held, rest).metrics["accuracy"])
        out.append(float(np.mean(accs)))
    return out, len(pooled)


def examples_scorer(backend, task: Task, *, batch_size: int, rule: str, premise: str | None
                    ) -> Callable[[PromptSpec, list[Example], list[Example] | None, Calibration], Evaluation]:
    """``score(spec, examples, train, calibration)``: a spec's evaluation on ``examples`` through
    the one engine, with ``calibration`` estimated for it (train-prior from ``train`` when given)."""

    def score(spec: PromptSpec, examples: list[Example], train: list[Example] | None,
              calibration: Calibration) -> Evaluation:
        scorer = PromptScorer(backend, task, spec.template, spec.verbalizer, spec.fewshot,
                              batch_size, rule)
        record: Any = None if calibration is Calibration.NONE else calibration
        if calibration is Calibration.TRAIN_PRIOR and train is not None:
            record = estimate_calibration(calibration, scorer, spec.triggers, train=train)
        return evaluate_examples(scorer, examples, spec.triggers, "cv", calibration=record,
                                 premise=premise)

    return score


def baseline_block(task: Task, humans: list[ScoredHuman], calibration: Calibration,
                   selection: dict[str, Any], skipped: dict[int, str], split: str = "test"
                   ) -> dict[str, Any]:
    """The four baselines of one calibration from the human prompts' test evaluations and the
    selection (``{"on", "folds", "scores": {name: score} | None, "n", "reason"}``); ``skipped``
    maps the task-file position of each human prompt the model could not score to why."""
    humans = sorted(humans, key=lambda h: h.index)
    block: dict[str, Any] = {"calibration": calibration.value}
    # (a) the literature's prompt, else the first one
    pick = task.standard_index()
    standard: dict[str, Any] = {"name": None, "literature": False}
    if pick is not None:
        i, literature = pick
        prompt = task.prompts[i]
        standard = {"name": prompt.name or prompt.template, "literature": literature,
                    "template": prompt.template, "source": prompt.source}
        if not literature:
            standard["note"] = (f"task '{task.name}' names no literature prompt (no 'standard:' in "
                                "its task file): the first prompt stands in")
        match = next((h for h in humans if h.index == i), None)
        if match is None:
            why = f"not scored: {skipped.get(i, 'left out of the comparison')}"
            standard["note"] = f"{standard['note']}; {why}" if "note" in standard else why
        else:
            standard.update(name=match.name, **_score(match.test))
    block["standard"] = standard
    # (b) the prompt a user would pick
    scores = selection.get("scores")
    selected: dict[str, Any] = {"on": selection["on"], "folds": selection.get("folds"),
                                "label": selection_label(selection["on"]),
                                "selection_n": selection.get("n")}
    if "note" in selection:
        selected["note"] = selection["note"]
    if scores:
        names = [h.name for h in humans if h.name in scores]
        chosen = names[first_best([scores[n] for n in names])]
        match = next(h for h in humans if h.name == chosen)
        selected.update(name=chosen, selection_accuracy=scores[chosen], scores=scores,
                        **_score(match.test))
    else:
        selected.update(name=None, reason=selection.get("reason", "no human prompt to select"))
    block["selected"] = selected
    # (c) the spread and (d) the oracle
    if humans:
        accs = [h.test.metrics["accuracy"] for h in humans]
        block["spread"] = {"accuracy": spread(accs).to_dict()}
        if all(h.test.metrics.get("macro_f1") is not None for h in humans):
            block["spread"]["macro_f1"] = spread([h.test.metrics["macro_f1"] for h in humans]).to_dict()
        best = humans[first_best(accs)]
        block["oracle"] = {"name": best.name, "label": oracle_label(split), **_score(best.test)}
    return block
