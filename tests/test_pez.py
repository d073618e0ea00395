"""PEZ: projected gradient descent returns a hard prompt whose score is its text's score."""

from __future__ import annotations

import pytest

from autoprompt_search.api import run_search
from autoprompt_search.core.results import PromptResult
from autoprompt_search.scoring.evaluation import evaluate_prompt

TEMPLATE = "{sentence} [T] [T] it was [P] ."


def pez(backend, task, out, seed=0, **options):
    opts = {"steps": 4, "eval_every": 2, "batch_size": 4, "lr": 0.1, "init": "random", **options}
    return run_search("pez", task=task, model=backend.name, template=TEMPLATE, out=out, seed=seed,
                      options=opts, backend=backend, progress=False)


def test_reported_score_equals_a_fresh_evaluation_of_the_text(tiny_backend, toy_task, tmp_path):
    result = pez(tiny_backend, toy_task, tmp_path / "run")
    assert result.strategy == "pez" and len(result.trigger_ids) == 2
    assert "[T]" not in result.prompt
    fresh = evaluate_prompt(tiny_backend, toy_task, result.prompt, "dev")  # the text, no trigger ids
    assert fresh.metrics["accuracy"] == result.scores["dev_accuracy"]
    saved = PromptResult.load(tmp_path / "run")
    assert saved.trigger_ids == result.trigger_ids and saved.prompt == result.prompt
    # the saved prompt's tokens are whole words of the vocabulary (the trigger filter)
    assert all(t.strip().isalpha() for t in result.trigger_tokens)


def test_pez_moves_through_several_projections_and_is_seeded(tiny_causal, toy_task, tmp_path):
    a = pez(tiny_causal, toy_task, tmp_path / "a", steps=6, lr=0.5)
    b = pez(tiny_causal, toy_task, tmp_path / "b", steps=6, lr=0.5)
    assert a.trigger_ids == b.trigger_ids and a.scores == b.scores
    assert a.extra["distinct_projections"] >= 2  # the gradient does change the projected tokens
    assert a.scores["trigger_log_ppl"] > 0


def test_fluency_term_is_logged(tiny_causal, toy_task, tmp_path):
    pez(tiny_causal, toy_task, tmp_path / "f", steps=2, fluency_weight=0.5)
    import json

    log = [json.loads(x) for x in (tmp_path / "f" / "log.jsonl").read_text().splitlines()]
    assert all(r["fluency"] > 0 for r in log if "task_loss" in r)
    assert pytest.approx(log[1]["loss"], rel=1e-5) == log[1]["task_loss"] + 0.5 * log[1]["fluency"]
