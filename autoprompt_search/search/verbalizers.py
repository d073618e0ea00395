"""Verbalizer search on cached distributions, chosen by held-out folds.

One pass caches each labelled example's log-distribution at [P]
(:mod:`autoprompt_search.scoring.distributions`); every candidate verbalizer is then scored from
the cache. Candidates per class: the class name and the task's label words, the class name's
nearest tokens by input-embedding cosine, words the user lists, and (optionally) the words of
AutoPrompt's logistic-regression probe (:mod:`autoprompt_search.search.labels`).

Picking on a set of examples (:func:`pick_verbalizer`): per class, the ``per_class`` candidates
with the best contrast score (mean log-prob on the class's examples minus mean log-prob on the
others, as PromptBoosting), then every combination of one to ``words`` of them per class (greedy
coordinate ascent when there are more than ``max_combinations``), the best by accuracy (ties: the
mean log-probability of the gold class).

Choosing (:func:`cross_validate`): screening saturates at 100 % accuracy on the examples it
picks on (PromptBoosting), so each setting (words per class, calibration) is judged by k-fold:
words picked on the in-fold examples and scored on the held-out fold, never on the examples
they were picked on. The chosen setting has the best mean held-out accuracy minus
``spread_penalty`` times its standard deviation over the folds; it is refit on all examples.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..core.errors import UserError
from ..scoring.distributions import DistributionCache
from ..scoring.targets import LabelWords

MAX_COMBINATIONS = 20000  # more combinations than this: greedy coordinate ascent
COMBO_CHUNK = 2048  # combinations scored together


class Calibration(str, enum.Enum):
    """Class-level offsets subtracted from the cached class scores."""

    NONE = "none"
    TRAIN_PRIOR = "train-prior"  # the mean distribution over the examples picked on


@dataclass(frozen=True)
class Candidate:
    """A possible label word of one class."""

    word: str
    cls: int
    ids: tuple[int, ...]
    source: str  # class-name, verbalizer, neighbour, user, probe


@dataclass(frozen=True)
class Setting:
    """What a fold pick varies: words per class (one up to ``words``) and calibration."""

    words: int
    calibrate: Calibration

    def name(self) -> str:
        return f"words={self.words},calibrate={self.calibrate.value}"


@dataclass
class Pick:
    """Words picked on some examples: candidate indices per class and the in-sample accuracy."""

    chosen: list[list[int]]
    accuracy: float
    contrast: dict[int, float] = field(default_factory=dict)  # candidate -> contrast score

    def verbalizer(self, cands: Sequence[Candidate], labels: Sequence[str]) -> dict[str, list[str]]:
        return {labels[c]: [cands[i].word for i in idx] for c, idx in enumerate(self.chosen)}


def label_words_of(cands: Sequence[Candidate], chosen: Sequence[Sequence[int]],
                   num_classes: int) -> LabelWords:
    """The :class:`LabelWords` of the chosen candidates (indices per class)."""
    pairs = [(c, cands[i].ids) for c, idx in enumerate(chosen) for i in idx]
    return LabelWords(tuple(c for c, _ in pairs), tuple(ids for _, ids in pairs), num_classes)


def contrast_scores(cache: DistributionCache, cands: Sequence[Candidate],
                    rows: torch.Tensor) -> torch.Tensor:
    """``[K]``: each candidate's mean log-prob on its class's examples among ``rows`` minus its
    mean log-prob on the other examples (-inf when ``rows`` lack either)."""
    words = LabelWords(tuple(c.cls for c in cands), tuple(c.ids for c in cands), cache.num_classes)
    logp = cache.word_logprobs(words, rows)  # [n, K]
    gold = cache.gold[rows]
    own = gold[:, None] == torch.tensor([c.cls for c in cands])[None, :]  # [n, K]
    n_own, n_other = own.sum(0), (~own).sum(0)
    mean_own = (logp * own).sum(0) / n_own.clamp_min(1)
    mean_other = (logp * ~own).sum(0) / n_other.clamp_min(1)
    out = mean_own - mean_other
    return out.masked_fill((n_own == 0) | (n_other == 0), -math.inf)


def _option_scores(cache: DistributionCache, cands: Sequence[Candidate],
                   options: list[tuple[int, ...]], rows: torch.Tensor,
                   calibrate: Calibration) -> torch.Tensor:
    """``[O, n]``: the class score of each option (a set of one class's candidates) on the
    examples ``rows``, calibrated with offsets fit on ``rows``."""
    words = LabelWords(tuple(o for o, opt in enumerate(options) for _ in opt),
                       tuple(cands[i].ids for opt in options for i in opt), len(options))
    prior = cache.class_prior(words, rows) if calibrate is Calibration.TRAIN_PRIOR else None
    return cache.class_logprobs(words, rows, prior).T


def _accuracy(scores: Sequence[torch.Tensor], combos: torch.Tensor,
              gold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy ``[M]``, mean gold log-softmax ``[M]``) of option combinations ``[M, C]``."""
    stacked = torch.stack([scores[c][combos[:, c]] for c in range(len(scores))], -1)  # [M, n, C]
    logsm = torch.log_softmax(stacked, -1)
    acc = (stacked.argmax(-1) == gold[None, :]).float().mean(-1)
    fit = logsm.gather(-1, gold[None, :, None].expand(len(combos), -1, 1))[..., 0].mean(-1)
    return acc, fit


def _best(acc: torch.Tensor, fit: torch.Tensor) -> int:
    """Index of the best accuracy, ties broken by the gold log-probability (then the first)."""
    top = acc == acc.max()
    return int(torch.where(top, fit, torch.full_like(fit, -math.inf)).argmax())


def pick_verbalizer(cache: DistributionCache, cands: Sequence[Candidate], rows: torch.Tensor,
                    setting: Setting, *, per_class: int = 4,
                    max_combinations: int = MAX_COMBINATIONS) -> Pick:
    """Words for each class picked on the examples ``rows`` only (see the module docstring)."""
    rows = torch.as_tensor(rows, dtype=torch.long)
    contrast = contrast_scores(cache, cands, rows)
    options: list[list[tuple[int, ...]]] = []
    for c in range(cache.num_classes):
        mine = [i for i, cand in enumerate(cands) if cand.cls == c and math.isfinite(contrast[i])]
        if not mine:
            raise UserError(f"no candidate label word for class {c} can be scored on these examples")
        mine.sort(key=lambda i: -float(contrast[i]))
        top = mine[:per_class]
        options.append([o for m in range(1, setting.words + 1)
                        for o in itertools.combinations(top, m)])
    scores = [_option_scores(cache, cands, opts, rows, setting.calibrate) for opts in options]
    gold = cache.gold[rows]
    total = math.prod(len(o) for o in options)
    if total <= max_combinations:
        best_acc, best_fit, best = -1.0, -math.inf, None
        grid = itertools.product(*(range(len(o)) for o in options))
        while chunk := list(itertools.islice(grid, COMBO_CHUNK)):
            combos = torch.tensor(chunk)
            acc, fit = _accuracy(scores, combos, gold)
            i = _best(acc, fit)
            if (float(acc[i]), float(fit[i])) > (best_acc, best_fit):
                best_acc, best_fit, best = float(acc[i]), float(fit[i]), combos[i]
        choice = best.tolist()
    else:
        choice, best_acc = _greedy(scores, gold)
    chosen = [list(options[c][o]) for c, o in enumerate(choice)]
    return Pick(chosen, best_acc, {i: round(float(contrast[i]), 4) for i in range(len(cands))})


def _greedy(scores: Sequence[torch.Tensor], gold: torch.Tensor, rounds: int = 5) -> tuple[list[int], float]:
    """Coordinate ascent over the classes' options from each class's first (best) option."""
    choice = [0] * len(scores)
    acc = -1.0
    for _ in range(rounds):
        changed = False
        for c in range(len(scores)):
            combos = torch.tensor(choice)[None, :].repeat(len(scores[c]), 1)
            combos[:, c] = torch.arange(len(scores[c]))
            a, fit = _accuracy(scores, combos, gold)
            i = _best(a, fit)
            changed |= i != choice[c]
            choice[c], acc = i, float(a[i])
        if not changed:
            break
    return choice, acc


def held_out_accuracy(cache: DistributionCache, cands: Sequence[Candidate], pick: Pick,
                      rows: torch.Tensor, held: torch.Tensor, calibrate: Calibration) -> float:
    """Accuracy on ``held`` of the words picked on ``rows`` (calibration offsets fit on ``rows``)."""
    words = label_words_of(cands, pick.chosen, cache.num_classes)
    prior = cache.class_prior(words, rows) if calibrate is Calibration.TRAIN_PRIOR else None
    scores = cache.class_logprobs(words, held, prior)
    return float((scores.argmax(-1) == cache.gold[held]).float().mean())


def stratified_folds(gold: torch.Tensor, k: int, seed: int = 0) -> list[torch.Tensor]:
    """``k`` held-out folds of example indices, each class dealt evenly (seeded shuffle)."""
    if k < 2:
        raise UserError(f"--folds must be at least 2, got {k}")
    counts = torch.bincount(gold)
    if int(counts[counts > 0].min()) < k:
        raise UserError(f"--folds {k}: a class has only {int(counts[counts > 0].min())} "
                        "examples; use fewer folds")
    gen = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for c in range(len(counts)):
        idx = torch.nonzero(gold == c)[:, 0]
        idx = idx[torch.randperm(len(idx), generator=gen)]
        for j, i in enumerate(idx.tolist()):
            folds[(start + j) % k].append(i)
        start += len(idx)
    return [torch.tensor(sorted(f)) for f in folds]


@dataclass
class FoldReport:
    """One setting across the folds."""

    setting: str
    held_out: list[float]
    in_fold: list[float]
    picks: list[list[list[str]]]  # per fold, the words picked for each class
    mean: float
    std: float
    score: float  # mean - spread_penalty * std


def cross_validate(cache: DistributionCache, cands: Sequence[Candidate],
                   settings: Sequence[Setting], folds: Sequence[torch.Tensor], *,
                   per_class: int = 4, spread_penalty: float = 0.5,
                   max_combinations: int = MAX_COMBINATIONS,
                   extra: Callable[[torch.Tensor], list[Candidate]] | None = None,
                   ) -> tuple[Setting, Pick, list[Candidate], list[FoldReport], list[dict]]:
    """Choose a setting by held-out accuracy over ``folds`` and refit it on all examples.

    ``extra(rows)`` adds candidates fit on the examples ``rows`` only (the probe's words).
    Returns (the chosen setting, its pick on all examples, the candidates of that pick, a report
    per setting, per fold the candidates' in-fold contrast scores).
    """
    everything = torch.arange(len(cache))
    fold_cands = []
    for held in folds:
        rows = everything[~torch.isin(everything, held)]
        fold_cands.append((rows, held, list(cands) + (extra(rows) if extra else [])))
    reports = []
    for s in settings:
        held_acc, in_acc, picks = [], [], []
        for rows, held, fc in fold_cands:
            pick = pick_verbalizer(cache, fc, rows, s, per_class=per_class,
                                   max_combinations=max_combinations)
            held_acc.append(held_out_accuracy(cache, fc, pick, rows, held, s.calibrate))
            in_acc.append(pick.accuracy)
            picks.append([[fc[i].word for i in idx] for idx in pick.chosen])
        t = torch.tensor(held_acc)
        std = float(t.std(unbiased=False))
        reports.append(FoldReport(s.name(), held_acc, in_acc, picks, float(t.mean()), std,
                                  float(t.mean()) - spread_penalty * std))
    best = max(range(len(settings)), key=lambda i: (reports[i].score, -i))
    final_cands = list(cands) + (extra(everything) if extra else [])
    final = pick_verbalizer(cache, final_cands, everything, settings[best], per_class=per_class,
                            max_combinations=max_combinations)
    contrast = []
    for f, (rows, held, fc) in enumerate(fold_cands):
        scores = contrast_scores(cache, fc, rows)
        contrast.append({"fold": f, "held_out": held.tolist(),
                         "candidates": [{**asdict(c), "ids": list(c.ids),
                                         "contrast": round(float(v), 4)}
                                        for c, v in zip(fc, scores)]})
    return settings[best], final, final_cands, reports, contrast
