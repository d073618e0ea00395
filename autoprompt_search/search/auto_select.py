"""Fitness and selection of the ``auto`` search: pure functions on cached label-word scores.

A candidate prompt (template + demonstrations) is run once per labelled example with every
candidate label word of every class at [P]; what is kept is an ``[n, W]`` matrix of label-word
log-probabilities (``logp``), plus the same for the content-free inputs (``cf``, ``[3, W]``) and
for the domain premise (``pmi``, ``[W]``). Everything here works on those matrices, with no model:

* a verbalizer :class:`Option` names, per class, which columns are its label words; class scores
  are the log-sum-exp of a class's words (as :class:`~autoprompt_search.scoring.targets.LabelWords`
  computes them);
* calibration offsets of every mode come from the same matrices, with the formulas of
  :mod:`autoprompt_search.scoring.calibration` (``prior_offsets``, ``normalised_offsets``);
* :func:`choose` picks the verbalizer option and the calibration mode on some rows (the rows a
  fold trains on), :func:`cross_validate` scores that whole procedure on held-out folds, so the
  cross-validated score is of the selection, not of one lucky choice;
* the final choice is by :func:`cv_score` (mean over folds minus a spread penalty), never by one
  dev score; :func:`promote` keeps the better part of a rung (successive halving);
* :func:`ensemble_weights` and :func:`ensemble_cv` for ``--ensemble K``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.errors import UserError
from ..scoring.calibration import Calibration, apply_offsets, normalised_offsets, prior_offsets
from ..scoring.distributions import DistributionCache
from ..scoring.evaluation import ensemble_scores
from ..scoring.targets import LabelWords
from .verbalizers import Calibration as ScreenCalibration
from .verbalizers import Candidate as WordCandidate
from .verbalizers import Setting, pick_verbalizer

FIT_ONLY = -1  # the fold of a row that is never held out (--no-cv: the train split)


class Objective(str, enum.Enum):
    """What a choice maximises per example (the held-out score is always accuracy)."""

    accuracy = "accuracy"
    ce = "ce"  # log-probability of the gold class (calibrated, renormalised over the classes)
    margin = "margin"  # gold class minus the best other class, clipped to +-MARGIN_CLIP


MARGIN_CLIP = 5.0


@dataclass(frozen=True)
class Option:
    """A verbalizer: per class, the columns of its label words in the candidate's matrix."""

    name: str
    words: tuple[tuple[int, ...], ...]

    def label_words(self) -> LabelWords:
        pairs = [(c, j) for c, cols in enumerate(self.words) for j in cols]
        return LabelWords(tuple(c for c, _ in pairs), tuple((j,) for _, j in pairs), len(self.words))

    def columns(self) -> list[int]:
        return [j for cols in self.words for j in cols]


def class_scores(logp: torch.Tensor, option: Option) -> torch.Tensor:
    """``[n, C]`` class scores (log-sum-exp of each class's words) from ``[n, W]`` word log-probs."""
    return option.label_words().class_scores(logp[:, option.columns()].float())


@dataclass
class Scores:
    """What selection needs of one candidate, on the rows it was scored on."""

    logp: torch.Tensor  # [n, W] label-word log-probs
    gold: torch.Tensor  # [n] gold class
    folds: torch.Tensor  # [n] held-out fold of each row (FIT_ONLY: never held out)
    options: list[Option]
    num_classes: int
    cf: torch.Tensor | None = None  # [3, W] content-free inputs' word log-probs
    pmi: torch.Tensor | None = None  # [W] the premise's word log-probs
    screen: bool = False  # add verbalizers screened on the fit rows (pick_verbalizer)
    column_class: list[int] = field(default_factory=list)  # the class of each column's word


def offsets(scores: Scores, option: Option, mode: Calibration, fit: torch.Tensor) -> torch.Tensor | None:
    """``[C]`` offsets of ``mode`` for ``option`` (train-prior: estimated on the rows ``fit``);
    None when the mode has nothing to estimate from."""
    if mode is Calibration.NONE:
        return torch.zeros(scores.num_classes)
    if mode is Calibration.CONTENT_FREE:  # (no rows: the prompt cannot read content-free inputs)
        if scores.cf is None or not len(scores.cf):
            return None
        return prior_offsets(class_scores(scores.cf, option))
    if mode is Calibration.PMI:  # (NaN: the premise could not be scored)
        if scores.pmi is None or bool(torch.isnan(scores.pmi[option.columns()]).any()):
            return None
        return normalised_offsets(class_scores(scores.pmi[None], option))
    return prior_offsets(class_scores(scores.logp[fit], option))


def label_entropy(pred: torch.Tensor, num_classes: int) -> float:
    """Entropy of the predicted-label distribution, divided by log C (1: balanced, 0: one label)."""
    if not len(pred):
        return 0.0
    p = torch.bincount(pred, minlength=num_classes).double() / len(pred)
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return float(h / math.log(num_classes))


def objective_values(calibrated: torch.Tensor, gold: torch.Tensor, objective: Objective) -> torch.Tensor:
    """``[n]`` per-example objective of calibrated class scores."""
    if objective is Objective.accuracy:
        return (calibrated.argmax(-1) == gold).double()
    logsm = torch.log_softmax(calibrated.double(), -1)
    own = logsm.gather(-1, gold[:, None])[:, 0]
    if objective is Objective.ce:
        return own
    other = logsm.scatter(-1, gold[:, None], -math.inf).max(-1).values
    return (own - other).clamp(-MARGIN_CLIP, MARGIN_CLIP)


@dataclass
class Choice:
    """A verbalizer option and calibration mode chosen on some rows, with its offsets."""

    option: Option
    mode: Calibration
    offsets: torch.Tensor
    value: float  # the fit rows' mean objective + balance x label entropy
    accuracy: float  # on the fit rows

    def calibrated(self, logp: torch.Tensor) -> torch.Tensor:
        return apply_offsets(class_scores(logp, self.option), self.offsets)


def screened_options(scores: Scores, fit: torch.Tensor) -> list[Option]:
    """Verbalizers picked on the rows ``fit`` from every word of the candidate (one word per class,
    as ``search-labels --mode cached`` picks them: without and with train-prior offsets)."""
    n_cols = scores.logp.shape[1]
    cache = DistributionCache(scores.logp, scores.gold, scores.num_classes, n_cols)
    cands = [WordCandidate(str(j), c, (j,), "column") for j, c in enumerate(scores.column_class)]
    out = []
    for name, cal in (("screened", ScreenCalibration.NONE), ("screened-prior", ScreenCalibration.TRAIN_PRIOR)):
        try:
            pick = pick_verbalizer(cache, cands, fit, Setting(1, cal))
        except UserError:
            continue
        out.append(Option(name, tuple(tuple(cands[i].ids[0] for i in idx) for idx in pick.chosen)))
    return out


def choose(scores: Scores, fit: torch.Tensor, modes: Sequence[Calibration], objective: Objective,
           balance: float) -> Choice:
    """The option and mode with the best mean objective plus ``balance`` x label entropy on the rows
    ``fit`` (ties: higher gold log-likelihood, then the first in option and mode order)."""
    fit = torch.as_tensor(fit, dtype=torch.long)
    options = list(scores.options) + (screened_options(scores, fit) if scores.screen else [])
    gold = scores.gold[fit]
    best, best_key = None, None
    for option in options:
        raw = class_scores(scores.logp[fit], option)
        for mode in modes:
            off = offsets(scores, option, mode, fit)
            if off is None:
                continue
            cal = apply_offsets(raw, off)
            pred = cal.argmax(-1)
            value = float(objective_values(cal, gold, objective).mean()) \
                + balance * label_entropy(pred, scores.num_classes)
            tie = float(objective_values(cal, gold, Objective.ce).mean())
            key = (round(value, 9), round(tie, 9))
            if best_key is None or key > best_key:
                acc = float((pred == gold).double().mean())
                best, best_key = Choice(option, mode, off, value, acc), key
    if best is None:
        raise UserError("no verbalizer and calibration could be scored on these examples")
    return best


@dataclass
class CV:
    """A candidate's cross-validated scores: per fold held-out accuracy, objective and label
    entropy of the choice made on the other folds."""

    accuracy: list[float]
    objective: list[float]
    entropy: list[float]
    picks: list[str]  # per fold: the option and mode chosen on its training part
    mean: float
    std: float
    score: float  # mean - spread x std: what the final choice maximises
    fitness: float  # objective mean - spread x std + balance x entropy: what promotion ranks by

    def to_json(self) -> dict:
        return {"accuracy": [round(a, 6) for a in self.accuracy], "picks": self.picks,
                "mean": round(self.mean, 6), "std": round(self.std, 6),
                "score": round(self.score, 6), "fitness": round(self.fitness, 6),
                "entropy": [round(e, 4) for e in self.entropy]}


def cv_summary(accuracy: Sequence[float], spread: float) -> tuple[float, float, float]:
    """(mean, population std, mean - spread x std) of per-fold scores."""
    t = torch.tensor([float(a) for a in accuracy], dtype=torch.float64)
    mean, std = float(t.mean()), float(t.std(unbiased=False)) if len(t) > 1 else 0.0
    return mean, std, mean - spread * std


def fold_ids(folds: torch.Tensor) -> list[int]:
    return sorted(int(f) for f in torch.unique(folds) if int(f) != FIT_ONLY)


def cross_validate(scores: Scores, modes: Sequence[Calibration], objective: Objective,
                   balance: float, spread: float) -> CV:
    """Held-out scores of the whole selection procedure: on each fold, the option and mode are
    chosen on the other rows only and scored on the fold."""
    acc, obj, ent, picks = [], [], [], []
    for f in fold_ids(scores.folds):
        held = torch.nonzero(scores.folds == f)[:, 0]
        fit = torch.nonzero(scores.folds != f)[:, 0]
        choice = choose(scores, fit, modes, objective, balance)
        cal = choice.calibrated(scores.logp[held])
        gold = scores.gold[held]
        acc.append(float((cal.argmax(-1) == gold).double().mean()))
        obj.append(float(objective_values(cal, gold, objective).mean()))
        ent.append(label_entropy(cal.argmax(-1), scores.num_classes))
        picks.append(f"{choice.option.name}/{choice.mode.value}")
    if not acc:
        raise UserError("no held-out fold to score on")
    mean, std, score = cv_summary(acc, spread)
    obj_mean, obj_std, _ = cv_summary(obj, spread)
    fitness = obj_mean - spread * obj_std + balance * sum(ent) / len(ent)
    return CV(acc, obj, ent, picks, mean, std, score, fitness)


def final_choice(candidates: Sequence[tuple[int, float, float]]) -> int:
    """The id of the best ``(id, cv score, fitness)``: highest score, then fitness, then the
    earliest id. Never a single dev score: the score is a mean over folds minus a spread penalty."""
    if not candidates:
        raise UserError("no candidate was scored")
    return max(candidates, key=lambda c: (round(c[1], 9), round(c[2], 9), -c[0]))[0]


# --- rows, folds, rungs -----------------------------------------------------------------
def nested_order(gold: Sequence[int], k: int, seed: int) -> tuple[list[int], list[int]]:
    """(an order of the rows whose every prefix is class-stratified, the fold of each row).

    Each class's rows are shuffled (seeded) and dealt round-robin across the classes, largest
    share first; a row's fold is its rank within its class modulo ``k``, so any prefix's rows
    are split evenly across folds and classes."""
    gold = [int(g) for g in gold]
    gen = torch.Generator().manual_seed(int(seed))
    by_class: dict[int, list[int]] = {}
    for i, g in enumerate(gold):
        by_class.setdefault(g, []).append(i)
    queues = {c: [rows[j] for j in torch.randperm(len(rows), generator=gen).tolist()]
              for c, rows in sorted(by_class.items())}
    folds = [0] * len(gold)
    for rows in queues.values():
        for rank, i in enumerate(rows):
            folds[i] = rank % k if k > 0 else FIT_ONLY
    order, taken = [], dict.fromkeys(queues, 0)
    total = len(gold)
    while len(order) < total:  # deal by the largest remaining share (proportional prefixes)
        c = max(queues, key=lambda c: ((len(queues[c]) - taken[c]) / len(queues[c]), -c))
        order.append(queues[c][taken[c]])
        taken[c] += 1
    return order, folds


def rung_sizes(n: int, rungs: int, eta: int, least: int) -> list[int]:
    """Rows scored at each rung of successive halving: ``n / eta^(rungs-1-r)`` (at least
    ``least``), the last rung all ``n`` rows; repeated sizes are merged."""
    sizes = []
    for r in range(rungs):
        size = min(n, max(least, math.ceil(n / eta ** (rungs - 1 - r))))
        if not sizes or size > sizes[-1]:
            sizes.append(size)
    if sizes[-1] != n:
        sizes.append(n)
    return sizes


def promote(ranked: Sequence[tuple[int, float]], eta: int, keep_at_least: int = 1) -> list[int]:
    """Ids of the better ``1/eta`` of ``(id, fitness)`` (at least ``keep_at_least``), best first."""
    order = sorted(ranked, key=lambda r: (-round(r[1], 9), r[0]))
    keep = max(keep_at_least, math.ceil(len(order) / eta))
    return [i for i, _ in order[:keep]]


# --- ensembles --------------------------------------------------------------------------
def ensemble_weights(accuracies: Sequence[float], num_classes: int) -> list[float]:
    """SAMME weights (multi-class AdaBoost, as PromptBoosting weighs its weak learners) from each
    member's cross-validated accuracy, normalised to sum to one (a member at or below chance gets
    none; all at or below chance: equal weights)."""
    alphas = []
    for a in accuracies:
        a = min(max(float(a), 1e-3), 1 - 1e-3)
        alphas.append(max(0.0, math.log(a / (1 - a)) + math.log(num_classes - 1)))
    total = sum(alphas)
    if total <= 0:
        return [1 / len(alphas)] * len(alphas)
    return [a / total for a in alphas]


def combine(calibrated: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``[n, C]``: the ensemble's class scores, as evaluation scores a saved ensemble
    (:func:`~autoprompt_search.scoring.evaluation.ensemble_scores`)."""
    return ensemble_scores(calibrated, weights)


def ensemble_cv(members: Sequence[Scores], weights: Sequence[float], modes: Sequence[Calibration],
                objective: Objective, balance: float, spread: float) -> CV:
    """Held-out accuracy of the weighted ensemble (members on the same rows and folds), each
    member's option and mode chosen on the fold's training part only."""
    first = members[0]
    acc, ent, picks = [], [], []
    for f in fold_ids(first.folds):
        held = torch.nonzero(first.folds == f)[:, 0]
        fit = torch.nonzero(first.folds != f)[:, 0]
        cals = []
        for m in members:
            choice = choose(m, fit, modes, objective, balance)
            cals.append(choice.calibrated(m.logp[held]))
        pred = combine(cals, weights).argmax(-1)
        acc.append(float((pred == first.gold[held]).double().mean()))
        ent.append(label_entropy(pred, first.num_classes))
        picks.append("ensemble")
    mean, std, score = cv_summary(acc, spread)
    return CV(acc, acc, ent, picks, mean, std, score, score + balance * sum(ent) / len(ent))

