"""Statistics on hand-made data whose answers can be checked by eye."""

import numpy as np
import pytest

from autoprompt_search.analysis.stats import (
    accuracy_ci,
    macro_f1_batch,
    macro_f1_ci,
    mcnemar,
    paired_bootstrap,
    spread,
)
from autoprompt_search.core.errors import UserError
from autoprompt_search.scoring.metrics import classification_metrics


def pair(only_a, only_b, both=0, neither=0):
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    return a, b


def test_mcnemar_exact_and_midp_by_hand():
    # 10 vs 2 discordant: P(X <= 2 | n=12, 1/2) = (1 + 12 + 66) / 4096
    t = mcnemar(*pair(10, 2, both=5, neither=3))
    assert (t.only_a, t.only_b, t.n) == (10, 2, 20)
    assert t.delta == pytest.approx(8 / 20)
    assert t.p_exact == pytest.approx(2 * 79 / 4096)
    assert t.p_midp == pytest.approx(2 * 79 / 4096 - 66 / 4096)


def test_mcnemar_is_symmetric_and_one_without_discordant_pairs():
    t1, t2 = mcnemar(*pair(7, 1)), mcnemar(*pair(1, 7))
    assert t1.p_exact == pytest.approx(t2.p_exact)
    assert t1.delta == pytest.approx(-t2.delta)
    same = mcnemar(*pair(0, 0, both=4, neither=3))
    assert same.p_exact == 1.0 and same.p_midp == 1.0 and same.delta == 0.0
    balanced = mcnemar(*pair(3, 3))
    assert balanced.p_exact == 1.0 and balanced.p_midp == pytest.approx(1.0)


def test_paired_test_needs_the_same_examples():
    with pytest.raises(UserError, match="same examples"):
        mcnemar([1, 0, 1], [1, 0])


def test_paired_bootstrap_detects_a_clear_difference_and_not_a_null_one():
    a, b = pair(30, 2, both=40, neither=28)
    t = paired_bootstrap(a, b, seed=1)
    assert t.delta == pytest.approx(0.28)
    assert 0 < t.delta_ci[0] < t.delta < t.delta_ci[1]
    assert t.p_bootstrap < 0.01 and t.p_exact < 0.001
    same = paired_bootstrap(*pair(0, 0, both=10, neither=10), seed=1)
    assert same.delta_ci == (0.0, 0.0) and same.p_bootstrap == 1.0


def test_accuracy_interval_contains_the_estimate_and_is_seeded():
    correct = [1] * 60 + [0] * 40
    lo, hi = accuracy_ci(correct, seed=3)
    assert lo < 0.6 < hi
    assert 0.45 < lo and hi < 0.75  # roughly +-1.96 * sqrt(.24/100) = +-0.096
    assert accuracy_ci(correct, seed=3) == (lo, hi)
    assert accuracy_ci([1] * 10) == (1.0, 1.0)
    small = accuracy_ci([1] * 6 + [0] * 4, seed=3)
    assert small[1] - small[0] > hi - lo


def test_macro_f1_batch_matches_the_metrics_module():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, size=(5, 40))
    pred = rng.integers(0, 3, size=(5, 40))
    gold[0] = np.where(gold[0] == 2, 0, gold[0])  # class 2 absent from row 0's gold labels
    got = macro_f1_batch(gold, pred, 3)
    for r in range(5):
        want = classification_metrics(gold[r], pred[r], ["a", "b", "c"])["macro_f1"]
        assert got[r] == pytest.approx(want)


def test_macro_f1_interval():
    gold = [0] * 20 + [1] * 20
    pred = [0] * 15 + [1] * 5 + [1] * 18 + [0] * 2
    point = classification_metrics(np.array(gold), np.array(pred), ["n", "p"])["macro_f1"]
    lo, hi = macro_f1_ci(gold, pred, 2, seed=0)
    assert lo < point < hi
    with pytest.raises(UserError, match="differ in length"):
        macro_f1_ci([0, 1], [0], 2)


def test_spread_of_scores():
    s = spread([0.5, 0.7, 0.6])
    assert (s.min, s.max, s.mean) == (0.5, 0.7, pytest.approx(0.6))
    assert s.std == pytest.approx(0.1)
    assert s.range == pytest.approx(0.2)
    assert spread([0.4]).std == 0.0
    with pytest.raises(UserError):
        spread([])
