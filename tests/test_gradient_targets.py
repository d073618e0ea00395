"""Gradient search targets beyond single-token verbalizers: multi-token label words (causal
LMs), open-vocabulary (LAMA) tasks, and retrying forward passes that run out of memory."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace

import pytest
import torch

from autoprompt_search.api import run_search
from autoprompt_search.cli import main
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.tasks import Task
from autoprompt_search.scoring.evaluation import evaluate_prompt, retrieval_candidates
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.search.gradient import TriggerObjective, search_targets

CAUSAL_TEMPLATE = "Review : {sentence} so [T] [T] [P] ."
# 1, 7, 1, 3 and 2 tokens in the tiny causal vocabulary
MULTI = {"negative": ["bad", "terribly"], "positive": ["great", "greatness", "films"]}


def _rows(backend, n, width, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(5, backend.vocab_size, (n, width), generator=gen)


# --- multi-token label words ------------------------------------------------------------------


def test_multi_token_words_score_like_the_prompt_scorer(tiny_causal, toy_task):
    scorer = PromptScorer(tiny_causal, toy_task, CAUSAL_TEMPLATE, verbalizer=MULTI)
    assert sorted(len(ids) for ids in scorer.label_words.word_ids) == [1, 1, 2, 3, 7]
    obj = TriggerObjective(scorer, forward_batch=7, forward_tokens=80)  # chunks of 2 examples
    examples = toy_task.examples("train")
    rows = _rows(tiny_causal, 5, 2)
    batch = obj.encode(examples, rows[0].tolist())
    assert batch.prefix is not None  # the prefix cache serves the extra rows too
    for row in rows[:2].tolist():
        ref = scorer.class_logprobs(examples, row)  # log p(class words | prompt)
        naive = scorer.naive_class_logprobs(examples, row)
        assert torch.allclose(ref, naive, atol=1e-5)
        b = torch.arange(len(batch))
        with torch.no_grad():  # exact whole-word log-probs, not only up to a constant
            ours = obj.targets.class_scores(obj._forward(batch, b, torch.tensor([row] * len(b))))
        assert torch.allclose(ours, ref, atol=1e-5)
        assert torch.allclose(obj.class_scores(batch, row), torch.log_softmax(ref, -1), atol=1e-5)
    fast = obj.losses(batch, rows)
    assert torch.allclose(fast, obj.naive_losses(examples, rows), atol=1e-5), fast
    assert fast.std() > 0
    # without the prefix cache, and with everything in one forward pass: the same losses
    whole = TriggerObjective(scorer, use_prefix_cache=False, forward_batch=10_000,
                             forward_tokens=10**6)
    assert torch.allclose(whole.losses(whole.encode(examples, rows[0].tolist()), rows), fast,
                          atol=1e-5)


def test_multi_token_gradient_matches_finite_differences(tiny_causal, toy_task):
    scorer = PromptScorer(tiny_causal, toy_task, CAUSAL_TEMPLATE, verbalizer=MULTI)
    obj = TriggerObjective(scorer, forward_batch=8)
    examples = toy_task.examples("train")
    triggers = [tiny_causal.encoder.text_ids("the", True)[0]] * 2
    batch = obj.encode(examples, triggers)
    grad, loss = obj.gradient(batch, triggers)
    assert loss == pytest.approx(float(obj.losses(batch, torch.tensor([triggers]))[0]), abs=1e-5)
    b = torch.arange(len(batch))
    rows = torch.tensor([triggers]).expand(len(b), -1)
    base = tiny_causal.embed(torch.tensor(triggers)).detach()
    direction = torch.randn(base.shape, generator=torch.Generator().manual_seed(0)) * base.std()

    def loss_at(t):
        with torch.no_grad():
            return float(obj._row_loss(obj._forward(batch, b, rows, t), batch.gold).mean())

    eps = 1e-2
    fd = (loss_at(base + eps * direction) - loss_at(base - eps * direction)) / (2 * eps)
    assert fd == pytest.approx(float((grad * direction).sum()), rel=0.05, abs=1e-6)


def test_search_with_multi_token_words_reports_the_evaluated_accuracy(tiny_causal, toy_task,
                                                                      tmp_path):
    task = replace(toy_task, verbalizer=MULTI)
    result = run_search("gradient", task=task, model=tiny_causal.name, template=CAUSAL_TEMPLATE,
                        out=tmp_path / "run", seed=0, backend=tiny_causal, progress=False,
                        options={"iterations": 4, "k": 8, "position": "cycle", "init": "random"})
    assert result.verbalizer == MULTI
    ev = evaluate_prompt(tiny_causal, task, result.template, "dev", verbalizer=result.verbalizer,
                         triggers=result.trigger_ids)
    assert result.scores["dev_accuracy"] == pytest.approx(ev.metrics["accuracy"])
    firsts = {ids[0] for ids in PromptScorer(tiny_causal, task, CAUSAL_TEMPLATE).label_words.word_ids}
    assert not firsts & set(result.trigger_ids)


# --- open-vocabulary (LAMA-style) tasks -------------------------------------------------------

FACTS = {  # subject -> object; " cats" is several tokens, " market" is not in the vocabulary file
    "train": [("the team", "sports"), ("the game", "sports"), ("the phone", "tech"),
              ("the story", "news"), ("the shop", "market"), ("the pet", "cats"),
              ("the firm", "business"), ("the planet", "world")],
    "dev": [("the match", "sports"), ("the laptop", "tech"), ("the paper", "news"),
            ("the bank", "business"), ("the cat", "cats"), ("the earth", "world")],
}
VOCAB = ["sports", "tech", "news", "business", "world", "game", "story", "answer", "cats"]


@pytest.fixture
def lama_task(tmp_path):
    """A LAMA-like task file: single-token objects of the tiny vocabulary, a candidate vocab file."""
    folder = tmp_path / "lama"
    folder.mkdir()
    for split, facts in FACTS.items():
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"sub_label": s, "obj_label": o}) + "\n" for s, o in facts))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    path = folder / "task.yaml"
    path.write_text("name: tiny-lama\ndata: {train: train.jsonl, dev: dev.jsonl, test: dev.jsonl}\n"
                    "fields: [sub_label]\nlabel_field: obj_label\nlabel_space: vocabulary\n"
                    "candidate_vocab: vocab.txt\nprompts: ['{sub_label} is about [P] .']\n")
    return path


@pytest.mark.parametrize("restricted", [True, False])
def test_open_vocabulary_loss_and_precision_match_the_evaluation(tiny_causal, lama_task,
                                                                 restricted):
    task = Task.from_yaml(lama_task)
    if not restricted:
        task = replace(task, candidate_vocab=None)  # ranked over the whole vocabulary
    template = "{sub_label} [T] [T] [P] ."
    scorer = PromptScorer(tiny_causal, task, template)
    targets = search_targets(scorer, {"train": task.examples("train"), "dev": task.examples("dev")})
    assert targets.skipped == {"train": 1, "dev": 1}  # the " cats" facts
    obj = TriggerObjective(scorer, forward_batch=5, forward_tokens=40, targets=targets.words)
    dev = targets.examples["dev"]
    batch = obj.encode(dev, [0, 0], targets.columns["dev"])
    rows = _rows(tiny_causal, 4, 2)
    cand, _ = retrieval_candidates(scorer, task.examples("dev"))
    logp = torch.stack([torch.log_softmax(scorer.word_logprobs(
        scorer.encode(dev, row), token_ids=torch.tensor(cand)), -1) for row in rows.tolist()])
    gold = torch.tensor([cand.index(targets.words.word_ids[ex.label][0]) for ex in dev])
    ref = -logp[:, torch.arange(len(dev)), gold].mean(-1)  # CE of the gold among the candidates
    assert torch.allclose(obj.losses(batch, rows), ref, atol=1e-5)
    for row in rows.tolist():
        ev = evaluate_prompt(tiny_causal, task, template, "dev", triggers=row)
        acc = float((obj.class_scores(batch, row).argmax(-1) == batch.gold).float().mean())
        assert acc == pytest.approx(ev.metrics["precision_at_1"])
        assert ev.metrics["skipped_multi_token"] == 1
    if restricted:  # " market" (a train object outside the vocabulary file) is no dev candidate
        market = tiny_causal.encoder.text_ids("market", True)[0]
        assert market not in cand and len(targets.words.word_ids) == len(cand) + 1
        assert set(targets.answer_ids) == {t for (t,) in targets.words.word_ids}
    else:
        assert len(targets.words.word_ids) == tiny_causal.vocab_size
        assert len(targets.answer_ids) == 6  # only the single-token gold objects


def test_open_vocabulary_search_round_trips_through_the_cli(monkeypatch, capsys, lama_task,
                                                            tmp_path):
    from autoprompt_search.testing import tiny_causal_lm

    model_dir = tmp_path / "model"
    model, tok = tiny_causal_lm()
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    run = tmp_path / "run"
    _cli(monkeypatch, capsys, "search", "--strategy", "gradient", "--task", str(lama_task),
         "--model", str(model_dir), "--template", "{sub_label} [T] [T] [P] .", "--out", str(run),
         "--iterations", "3", "--k", "6", "--position", "cycle")
    result = json.loads((run / "result.json").read_text())
    assert result["verbalizer"] == {} and result["extra"]["skipped_multi_token"]["dev"] == 1
    answers = {tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in VOCAB[:-1]}
    assert not answers & set(result["trigger_ids"])  # the answers are no triggers
    _cli(monkeypatch, capsys, "evaluate", "--prompt-file", str(run / "result.json"), "--split",
         "dev", "--model", str(model_dir), "--json", str(tmp_path / "eval.json"))
    row = json.loads((tmp_path / "eval.json").read_text())["results"][0]
    assert row["precision_at_1"] == pytest.approx(result["scores"]["dev_accuracy"])


def test_open_vocabulary_without_single_token_objects_is_a_user_error(tiny_causal, lama_task,
                                                                      tmp_path):
    task = Task.from_yaml(lama_task)
    dev = task.examples("dev")
    only_cats = [ex for ex in dev if ex.extra["label_text"] == "cats"]
    scorer = PromptScorer(tiny_causal, task, "{sub_label} [T] [P] .")
    with pytest.raises(UserError, match="no dev example .* single token"):
        search_targets(scorer, {"train": task.examples("train"), "dev": only_cats})


def _cli(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["autoprompt-search", *args])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().out


# --- out-of-memory resilience -----------------------------------------------------------------


def _failing(backend, monkeypatch, failures: int, error=None):
    """Make ``backend.hidden_at`` raise an out-of-memory error on its first ``failures`` calls."""
    original = backend.hidden_at
    calls = {"n": 0}

    def hidden_at(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(backend, "hidden_at", hidden_at)
    return calls


@pytest.mark.parametrize("verbalizer", [None, MULTI])
def test_out_of_memory_halves_the_batch_and_gives_the_same_result(
        tiny_causal, toy_task, monkeypatch, caplog, verbalizer):
    scorer = PromptScorer(tiny_causal, toy_task, CAUSAL_TEMPLATE, verbalizer=verbalizer)
    examples = toy_task.examples("train")
    rows = _rows(tiny_causal, 4, 2)
    plain = TriggerObjective(scorer, forward_batch=64, forward_tokens=10_000)
    batch = plain.encode(examples, rows[0].tolist())
    want = (plain.losses(batch, rows), plain.class_scores(batch, rows[1].tolist()),
            plain.gradient(batch, rows[2].tolist()))
    got = []
    with caplog.at_level(logging.WARNING, logger="autoprompt_search.search.gradient"):
        for run in (lambda o: o.losses(batch, rows), lambda o: o.class_scores(batch, rows[1].tolist()),
                    lambda o: o.gradient(batch, rows[2].tolist())):
            obj = TriggerObjective(scorer, forward_batch=64, forward_tokens=10_000)
            _failing(tiny_causal, monkeypatch, 2)
            got.append(run(obj))
            assert (obj.forward_batch, obj.forward_tokens) == (16, 2500)  # halved twice
    assert torch.allclose(got[0], want[0], atol=1e-6)
    assert torch.allclose(got[1], want[1], atol=1e-6)
    assert torch.allclose(got[2][0], want[2][0], atol=1e-6)
    assert got[2][1] == pytest.approx(want[2][1])
    warnings = [r for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == 6  # one per halving


def test_out_of_memory_on_a_single_row_and_other_errors(tiny_causal, toy_task, monkeypatch):
    scorer = PromptScorer(tiny_causal, toy_task, CAUSAL_TEMPLATE)
    obj = TriggerObjective(scorer, forward_batch=8)
    batch = obj.encode(toy_task.examples("train"), [0, 0])
    _failing(tiny_causal, monkeypatch, 10**6, RuntimeError("CUDA error: out of memory"))
    with pytest.raises(UserError, match="smaller model, --dtype bfloat16 or shorter inputs"):
        obj.losses(batch, _rows(tiny_causal, 2, 2))
    assert obj.forward_batch == 1
    _failing(tiny_causal, monkeypatch, 1, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not retried
        obj.losses(batch, _rows(tiny_causal, 2, 2))
