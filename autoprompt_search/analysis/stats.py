"""Statistics for comparing prompts on the same examples (plain numpy/scipy).

* :func:`bootstrap_ci` / :func:`accuracy_ci` / :func:`macro_f1_ci` -- percentile
  bootstrap 95% intervals over examples;
* :func:`mcnemar` -- McNemar's test on paired correctness (exact binomial and mid-p);
* :func:`paired_bootstrap` -- the difference in accuracy of two prompts on the same
  examples, its interval and a two-sided bootstrap p-value;
* :func:`spread` -- min / max / std of scores across prompts (e.g. human paraphrases).

Every resampling function takes a ``seed`` and gives the same answer for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binom

from ..core.errors import UserError

DEFAULT_RESAMPLES = 2000


def _as_bool(x: Sequence, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise UserError(f"{name}: expected a 1-D sequence of per-example results")
    return arr.astype(bool)


def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    if n == 0:
        raise UserError("cannot bootstrap an empty set of examples")
    if resamples < 1:
        raise UserError(f"resamples must be at least 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise UserError(f"confidence level must be between 0 and 1, got {level}")
    tail = (1 - level) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def bootstrap_ci(stat: Callable[[np.ndarray], np.ndarray], n: int, *, level: float = 0.95,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``stat(index)`` over bootstrap resamples of ``n`` examples.

    ``stat`` receives a [resamples, n] array of example indices and returns one value
    per row.
    """
    idx = _resample_index(n, resamples, seed)
    return _percentiles(np.asarray(stat(idx), dtype=float), level)


def accuracy_ci(correct: Sequence, *, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the accuracy from per-example correctness (0/1)."""
    c = _as_bool(correct, "correct").astype(float)
    return bootstrap_ci(lambda idx: c[idx].mean(axis=1), len(c), level=level,
                        resamples=resamples, seed=seed)


def macro_f1_batch(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro-F1 of each row of [R, n] gold/pred arrays.

    As in :func:`autoprompt_search.scoring.metrics.classification_metrics`, a class absent
    from a row's gold labels does not count in that row's average.
    """
    gold = np.atleast_2d(gold)
    pred = np.atleast_2d(pred)
    f1_sum = np.zeros(gold.shape[0])
    present = np.zeros(gold.shape[0])
    for c in range(num_classes):
        g, p = gold == c, pred == c
        tp = np.sum(g & p, axis=1)
        fp = np.sum(~g & p, axis=1)
        fn = np.sum(g & ~p, axis=1)
        has = (tp + fn) > 0
        denom = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros(len(tp), dtype=float), where=denom > 0)
        f1_sum += np.where(has, f1, 0.0)
        present += has
    return np.divide(f1_sum, present, out=np.full(len(present), np.nan), where=present > 0)


def macro_f1_ci(gold: Sequence[int], pred: Sequence[int], num_classes: int, *, level: float = 0.95,
                resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the macro-F1 (examples resampled with their gold and prediction)."""
    g, p = np.asarray(gold), np.asarray(pred)
    if g.shape != p.shape:
        raise UserError(f"gold and predictions differ in length ({len(g)} vs {len(p)})")
    return bootstrap_ci(lambda idx: macro_f1_batch(g[idx], p[idx], num_classes), len(g),
                        level=level, resamples=resamples, seed=seed)


@dataclass(frozen=True)
class PairedTest:
    """Prompt A against prompt B on the same examples."""

    n: int
    only_a: int  # examples A gets right and B gets wrong
    only_b: int  # examples B gets right and A gets wrong
    delta: float  # accuracy(A) - accuracy(B)
    p_exact: float  # McNemar, exact two-sided binomial
    p_midp: float  # McNemar mid-p
    delta_ci: tuple[float, float] | None = None  # paired bootstrap interval of delta
    p_bootstrap: float | None = None  # paired bootstrap two-sided p-value

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta_ci"] = list(self.delta_ci) if self.delta_ci is not None else None
        return d


def _paired(correct_a: Sequence, correct_b: Sequence) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if a.shape != b.shape:
        raise UserError(
            f"a paired test needs the same examples for both prompts ({len(a)} vs {len(b)} results)"
        )
    return a, b


def mcnemar(correct_a: Sequence, correct_b: Sequence) -> PairedTest:
    """McNemar's test: exact two-sided binomial p-value and the mid-p variant.

    Only discordant examples count: ``only_a`` (A right, B wrong) and ``only_b``.
    Under the null both are Binomial(only_a + only_b, 1/2). With no discordant
    examples both p-values are 1.
    """
    a, b = _paired(correct_a, correct_b)
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    m, k = n01 + n10, min(n01, n10)
    if m == 0:
        p_exact = p_mid = 1.0
    else:
        tail = float(binom.cdf(k, m, 0.5))
        p_exact = min(1.0, 2.0 * tail)
        p_mid = min(1.0, 2.0 * tail - float(binom.pmf(k, m, 0.5)))
    delta = float(a.mean() - b.mean()) if len(a) else float("nan")
    return PairedTest(len(a), n01, n10, delta, p_exact, p_mid)


def paired_bootstrap(correct_a: Sequence, correct_b: Sequence, *, level: float = 0.95,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> PairedTest:
    """McNemar plus a paired bootstrap of accuracy(A) - accuracy(B).

    Examples are resampled together for both prompts. The two-sided p-value is
    ``2 * min(P*(delta <= 0), P*(delta >= 0))`` over the resamples, capped at 1.
    """
    a, b = _paired(correct_a, correct_b)
    test = mcnemar(a, b)
    diff = a.astype(float) - b.astype(float)
    deltas = diff[_resample_index(len(diff), resamples, seed)].mean(axis=1)
    lo, hi = _percentiles(deltas, level)
    p = min(1.0, 2.0 * min(float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))))
    return PairedTest(test.n, test.only_a, test.only_b, test.delta, test.p_exact, test.p_midp,
                      (lo, hi), p)


@dataclass(frozen=True)
class Spread:
    """How much a score moves across prompts."""

    n: int
    min: float
    max: float
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single prompt

    @property
    def range(self) -> float:
        return self.max - self.min

    def to_dict(self) -> dict:
        return {**asdict(self), "range": self.range}


def spread(values: Sequence[float]) -> Spread:
    """Min / max / mean / sample std of ``values`` (e.g. accuracies of human paraphrases)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise UserError("no scores to summarise")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Spread(int(v.size), float(v.min()), float(v.max()), float(v.mean()), std)
