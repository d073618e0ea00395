"""Scores on tiny models equal the reference recorded before the scoring engines were merged
(``tests/scoring_reference.py``): fixed prompts (masked, causal, triggers, multi-token label
words, few-shot prefix), LAMA retrieval, trigger-slot losses and gradients, soft prompts, the
HotFlip pool and the probe features."""

from __future__ import annotations

import json

import pytest
import torch
from scoring_reference import REFERENCE, compute


@pytest.fixture(scope="module")
def computed(tiny_causal, tiny_masked, tmp_path_factory):
    return compute({"causal": tiny_causal, "masked": tiny_masked}, tmp_path_factory.mktemp("ref"))


REF = json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("name", sorted(REF))
def test_scores_equal_the_recorded_reference(computed, name):
    want, got = REF[name], computed[name]
    if name.endswith(("gradient_pool",)):
        assert got == want
        return
    if name.endswith("/evaluate") or "/lama/" in name:  # metrics, then predicted ids / classes
        head = 2 if name.endswith("/evaluate") else 4
        assert got[head:] == want[head:]
        assert got[:head] == pytest.approx(want[:head], abs=1e-9)
        return
    w, g = torch.tensor(want), torch.tensor(got)
    assert g.shape == w.shape
    assert torch.allclose(g, w, atol=1e-5, rtol=1e-4), (g - w).abs().max()


def test_reference_covers_every_case(computed):
    assert sorted(computed) == sorted(REF)
