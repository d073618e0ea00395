"""One path from class scores to metrics and loss: by hand, round trip, and the engine's modes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from autoprompt_search.models.encoding import FewShot
from autoprompt_search.scoring.engine import PrefixMode
from autoprompt_search.scoring.evaluation import Evaluation, evaluate_prompt, evaluation_from_scores
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.scoring.targets import LabelWords, OpenVocabTargets

MULTI = {"negative": ["bad", "terribly"], "positive": ["great", "greatness", "films"]}


def test_classification_evaluation_by_hand():
    scores = torch.tensor([[-0.1, -2.0], [-3.0, -0.2], [-0.5, -0.4], [-1.0, -0.3]])
    ev = evaluation_from_scores("p", "dev", scores, [0, 1, 0, 0], ["neg", "pos"])
    assert ev.predictions == [0, 1, 1, 1] and ev.gold == [0, 1, 0, 0]
    assert ev.metrics["accuracy"] == pytest.approx(0.5)
    assert ev.metrics["per_class_accuracy"] == {"neg": pytest.approx(1 / 3), "pos": 1.0}
    want = float(-torch.log_softmax(scores, -1)[torch.arange(4), torch.tensor([0, 1, 0, 0])].mean())
    assert ev.loss == pytest.approx(want)
    assert ev.scores == scores.tolist()


def test_retrieval_evaluation_by_hand():
    """Candidates are token ids 7, 3, 9; ranks count strictly better candidates."""
    words = LabelWords.single_tokens([7, 3, 9])
    targets = OpenVocabTargets(words, {}, {"test": None}, {"test": 2}, [7, 3, 9])
    scores = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -0.5], [-4.0, -3.0, -2.0]])
    ev = evaluation_from_scores("p", "test", scores, [0, 1, 0], targets)
    # gold ranks 0, 2, 2
    assert ev.metrics["precision_at_1"] == pytest.approx(1 / 3) == ev.metrics["accuracy"]
    assert ev.metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert ev.metrics["skipped_multi_token"] == 2 and ev.metrics["candidates"] == 3
    assert ev.predictions == [7, 9, 9] and ev.gold == [7, 3, 7]  # token ids, not columns
    assert ev.scores is None


def test_evaluation_json_round_trip(tiny_backend, toy_task, tmp_path):
    ev = evaluate_prompt(tiny_backend, toy_task, "{sentence} it was [P] .", "test")
    path = tmp_path / "ev.json"
    path.write_text(json.dumps(ev.to_json()))
    back = Evaluation.from_json(json.loads(path.read_text()))
    assert back == ev
    assert back.scores is not None and len(back.scores) == len(back.predictions) == 12
    np.testing.assert_array_equal(back.correct, ev.correct)


@pytest.mark.parametrize("verbalizer", [None, MULTI], ids=["single", "multi-token"])
def test_prefix_modes_give_the_same_word_logprobs(tiny_causal, toy_task, verbalizer):
    fewshot = FewShot("Decide if each review is great or bad .", tuple(toy_task.examples("dev")[:2]))
    scorer = PromptScorer(tiny_causal, toy_task, "{sentence} so [T] it was [P] .", verbalizer,
                          fewshot, batch_size=3)
    examples = toy_task.examples("test")
    trig = [tiny_causal.encoder.text_ids("the", True)[0]]
    out = {}
    for mode in PrefixMode:
        engine = scorer.engine(prefix=mode)
        batch = engine.encode(examples, trig)
        assert (batch.prefix is None) == (mode is PrefixMode.NONE)
        out[mode] = engine.word_logprobs(batch)
    naive = scorer.naive_class_logprobs(examples, trig)
    for mode, logp in out.items():
        torch.testing.assert_close(scorer.label_words.class_scores(logp), naive, atol=1e-4,
                                   rtol=1e-4)


def test_fixed_prompt_scoring_halves_on_out_of_memory(tiny_causal, toy_task, monkeypatch, caplog):
    scorer = PromptScorer(tiny_causal, toy_task, "{sentence} it was [P] .", MULTI, batch_size=24)
    examples = toy_task.examples("test")
    want = scorer.class_logprobs(examples)
    original, calls = tiny_causal.hidden_at, {"n": 0}

    def hidden_at(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_causal, "hidden_at", hidden_at)
    with caplog.at_level(logging.WARNING):
        got = scorer.class_logprobs(examples)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert calls["n"] > 2  # the work was done again in smaller passes
    assert sum("out of memory" in r.getMessage() for r in caplog.records) == 2


def test_filling_triggers_inside_a_shared_prefix_is_refused(tiny_causal, toy_task):
    fewshot = FewShot("Decide .", tuple(toy_task.examples("dev")[:2]))
    scorer = PromptScorer(tiny_causal, toy_task, "{sentence} so [T] it was [P] .", fewshot=fewshot)
    engine = scorer.engine(prefix=PrefixMode.SHARED)
    batch = engine.encode(toy_task.examples("test"), [5])  # the demos hold trigger 5 too
    with pytest.raises(ValueError, match="cannot be refilled"):
        engine.class_scores(batch, [6])
    assert engine.class_scores(batch).shape == (12, 2)  # the encoded triggers score fine


def test_shared_prefix_serves_gradients_and_vectors(tiny_causal, toy_task):
    """An instruction shared by every prompt is cached once and gradients still reach the slots."""
    fewshot = FewShot("Decide if each review is great or bad .")
    scorer = PromptScorer(tiny_causal, toy_task, "{sentence} so [T] [T] it was [P] .", fewshot=fewshot)
    trig = [tiny_causal.encoder.text_ids("the", True)[0]] * 2
    examples = toy_task.examples("train")
    shared = scorer.engine(prefix=PrefixMode.SHARED)
    plain = scorer.engine(prefix=PrefixMode.NONE)
    a, b = shared.encode(examples, trig), plain.encode(examples, trig)
    assert a.prefix is not None and len(a.prefix) == 1
    grad_a, loss_a = shared.gradient(a, trig)
    grad_b, loss_b = plain.gradient(b, trig)
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    torch.testing.assert_close(grad_a, grad_b, atol=1e-5, rtol=1e-4)
