from collections import Counter

import pytest

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.sampling import class_quotas, stratified_sample


def test_quotas_are_proportional_and_sum_to_n():
    assert class_quotas([50, 50], 10) == [5, 5]
    assert class_quotas([60, 30, 10], 10) == [6, 3, 1]
    assert class_quotas([5, 5, 5], 4) == [2, 1, 1]  # remainder to the first largest fraction
    assert sum(class_quotas([7, 3, 900], 100)) == 100
    assert class_quotas([3, 4], 100) == [3, 4]


def test_sorted_split_gives_every_class():
    # a test file sorted by label: the first 300 rows are one class
    rows = [{"label": 0, "i": i} for i in range(600)] + [{"label": 1, "i": 600 + i} for i in range(400)]
    sample = stratified_sample(rows, 300, seed=0, label=lambda r: r["label"])
    assert Counter(r["label"] for r in sample) == {0: 180, 1: 120}
    assert [r["i"] for r in sample] == sorted(r["i"] for r in sample)  # original order kept
    assert sample == stratified_sample(rows, 300, seed=0, label=lambda r: r["label"])
    assert sample != stratified_sample(rows, 300, seed=1, label=lambda r: r["label"])


def test_all_examples_when_n_is_large_or_none():
    rows = [{"label": i % 3} for i in range(10)]
    assert stratified_sample(rows, None, label=lambda r: r["label"]) == rows
    assert stratified_sample(rows, 50, label=lambda r: r["label"]) == rows
    with pytest.raises(UserError):
        stratified_sample(rows, 0, label=lambda r: r["label"])
