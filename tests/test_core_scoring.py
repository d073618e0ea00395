"""Encoding, verbalizers and scoring: the fast path against a direct, slow computation."""

import pytest
import torch

from autoprompt_search.core.data import Example
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.templates import Template
from autoprompt_search.models.encoding import FewShot
from autoprompt_search.scoring.evaluation import evaluate_prompt
from autoprompt_search.scoring.scorer import PromptScorer, resolve_label_words


def test_encoding_positions_causal(tiny_causal, toy_task):
    enc = tiny_causal.encoder
    t = enc.prepare(Template.parse("{sentence} [T] [T] it was [P] .", ["sentence"]))
    ex = toy_task.examples("train")[0]
    trig = enc.text_ids("the", True)[:1] * 2
    p = enc.encode(t, ex, trig)
    assert [p.ids[i] for i in p.trigger_pos] == list(trig)
    # a causal prompt ends right before the label: the trailing " ." is not read
    assert p.predict_pos == len(p.ids) - 1
    assert tiny_causal.tokenizer.decode(p.ids).endswith(" it was")
    assert p.prefix_len == p.trigger_pos[0]


def test_encoding_positions_masked(tiny_masked, toy_task):
    enc = tiny_masked.encoder
    t = Template.parse("{sentence} [T] it was [P] .", ["sentence"])
    p = enc.encode(t, toy_task.examples("train")[0], [enc.text_ids("the", False)[0]])
    tok = tiny_masked.tokenizer
    assert p.ids[0] == tok.cls_token_id and p.ids[-1] == tok.sep_token_id
    assert p.ids[p.predict_pos] == tok.mask_token_id
    assert tok.convert_ids_to_tokens(p.ids[p.predict_pos + 1]) == "."


def test_leading_space_variant_chosen_from_template(tiny_causal, toy_task):
    spaced = resolve_label_words(tiny_causal, Template.parse("{sentence} it was [P]"),
                                 toy_task.labels, toy_task.verbalizer)
    glued = resolve_label_words(tiny_causal, Template.parse("{sentence} it was:[P]"),
                                toy_task.labels, toy_task.verbalizer)
    tok = tiny_causal.tokenizer
    assert tok.decode(list(spaced.word_ids[1])) == " great"
    assert tok.decode(list(glued.word_ids[1])) == "great"


def test_multi_token_label_rejected_for_masked_lm_with_pieces(tiny_masked, toy_task):
    with pytest.raises(UserError, match=r"'filmed'.*splits into 2 tokens \['film', '##ed'\]"):
        PromptScorer(tiny_masked, toy_task, "{sentence} it was [P] .",
                     verbalizer={"negative": ["filmed"], "positive": ["great"]})


@pytest.mark.parametrize("verbalizer", [
    {"negative": ["bad"], "positive": ["great"]},
    {"negative": ["bad", "not good"], "positive": ["great", "wonderful story"]},  # multi-token (causal)
])
def test_fast_path_equals_naive_causal(tiny_causal, toy_task, verbalizer):
    scorer = PromptScorer(tiny_causal, toy_task, "{sentence} [T] it was [P] .", verbalizer, batch_size=5)
    ex = toy_task.examples("train")
    trig = tiny_causal.encoder.text_ids("the", True)[:1]
    fast = scorer.class_logprobs(ex, trig)
    assert fast.shape == (len(ex), 2)
    torch.testing.assert_close(fast, scorer.naive_class_logprobs(ex, trig), atol=1e-4, rtol=1e-4)


def test_fast_path_equals_naive_masked(tiny_masked, toy_task):
    scorer = PromptScorer(tiny_masked, toy_task, "{sentence} [T] it was [P] .",
                          {"negative": ["bad", "terri"], "positive": ["great"]}, batch_size=4)
    ex = toy_task.examples("train")
    trig = [tiny_masked.tokenizer.convert_tokens_to_ids("the")]
    torch.testing.assert_close(scorer.class_logprobs(ex, trig), scorer.naive_class_logprobs(ex, trig),
                               atol=1e-4, rtol=1e-4)


def test_class_score_is_logsumexp_of_word_probabilities(tiny_causal, toy_task):
    verb = {"negative": ["bad", "terrible"], "positive": ["great"]}
    scorer = PromptScorer(tiny_causal, toy_task, "{sentence} it was [P]", verb)
    ex = toy_task.examples("train")[:3]
    words = scorer.word_logprobs(scorer.encode(ex))
    expected = torch.stack([torch.logsumexp(words[:, :2], -1), words[:, 2]], -1)
    torch.testing.assert_close(scorer.class_logprobs(ex), expected)


def test_shared_prefix_cache_gives_same_scores_as_full_recompute(tiny_causal, toy_task):
    """Few-shot: instruction + demonstrations are shared by all prompts and cached once."""
    fewshot = FewShot("Decide if each review is great or bad .", tuple(toy_task.examples("dev")[:3]))
    scorer = PromptScorer(tiny_causal, toy_task, "{sentence} it was [P] .", fewshot=fewshot, batch_size=4)
    batch = scorer.engine().encode(toy_task.examples("test"), [])
    assert batch.prefix is not None and len(batch.prefix) == 1  # one prefix serves every prompt
    assert int(batch.prefix.lengths[0]) > 10
    torch.testing.assert_close(scorer.class_logprobs(toy_task.examples("test")),
                               scorer.naive_class_logprobs(toy_task.examples("test")),
                               atol=1e-4, rtol=1e-4)


def test_per_example_prefix_cache_matches_full_recompute(tiny_causal, toy_task):
    """The gradient search's cache: each example's text before the first trigger, reused by
    several candidate rows (rows pick their prefix with prefix_rows)."""
    backend = tiny_causal
    t = backend.encoder.prepare(Template.parse("{sentence} [T] [T] it was [P]", ["sentence"]))
    ex = toy_task.examples("train")[:4]
    cands = [backend.encoder.text_ids(w, True)[:1] * 2 for w in ("the", "a", "good")]
    prompts = [[backend.encoder.encode(t, e, c) for e in ex] for c in cands]
    prefix = backend.encode_prefix([p.ids[: p.prefix_len] for p in prompts[0]])
    rows = [p for cand in prompts for p in cand]
    batch = backend.pad([p.ids[p.prefix_len :] for p in rows])
    pos = torch.tensor([p.predict_pos - p.prefix_len for p in rows])
    prefix_rows = torch.arange(len(ex)).repeat(len(cands))
    with torch.inference_mode():
        cached = backend.logprobs_at(batch, pos, prefix=prefix, prefix_rows=prefix_rows)
        full = backend.logprobs_at(backend.pad([p.ids for p in rows]),
                                   torch.tensor([p.predict_pos for p in rows]))
        direct = torch.stack([
            torch.log_softmax(backend.model(input_ids=torch.tensor([p.ids])).logits[0, p.predict_pos], -1)
            for p in rows])
    torch.testing.assert_close(cached, direct, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(full, direct, atol=1e-4, rtol=1e-4)


def test_inputs_embeds_path_gives_same_scores_and_gradients(tiny_backend, toy_task):
    backend = tiny_backend
    scorer = PromptScorer(backend, toy_task, "{sentence} [T] it was [P] .", batch_size=16)
    trig = [backend.encoder.text_ids("the", backend.kind == "causal")[0]]
    prompts = scorer.encode(toy_task.examples("train"), trig)
    batch = backend.pad([p.ids for p in prompts])
    pos = torch.tensor([p.predict_pos for p in prompts])
    embeds = backend.embed(batch.input_ids).detach().requires_grad_(True)
    logp = backend.logprobs_at(batch, pos, scorer.label_words.first_ids, inputs_embeds=embeds)
    torch.testing.assert_close(scorer.label_words.class_scores(logp.detach()),
                               scorer.class_logprobs(toy_task.examples("train"), trig), atol=1e-4, rtol=1e-4)
    logp.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    assert all(p.grad is None for p in backend.model.parameters())  # the model stays frozen


def test_evaluate_prompt_metrics(tiny_backend, toy_task):
    ev = evaluate_prompt(tiny_backend, toy_task, "{sentence} it was [P] .", "test")
    scores = torch.tensor(ev.scores)
    assert ev.predictions == scores.argmax(-1).tolist()
    assert ev.metrics["n"] == 12
    assert ev.metrics["accuracy"] == pytest.approx(float(ev.correct.mean()))
    assert set(ev.metrics["per_class_accuracy"]) == {"negative", "positive"}


def test_bfloat16_scores_close_to_float32(toy_task):
    from autoprompt_search.models import wrap_model
    from autoprompt_search.testing import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=1)
    f32 = PromptScorer(wrap_model(model, tok), toy_task, "{sentence} it was [P]").class_logprobs(
        toy_task.examples("test"))
    bf16 = PromptScorer(wrap_model(model.to(torch.bfloat16), tok), toy_task,
                        "{sentence} it was [P]").class_logprobs(toy_task.examples("test"))
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, f32, atol=0.1, rtol=0.05)


def test_placeholder_free_example_text_roundtrip(tiny_causal):
    ex = Example({"sentence": "a good film"}, 1)
    p = tiny_causal.encoder.encode(Template.parse("Review: {sentence} Verdict: [P]").for_causal(), ex)
    assert tiny_causal.tokenizer.decode(p.ids) == "Review: a good film Verdict:"
