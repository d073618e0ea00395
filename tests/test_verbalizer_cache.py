"""Verbalizers scored from cached [P] distributions, chosen by held-out folds (search-labels --mode cached)."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from autoprompt_search.core.errors import UserError
from autoprompt_search.scoring.distributions import DistributionCache, cache_distributions
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.search.cached_labels import search_label_words_cached
from autoprompt_search.search.verbalizers import (
    Calibration,
    Candidate,
    Setting,
    contrast_scores,
    cross_validate,
    pick_verbalizer,
    stratified_folds,
)

TEMPLATE = "{sentence} [T] it was [P] ."


def _verbalizers(kind: str) -> list[dict[str, list[str]]]:
    """Single words, several words per class, and (causal) a word of several tokens."""
    out = [{"negative": ["bad"], "positive": ["great"]},
           {"negative": ["bad", "terrible", "story"], "positive": ["great", "good"]}]
    if kind == "causal":
        out.append({"negative": ["bad", "not good at all"], "positive": ["wonderful film", "good"]})
    return out


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_cached_scores_equal_direct_scoring(kind, tiny_causal, tiny_masked, toy_task):
    backend = tiny_causal if kind == "causal" else tiny_masked
    examples = toy_task.examples("train")
    triggers = [backend.neutral_trigger("the")]
    scorers = [PromptScorer(backend, toy_task, TEMPLATE, verbalizer=v) for v in _verbalizers(kind)]
    words = [ids for s in scorers for ids in s.label_words.word_ids]
    if kind == "causal":
        assert any(len(ids) > 1 for ids in words)  # the extra pass is exercised
    cache = cache_distributions(scorers[0], examples, triggers, words=words)
    assert cache.logp.shape == (len(examples), backend.vocab_size)
    for scorer in scorers:
        direct = scorer.class_logprobs(examples, triggers)
        cached = cache.class_logprobs(scorer.label_words)
        torch.testing.assert_close(cached, direct, rtol=0, atol=1e-5)
        # a subset of rows reads the same numbers
        rows = torch.tensor([1, 4, 7])
        torch.testing.assert_close(cache.class_logprobs(scorer.label_words, rows), direct[rows],
                                   rtol=0, atol=1e-5)


def test_multi_token_word_not_cached_is_an_error(tiny_causal, toy_task):
    scorer = PromptScorer(tiny_causal, toy_task, TEMPLATE,
                          verbalizer={"negative": ["bad"], "positive": ["wonderful film"]})
    cache = cache_distributions(scorer, toy_task.examples("train")[:4], [5])
    with pytest.raises(UserError, match="several tokens"):
        cache.class_logprobs(scorer.label_words)


def test_top_k_cache_keeps_the_top_tokens_exactly(tiny_causal, toy_task):
    scorer = PromptScorer(tiny_causal, toy_task, TEMPLATE)
    examples = toy_task.examples("train")
    dense = cache_distributions(scorer, examples, [5])
    sparse = cache_distributions(scorer, examples, [5], top_k=8)
    assert sparse.logp.shape == (len(examples), 8)
    top = dense.logp.topk(8, -1)
    # tokens inside an example's top k read their exact value; others the spread-out remainder
    torch.testing.assert_close(sparse.token_logprobs(top.indices[0], torch.tensor([0]))[0],
                               top.values[0])
    outside = int(dense.logp[0].argsort()[0])
    rest = 1 - top.values[0].exp().sum()
    expected = math.log(float(rest) / (tiny_causal.vocab_size - 8))
    assert float(sparse.token_logprobs(torch.tensor([outside]), torch.tensor([0]))[0, 0]) == \
        pytest.approx(expected, rel=1e-4)


def test_train_prior_and_vocabulary_prior_offsets():
    # two examples over a 3-token vocabulary; class 0 = token 0, class 1 = token 1
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
    cache = DistributionCache(p.log(), torch.tensor([0, 1]), 2, 3)
    from autoprompt_search.scoring.targets import LabelWords
    words = LabelWords((0, 1), ((0,), (1,)), 2)
    prior = cache.class_prior(words)
    torch.testing.assert_close(prior, torch.tensor([0.6, 0.3]).log())
    calibrated = cache.class_logprobs(words, prior=prior)
    torch.testing.assert_close(calibrated, p[:, :2].log() - prior)
    # after calibration the second example is class 1: 0.4 / 0.3 > 0.5 / 0.6
    assert calibrated.argmax(-1).tolist() == [0, 1]
    # a vocabulary log-distribution gives the same offsets for single-token words
    vocab_prior = torch.tensor([0.6, 0.3, 0.1]).log()
    torch.testing.assert_close(cache.class_logprobs(words, prior=vocab_prior), calibrated)


def _hand_made_cache() -> tuple[DistributionCache, list[Candidate], torch.Tensor]:
    """Eight examples (four per class), vocabulary of three tokens. Class 0 has two candidate
    words: token 0 separates the classes on examples 0-5 but fails on 6-7; token 1 does the
    opposite. Class 1's only word is token 2 (a constant middle score)."""
    gold = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    t0 = torch.tensor([-1.0, -1.0, -1.0, -5.0, -5.0, -5.0, -5.0, -1.0])
    t1 = torch.tensor([-5.0, -5.0, -5.0, -4.0, -4.0, -4.0, -1.0, -5.0])
    t2 = torch.full((8,), -3.0)
    cands = [Candidate("zero", 0, (0,), "user"), Candidate("one", 0, (1,), "user"),
             Candidate("two", 1, (2,), "user")]
    return DistributionCache(torch.stack([t0, t1, t2], -1), gold, 2, 3), cands, torch.tensor([6, 7])


def test_fold_pick_uses_only_in_fold_examples():
    cache, cands, held = _hand_made_cache()
    rows = torch.arange(6)
    setting = Setting(1, Calibration.NONE)
    # on the held-out examples "one" would be the better class-0 word ...
    held_pick = pick_verbalizer(cache, cands, held, setting)
    assert held_pick.chosen == [[1], [2]] and held_pick.accuracy == 1.0
    # ... but the in-fold pick is "zero", and it is what the held-out fold scores
    in_pick = pick_verbalizer(cache, cands, rows, setting)
    assert in_pick.chosen == [[0], [2]] and in_pick.accuracy == 1.0
    # greedy coordinate ascent (too many combinations) finds the same words here
    greedy = pick_verbalizer(cache, cands, rows, Setting(2, Calibration.NONE), max_combinations=1)
    assert greedy.chosen == [[0], [2]] and greedy.accuracy == 1.0
    _, _, _, reports, contrast = cross_validate(cache, cands, [setting], [held])
    assert reports[0].picks == [[["zero"], ["two"]]]
    assert reports[0].in_fold == [1.0]
    assert reports[0].held_out == [0.0]  # "zero" gets both held-out examples wrong
    assert contrast[0]["held_out"] == [6, 7]
    assert contrast[0]["candidates"][0]["contrast"] == pytest.approx(4.0)  # -1 vs -5 in fold


def test_choice_is_by_held_out_mean_minus_spread():
    cache, cands, _ = _hand_made_cache()
    folds = [torch.tensor([0, 3]), torch.tensor([1, 4]), torch.tensor([2, 5, 6, 7])]
    one, two = Setting(1, Calibration.NONE), Setting(2, Calibration.NONE)
    chosen, final, _, reports, _ = cross_validate(cache, cands, [one, two], folds,
                                                  spread_penalty=0.0)
    best = max(reports, key=lambda r: r.score)
    assert chosen.name() == best.setting
    for r in reports:
        assert r.mean == pytest.approx(sum(r.held_out) / len(folds))
        assert r.score == pytest.approx(r.mean)
    # refit on all examples
    assert final.chosen == pick_verbalizer(cache, cands, torch.arange(8), chosen).chosen


def test_contrast_scores_and_folds():
    cache, cands, _ = _hand_made_cache()
    c = contrast_scores(cache, cands, torch.arange(6))
    torch.testing.assert_close(c, torch.tensor([4.0, -1.0, 0.0]))
    folds = stratified_folds(torch.tensor([0] * 6 + [1] * 4), 2, seed=3)
    assert sorted(torch.cat(folds).tolist()) == list(range(10))
    assert [int((f < 6).sum()) for f in folds] == [3, 3]
    with pytest.raises(UserError, match="--folds"):
        stratified_folds(torch.tensor([0, 0, 1]), 2)


def test_search_cached_end_to_end(tiny_backend, toy_task):
    kw = {"candidates": {"positive": ["good", "fine"]}, "neighbours": 2, "probe_words": 2,
          "folds": 3, "calibrations": [Calibration.NONE, Calibration.TRAIN_PRIOR]}
    result = search_label_words_cached(tiny_backend, toy_task, TEMPLATE, **kw)
    assert set(result.verbalizer) == {"negative", "positive"}
    assert len(result.settings) == 4 and all(len(s["held_out"]) == 3 for s in result.settings)
    sources = {c["source"] for c in result.candidates}
    assert {"class-name", "verbalizer", "neighbour", "user", "probe"} <= sources
    chosen = {w for ws in result.verbalizer.values() for w in ws}
    assert chosen == {c["word"] for c in result.candidates if c["chosen"]}
    # same seed, same result
    again = search_label_words_cached(tiny_backend, toy_task, TEMPLATE, **kw)
    assert again.verbalizer == result.verbalizer and again.settings == result.settings
    with pytest.raises(UserError, match="does not have"):
        search_label_words_cached(tiny_backend, toy_task, TEMPLATE, candidates={"neutral": ["x"]})


def test_search_labels_cached_command(toy_task, tmp_path, monkeypatch, capsys, tiny_causal):
    from autoprompt_search import api, models
    from autoprompt_search.cli import app, main
    from autoprompt_search.cli.commands import load_all

    load_all()
    monkeypatch.setattr(api, "load_task", lambda *a, **k: toy_task)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: tiny_causal)
    out = tmp_path / "labels.yaml"
    res = CliRunner().invoke(app, ["search-labels", "--mode", "cached", "--task", "toy",
                                   "--model", "tiny", "--template", TEMPLATE, "--candidates",
                                   "positive=good,fine", "--folds", "3", "--calibrate", "none",
                                   "--calibrate", "train-prior", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "verbalizer:" in res.output and "held-out" in res.output
    doc = yaml.safe_load(out.read_text())
    assert set(doc["verbalizer"]) == {"negative", "positive"}
    assert doc["search_labels"]["mode"] == "cached"
    scores = json.loads(out.with_suffix(".json").read_text())
    assert len(scores["fold_candidates"]) == 3
    assert all("contrast" in c for f in scores["fold_candidates"] for c in f["candidates"])
    for argv, message in ((["--candidates", "positive"], "CLASS=word"),
                          (["--candidates", "neutral=x"], "does not have"),
                          (["--mode", "probe", "--candidates", "positive=x"], "--mode cached")):
        monkeypatch.setattr(sys, "argv", ["autoprompt-search", "search-labels", "--mode", "cached",
                                          "--task", "toy", "--model", "tiny", *argv])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error:") and message in err, err
        assert "Traceback" not in err
