"""Scoring rules (issue 11): text after [P] on causal LMs, noisy-channel scoring, stratified --limit."""

from __future__ import annotations

import pytest
import torch
import yaml

from autoprompt_search.api import evaluate_many, prompts_for, run_search
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult
from autoprompt_search.core.tasks import Task
from autoprompt_search.core.templates import Template
from autoprompt_search.scoring.evaluation import evaluate_prompt
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.scoring.sequence import ScoringRule, SequenceScorer, naive_sequence_logprobs

ROWS = [
    ("the movie was great", 1), ("a wonderful story", 1), ("a good film", 1),
    ("it was fine and good", 1), ("what a great game", 1), ("the team won", 1),
    ("it was terrible", 0), ("a bad film", 0), ("not good , not great", 0),
    ("the market fell today", 0), ("it was bad", 0), ("a terrible story", 0),
]


@pytest.fixture
def sorted_task(tmp_path) -> Task:
    """A toy sentiment task saved as YAML whose test file is sorted by label (negatives first)."""
    for split in ("train", "dev", "test"):
        rows = sorted(ROWS, key=lambda r: r[1]) if split == "test" else ROWS
        (tmp_path / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    raw = {"name": "toy", "data": {s: str(tmp_path / f"{s}.tsv") for s in ("train", "dev", "test")},
           "fields": ["sentence"], "labels": ["negative", "positive"],
           "verbalizer": {"negative": ["bad", "awful"], "positive": ["great"]},
           "prompts": ["{sentence} it was [P] .", "[P] review: {sentence}"]}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(raw))
    return Task.from_yaml(tmp_path / "toy.yaml")


def _hand_loglik(backend, ids: list[int], start: int) -> float:
    """sum_t log p(ids[t] | ids[:t]) for t >= start, from full logits, one position at a time."""
    logits = backend.model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))


def _tok(backend, text: str) -> list[int]:
    return backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def _context(backend) -> list[int]:
    """What a filled text is read after: the tokenizer's opening specials, else the start token."""
    return list(backend.encoder.prefix_special) or [backend.start_id()]


def test_full_sequence_rule_equals_a_hand_computed_loop(tiny_causal, sorted_task):
    ex = sorted_task.examples("test")[0]
    scorer = PromptScorer(tiny_causal, sorted_task, "[P] review: {sentence}")
    engine = scorer.engine()
    assert engine.sequence is not None and engine.sequence.rule is ScoringRule.DIRECT
    got = engine.word_logprobs(engine.encode([ex], ()))[0]
    for w, word in enumerate(["bad", "awful", "great"]):  # [P] first: no space before the word
        ids = _context(tiny_causal) + _tok(tiny_causal, word) + _tok(tiny_causal, " review:") \
            + _tok(tiny_causal, " " + ex.fields["sentence"])
        # the sum covers every token from the label word on (the context is the start token)
        assert got[w].item() == pytest.approx(_hand_loglik(tiny_causal, ids, 1), abs=1e-4)


def test_text_after_p_scores_only_from_the_word_on(tiny_causal, sorted_task):
    examples = sorted_task.examples("test")[:3]
    template = "{sentence} Overall, it was a [P] film."
    engine = PromptScorer(tiny_causal, sorted_task, template).engine()
    got = engine.word_logprobs(engine.encode(examples, ()))
    for n, ex in enumerate(examples):
        head = list(tiny_causal.encoder.prefix_special) + _tok(tiny_causal, ex.fields["sentence"]) \
            + _tok(tiny_causal, " Overall, it was a")
        for w, word in enumerate([" bad", " awful", " great"]):
            ids = head + _tok(tiny_causal, word) + _tok(tiny_causal, " film.")
            assert got[n, w].item() == pytest.approx(_hand_loglik(tiny_causal, ids, len(head)),
                                                     abs=1e-4)
    # the batched engine and the one-row-at-a-time reference agree on every word
    naive = naive_sequence_logprobs(engine.sequence, examples)
    assert torch.allclose(got, naive, atol=1e-4)


def test_with_nothing_after_p_the_whole_sequence_sum_is_the_direct_word_score(tiny_causal, sorted_task):
    examples = sorted_task.examples("test")[:4]
    prepared = tiny_causal.encoder.prepare(Template.parse("{sentence} it was [P]"))
    direct = PromptScorer(tiny_causal, sorted_task, prepared)
    engine = direct.engine()
    assert engine.sequence is None  # ends with [P]: the word read at [P], as before
    words = direct.label_words
    seq = SequenceScorer(tiny_causal, prepared, words, ScoringRule.DIRECT)
    assert torch.allclose(seq.word_logprobs(examples), engine.word_logprobs(engine.encode(examples, ())),
                          atol=1e-4)


def test_trailing_punctuation_keeps_the_word_only_reading(tiny_causal, sorted_task):
    """'[P] .' is dropped for a causal LM: published scores of such prompts do not change."""
    a = evaluate_prompt(tiny_causal, sorted_task, "{sentence} it was [P] .", "test")
    b = evaluate_prompt(tiny_causal, sorted_task, "{sentence} it was [P]", "test")
    assert a.scores == b.scores


def test_channel_scores_equal_a_hand_computed_loop(tiny_causal, sorted_task):
    examples = sorted_task.examples("test")[:3]
    engine = PromptScorer(tiny_causal, sorted_task, "{sentence} it was [P] .", rule="channel").engine()
    assert engine.sequence.template.render() == "it was [P] . {sentence}"
    got = engine.word_logprobs(engine.encode(examples, ()))
    for n, ex in enumerate(examples):
        for w, word in enumerate([" bad", " awful", " great"]):
            # the channel text has a context before the input: no start token is added
            head = list(tiny_causal.encoder.prefix_special) + _tok(tiny_causal, "it was") \
                + _tok(tiny_causal, word) \
                + _tok(tiny_causal, " .")
            ids = head + _tok(tiny_causal, " " + ex.fields["sentence"])
            # only the input's tokens are summed: log p(x | label word, prompt)
            assert got[n, w].item() == pytest.approx(_hand_loglik(tiny_causal, ids, len(head)),
                                                     abs=1e-4)
    # the class score is the log-sum-exp of the class's words, normalised over the classes
    classes = engine.class_scores(engine.encode(examples, ()))
    expected = torch.log_softmax(torch.stack([torch.logsumexp(got[:, :2], -1), got[:, 2]], -1), -1)
    assert torch.allclose(classes, expected, atol=1e-5)


def test_channel_template_definition():
    t, start = Template.parse("[P] News: {text}").for_channel()
    assert t.render() == "[P] News: {text}" and start == 2  # already label-first
    t, start = Template.parse("{a} [T] {b} Topic: [P] !").for_channel()
    assert t.render(triggers=[" x"]) == "Topic: [P] ! {a} x {b}" and start == 3
    with pytest.raises(UserError, match="between its input fields"):
        Template.parse("{premise} ? [P] , {hypothesis}").for_channel()


def test_rules_a_model_cannot_read_are_refused_clearly(tiny_masked, tiny_causal, sorted_task, tmp_path):
    with pytest.raises(UserError, match="channel scoring needs a causal LM"):
        PromptScorer(tiny_masked, sorted_task, "{sentence} it was [P] .", rule="channel").engine()
    with pytest.raises(UserError, match="unknown scoring rule 'sideways'"):
        PromptScorer(tiny_causal, sorted_task, "{sentence} it was [P] .", rule="sideways")
    # prompts encoded without their examples cannot be read on the whole sequence: refused
    after = PromptScorer(tiny_causal, sorted_task, "{sentence} a [P] film .")
    with pytest.raises(UserError, match="scoring encoded prompts: it reads the label word at"):
        after.word_logprobs(after.encode(sorted_task.examples("test")[:2]))
    # a masked LM keeps reading [MASK] in place when text follows [P]
    assert PromptScorer(tiny_masked, sorted_task, "[P] review: {sentence}").engine().sequence is None
    # the gradient search reads the label at [P]: text after [P] and channel are refused
    with pytest.raises(UserError, match="the gradient search: it reads the label word at"):
        run_search("gradient", task=sorted_task, model="tiny", template="[T] [P] review: {sentence}",
                   out=tmp_path / "g", options={"iterations": 1}, backend=tiny_causal, progress=False)
    with pytest.raises(UserError, match="--scoring channel: the gradient strategy"):
        run_search("gradient", task=sorted_task, model="tiny", template="{sentence} [T] [P]",
                   out=tmp_path / "g2", options={"scoring": "channel"}, backend=tiny_causal,
                   progress=False)


def test_evaluate_and_compare_accept_text_after_p(tiny_causal, sorted_task):
    from autoprompt_search.analysis.compare import collect_prompts, compare_prompts

    rows = evaluate_many(prompts_for(sorted_task.source, None, None, True), model=tiny_causal)
    assert [r.get("skipped") for r in rows] == [None, None]
    assert {r["prompt"] for r in rows} == {"{sentence} it was [P] .", "[P] review: {sentence}"}
    task, entries = collect_prompts(sorted_task.source, [], True, [], )
    comp = compare_prompts(task, entries, model=tiny_causal, resamples=200, similarity=False,
                           progress=False, scoring="channel", limit=6)
    assert comp.skipped == [] and {r["n"] for r in comp.rows} == {6}


def test_the_rule_is_recorded_and_reloads_with_the_same_scores(tiny_causal, sorted_task, tmp_path):
    space = {"kind": "space", "task": "toy", "templates": ["{sentence} so it was [P]"],
             "instructions": ["", "Sentiment:"],
             "verbalizers": {"good-bad": {"negative": ["bad"], "positive": ["good"]}},
             "params": {"shots": {"type": "int", "low": 0, "high": 1},
                        "trigger_slots": {"type": "int", "low": 0, "high": 1},
                        "trigger_position": {"type": "categorical",
                                             "choices": ["before_predict", "prefix"]}},
             "demos": {"split": "train", "pool_size": 2},
             "triggers": {"pool": "frequent", "size": 10}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    result = run_search("optuna", task=sorted_task, model="tiny-causal", out=tmp_path / "run",
                        options={"space": str(tmp_path / "space.yaml"), "trials": 3,
                                 "scoring": "channel", "search_splits": "dev",
                                 "search_examples": 12, "batch_size": 4, "plots": False},
                        backend=tiny_causal, progress=False)
    saved = PromptResult.load(tmp_path / "run")
    assert saved.scoring == "channel" == result.scoring
    # evaluate --prompt-file: the recorded rule, the same per-example scores as the search's rule
    (spec,) = prompts_for("", None, tmp_path / "run", False)
    assert spec.scoring == "channel"
    (row,) = evaluate_many([spec], model=tiny_causal, split="dev")
    assert row["scoring"] == "channel"
    assert row["accuracy"] == pytest.approx(saved.scores["search_accuracy"])
    design = dict(verbalizer=spec.verbalizer, triggers=spec.triggers, fewshot=spec.fewshot)
    channel = evaluate_prompt(tiny_causal, sorted_task, spec.template, "dev", rule="channel", **design)
    again = evaluate_prompt(tiny_causal, sorted_task, spec.template, "dev", rule=spec.scoring, **design)
    direct = evaluate_prompt(tiny_causal, sorted_task, spec.template, "dev", **design)
    assert again.scores == channel.scores and again.scores != direct.scores  # to the example
    assert row["accuracy"] == channel.metrics["accuracy"]


def test_limit_is_a_seeded_stratified_sample(tiny_causal, sorted_task):
    first_half = [ex.label for ex in sorted_task.examples("test")[:6]]
    assert set(first_half) == {0}  # "the first 6" would measure one class
    a = evaluate_prompt(tiny_causal, sorted_task, "{sentence} it was [P] .", "test", limit=6)
    assert sorted(a.gold) == [0, 0, 0, 1, 1, 1]
    b = evaluate_prompt(tiny_causal, sorted_task, "{sentence} it was [P] .", "test", limit=6)
    assert (a.gold, a.scores) == (b.gold, b.scores)  # same seed, same examples
    picks = {tuple(map(tuple, evaluate_prompt(tiny_causal, sorted_task, "{sentence} it was [P] .",
                                              "test", limit=6, limit_seed=s).scores))
             for s in range(4)}
    assert len(picks) > 1  # other seeds draw other examples


def _channel_class_scores(backend, sentences: list[str]) -> torch.Tensor:
    """[N, 2] channel class scores of '{sentence} it was [P] .' computed by hand (bad/awful vs great)."""
    out = []
    for sentence in sentences:
        words = []
        for word in [" bad", " awful", " great"]:
            head = list(backend.encoder.prefix_special) + _tok(backend, "it was") + _tok(backend, word) \
                + _tok(backend, " .")
            words.append(_hand_loglik(backend, head + _tok(backend, " " + sentence), len(head)))
        w = torch.tensor(words)
        out.append(torch.stack([torch.logsumexp(w[:2], 0), w[2]]))
    return torch.stack(out)


def test_calibration_is_estimated_under_the_channel_rule(tiny_causal, sorted_task):
    """--scoring channel with --calibration: content-free and train-prior offsets come from the
    channel scores (the empty content-free input has no tokens to score and is left out); pmi
    is refused."""
    from autoprompt_search.scoring.calibration import content_free_inputs, estimate_calibration

    scorer = PromptScorer(tiny_causal, sorted_task, "{sentence} it was [P] .", rule="channel")
    cf = estimate_calibration("content-free", scorer)
    inputs = [t for t in content_free_inputs(scorer) if t]
    assert cf.inputs == inputs and "" not in cf.inputs and cf.n == len(inputs)
    assert cf.scoring == "channel"
    prior = torch.softmax(_channel_class_scores(tiny_causal, inputs).double(), -1).mean(0)
    assert cf.offsets == pytest.approx(torch.log(prior).tolist(), abs=1e-4)
    # the direct rule's offsets are another number: the rule decides what is estimated
    direct = estimate_calibration("content-free", PromptScorer(tiny_causal, sorted_task,
                                                               "{sentence} it was [P] ."))
    assert direct.inputs == content_free_inputs(scorer) and direct.offsets != pytest.approx(cf.offsets)
    tp = estimate_calibration("train-prior", scorer)
    train = [ex.fields["sentence"] for ex in sorted_task.examples("train")]
    prior = torch.softmax(_channel_class_scores(tiny_causal, train).double(), -1).mean(0)
    assert tp.offsets == pytest.approx(torch.log(prior).tolist(), abs=1e-4)
    # evaluate applies them: predictions are argmax of channel scores minus the offsets
    ev = evaluate_prompt(tiny_causal, sorted_task, "{sentence} it was [P] .", "test", rule="channel",
                         calibration="train-prior")
    test = sorted_task.examples("test")
    expected = (_channel_class_scores(tiny_causal, [ex.fields["sentence"] for ex in test])
                - torch.tensor(tp.offsets)).argmax(-1)
    assert ev.predictions == expected.tolist()
    with pytest.raises(UserError, match="does not apply to --scoring channel"):
        estimate_calibration("pmi", scorer)


def test_a_calibrated_channel_search_reloads_with_its_rule_and_offsets(tiny_causal, sorted_task,
                                                                       tmp_path):
    space = {"kind": "space", "task": "toy", "templates": ["{sentence} so it was [P]"],
             "human_prompts": False, "instructions": [""],
             "verbalizers": {"good-bad": {"negative": ["bad"], "positive": ["good"]}},
             "params": {"shots": 0, "trigger_slots": 0},
             "triggers": {"pool": "frequent", "size": 10}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    options = {"space": str(tmp_path / "space.yaml"), "trials": 2, "scoring": "channel",
               "calibration": "content-free", "search_splits": "dev", "search_examples": 12,
               "batch_size": 4, "plots": False}
    result = run_search("optuna", task=sorted_task, model="tiny-causal", out=tmp_path / "run",
                        options=options, backend=tiny_causal, progress=False)
    assert result.scoring == "channel" and result.calibration["mode"] == "content-free"
    assert "" not in result.calibration["inputs"]  # estimated under the channel rule
    assert result.calibration["scoring"] == "channel" and "noisy channel" in result.calibration["rule"]
    # lm-eval's multiple_choice cannot express the channel rule: refused, not exported wrong
    from autoprompt_search.analysis.interop import export_lm_eval

    with pytest.raises(UserError, match="scored with --scoring channel; lm-eval"):
        export_lm_eval([("found", tmp_path / "run", result)], tmp_path / "lm-eval")
    (spec,) = prompts_for("", None, tmp_path / "run", False)
    (row,) = evaluate_many([spec], model=tiny_causal, split="dev")
    assert row["scoring"] == "channel" and row["calibration"]["offsets"] == result.calibration["offsets"]
    assert row["accuracy"] == pytest.approx(result.scores["search_accuracy"])
    # its stored offsets belong to the channel rule: another rule is refused, not mis-scored
    with pytest.raises(UserError, match="drop --scoring or pass --scoring channel"):
        evaluate_many([spec], model=tiny_causal, split="dev", scoring="direct")
    from autoprompt_search.analysis.compare import collect_prompts, compare_prompts

    task, entries = collect_prompts(None, [tmp_path / "run"], False, [])
    with pytest.raises(UserError, match="drop --scoring or pass --scoring channel"):
        compare_prompts(task, entries, model=tiny_causal, split="dev", scoring="direct",
                        similarity=False, progress=False, resamples=200)
    comp = compare_prompts(task, entries, model=tiny_causal, split="dev", similarity=False,
                           progress=False, resamples=200)
    assert comp.rows[0]["accuracy"] == pytest.approx(result.scores["search_accuracy"])
    with pytest.raises(UserError, match="does not apply to --scoring channel"):
        run_search("optuna", task=sorted_task, model="tiny-causal", out=tmp_path / "run2",
                   options={**options, "calibration": "pmi"}, backend=tiny_causal, progress=False)
