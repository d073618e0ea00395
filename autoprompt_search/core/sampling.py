"""Seeded, class-stratified samples of examples: the evaluation protocol's test subsets.

Several test files are sorted by label, so "the first N examples" can hold a single class.
:func:`stratified_sample` draws N examples with each class represented in proportion to its
share of the split (largest-remainder rounding), chosen by a seeded permutation within each
class, and returns them in the split's order. The same (examples, n, seed) always gives the
same subset, so every prompt is scored on the same examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from .errors import UserError

T = TypeVar("T")


def class_quotas(counts: Sequence[int], n: int) -> list[int]:
    """How many of ``n`` to take from each class of sizes ``counts`` (proportional,
    largest remainder, never more than a class holds)."""
    total = sum(counts)
    if n >= total:
        return list(counts)
    exact = [n * c / total for c in counts]
    quota = [min(int(e), c) for e, c in zip(exact, counts)]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    left = n - sum(quota)
    while left > 0:
        for i in order:
            if left and quota[i] < counts[i]:
                quota[i] += 1
                left -= 1
    return quota


def stratified_sample(examples: Sequence[T], n: int | None, seed: int = 0,
                      label=lambda ex: ex.label) -> list[T]:
    """``n`` of ``examples`` stratified by ``label(ex)`` (all of them when ``n`` is None or at
    least their number), in their original order."""
    if n is None or n >= len(examples):
        return list(examples)
    if n < 1:
        raise UserError(f"a sample needs at least one example, got {n}")
    by_class: dict = {}
    for i, ex in enumerate(examples):
        by_class.setdefault(label(ex), []).append(i)
    classes = sorted(by_class, key=str)
    quotas = class_quotas([len(by_class[c]) for c in classes], n)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c, q in zip(classes, quotas):
        idx = by_class[c]
        keep += [idx[j] for j in rng.permutation(len(idx))[:q]]
    return [examples[i] for i in sorted(keep)]
