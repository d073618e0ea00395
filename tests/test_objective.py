"""The trigger-slot objective: trigger ids and continuous vectors scored on one path, checked
against a full recompute -- the model run on the whole sequence, one example and one label
word at a time, with the embeddings built by hand."""

from __future__ import annotations

import pytest
import torch

from autoprompt_search.scoring.objective import TriggerObjective
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.scoring.softprompt import SoftScorer
from autoprompt_search.search.gradient import TriggerObjective as ReExported

TEMPLATE = "Review : {sentence} so [T] [T] it was [P] ."
# 1, 7, 1, 3 and 2 tokens in the tiny causal vocabulary
MULTI = {"negative": ["bad", "terribly"], "positive": ["great", "greatness", "films"]}
CASES = [("causal", None), ("causal", MULTI), ("masked", None)]


@pytest.fixture(params=CASES, ids=["causal", "causal-multi-token", "masked"])
def case(request, tiny_causal, tiny_masked):
    kind, verbalizer = request.param
    return (tiny_causal if kind == "causal" else tiny_masked), verbalizer


def _vectors(backend, seed=0):
    """Two vectors near (not at) token embeddings, as a trained soft prompt would be."""
    gen = torch.Generator().manual_seed(seed)
    emb = backend.input_embeddings().detach()
    ids = torch.randint(5, backend.vocab_size, (2,), generator=gen)
    return emb[ids] + 0.1 * emb.std() * torch.randn(2, emb.shape[1], generator=gen)


def reference_class_logprobs(scorer: PromptScorer, examples, slots: torch.Tensor) -> torch.Tensor:
    """[N, C] class log-probs with ``slots`` ([P, d]) in the [T] slots, the straightforward way:
    for each example and label word, embed the whole sequence (prompt, then the word's tokens
    but the last for causal LMs), write the vectors into the [T] positions, run the model and
    sum the word's token log-probs (differentiable in ``slots``)."""
    backend = scorer.backend
    table = backend.input_embeddings().detach()
    words = scorer.label_words
    rows = []
    for prompt in scorer.encode(examples, [backend.pad_id] * len(slots)):
        word_logp = []
        for ids in words.word_ids:
            if backend.kind == "masked":
                seq, steps = list(prompt.ids), [(prompt.predict_pos, ids[0])]
            else:
                seq = list(prompt.ids) + list(ids[:-1])
                steps = [(prompt.predict_pos + j, t) for j, t in enumerate(ids)]
            emb = table[torch.tensor(seq)].clone()
            emb[list(prompt.trigger_pos)] = slots
            logits = backend.model(inputs_embeds=emb[None]).logits[0]
            logp = torch.log_softmax(logits.float(), -1)
            word_logp.append(sum(logp[i, t] for i, t in steps))
        rows.append(torch.stack(word_logp))
    return words.class_scores(torch.stack(rows))


def test_gradient_module_re_exports_the_objective():
    assert ReExported is TriggerObjective


@pytest.mark.parametrize("cached", [False, True], ids=["full", "prefix-cache"])
def test_soft_scores_loss_and_gradient_equal_a_full_recompute(case, toy_task, cached):
    backend, verbalizer = case
    cached = cached and backend.kind == "causal"  # masked LMs have no prefix cache
    scorer = SoftScorer(backend, toy_task, TEMPLATE, verbalizer)
    examples = toy_task.examples("train")
    index = [3, 0, 5, 7, 10]
    chosen = [examples[i] for i in index]
    gold = [ex.label for ex in chosen]
    base = _vectors(backend)

    slots = base.clone().requires_grad_(True)
    ref = reference_class_logprobs(scorer.scorer, chosen, slots)
    ref_loss = torch.nn.functional.cross_entropy(ref, torch.tensor(gold))
    (ref_grad,) = torch.autograd.grad(ref_loss, slots)

    prompts = scorer.encode(examples)
    cache = scorer.cache(prompts) if cached else None
    assert (cache is not None) == cached
    sub = [prompts[i] for i in index]
    rows = index if cached else None
    vectors = base.clone().requires_grad_(True)
    scores = scorer.class_logprobs(sub, vectors, cache, rows)
    torch.testing.assert_close(scores, ref.detach(), atol=1e-5, rtol=0)  # exact log-probs
    loss = scorer.loss(sub, vectors, gold, cache, rows)
    torch.testing.assert_close(loss, ref_loss.detach(), atol=1e-5, rtol=0)
    (grad,) = torch.autograd.grad(loss, vectors)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=0)
    assert grad.abs().max() > 1e-4  # the vectors really get a gradient
    assert all(p.grad is None for p in backend.model.parameters())


def test_soft_evaluation_equals_a_full_recompute(case, toy_task):
    backend, verbalizer = case
    scorer = SoftScorer(backend, toy_task, TEMPLATE, verbalizer)
    examples = toy_task.examples("dev")
    vectors = _vectors(backend, seed=1)
    with torch.no_grad():
        ref = reference_class_logprobs(scorer.scorer, examples, vectors)
    prefix = scorer.cache(scorer.encode(examples))
    ev = scorer.evaluate(examples, vectors, "dev", batch_size=5, prefix=prefix)
    torch.testing.assert_close(torch.tensor(ev.scores), ref, atol=1e-5, rtol=0)
    assert ev.predictions == ref.argmax(-1).tolist()
    gold = torch.tensor([ex.label for ex in examples])
    assert ev.metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(ref, gold)),
                                               abs=1e-5)


@pytest.mark.parametrize("use_prefix_cache", [True, False], ids=["prefix-cache", "full"])
def test_trigger_ids_losses_scores_and_gradient_equal_a_full_recompute(case, toy_task,
                                                                       use_prefix_cache):
    backend, verbalizer = case
    scorer = PromptScorer(backend, toy_task, TEMPLATE, verbalizer)
    obj = TriggerObjective(scorer, forward_batch=7, forward_tokens=60,
                           use_prefix_cache=use_prefix_cache)  # several chunks
    examples = toy_task.examples("train")
    gold = torch.tensor([ex.label for ex in examples])
    rows = torch.randint(5, backend.vocab_size, (4, 2), generator=torch.Generator().manual_seed(1))
    batch = obj.encode(examples, rows[0].tolist())
    assert (batch.prefix is not None) == (use_prefix_cache and backend.kind == "causal")
    naive = [scorer.naive_class_logprobs(examples, row) for row in rows.tolist()]
    want = torch.stack([-torch.log_softmax(c, -1)[torch.arange(len(gold)), gold].mean()
                        for c in naive])
    torch.testing.assert_close(obj.losses(batch, rows), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(obj.class_scores(batch, rows[1].tolist()),
                               torch.log_softmax(naive[1], -1), atol=1e-5, rtol=0)
    # the gradient w.r.t. the trigger embeddings, and the loss that comes with it
    triggers = rows[2].tolist()
    slots = backend.input_embeddings().detach()[rows[2]].clone().requires_grad_(True)
    ref = reference_class_logprobs(scorer, examples, slots)
    ref_loss = torch.nn.functional.cross_entropy(ref, gold)
    (ref_grad,) = torch.autograd.grad(ref_loss, slots)
    grad, loss = obj.gradient(batch, triggers)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=0)
    assert loss == pytest.approx(float(ref_loss), abs=1e-5)


def test_token_embeddings_as_vectors_score_like_the_ids(case, toy_task):
    """The vector path with a token's embedding in each slot is the id path (exact log-probs)."""
    backend, verbalizer = case
    scorer = PromptScorer(backend, toy_task, TEMPLATE, verbalizer)
    obj = TriggerObjective(scorer)
    examples = toy_task.examples("train")
    ids = [7, 21]
    batch = obj.encode(examples, [backend.pad_id] * 2)
    with torch.no_grad():
        words = obj.vector_word_logprobs(batch, backend.input_embeddings()[torch.tensor(ids)])
    torch.testing.assert_close(obj.targets.class_scores(words),
                               scorer.naive_class_logprobs(examples, ids), atol=1e-5, rtol=0)
