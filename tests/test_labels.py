"""Label-word search (AutoPrompt section 2.3) and the search-labels command."""

from __future__ import annotations

import pytest
import torch
import yaml
from typer.testing import CliRunner

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.tokens import allowed_token_mask
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.search.labels import (
    class_token_scores,
    predict_features,
    search_label_words,
    train_probe,
)


def test_train_probe_separates_by_hand():
    # class 0 lives at x0 < 0, class 1 at x0 > 0; the second feature is noise with a large offset
    x = torch.tensor([[-2.0, 100.0], [-1.0, 103.0], [-1.5, 97.0],
                      [1.0, 101.0], [2.0, 99.0], [1.5, 102.0]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    w, b = train_probe(x, y, 2, l2=1e-3)
    assert ((x @ w.T + b).argmax(-1) == y).all()
    assert (w[1, 0] - w[0, 0]) > abs(w[1, 1] - w[0, 1])  # the informative feature dominates


def test_class_token_scores_by_hand():
    out_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    w = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    # raw: [[2, 0], [0, 2], [2, 2]] -> centred over classes
    assert torch.equal(class_token_scores(out_emb, w),
                       torch.tensor([[1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]]))


def test_predict_features_feed_the_head(tiny_backend, toy_task):
    """The captured features, multiplied by the output embeddings, give the head's logits."""
    scorer = PromptScorer(tiny_backend, toy_task, "{sentence} it was [P] .")
    examples = toy_task.examples("train")[:4]
    x = predict_features(tiny_backend, scorer, examples, [])
    assert x.shape == (4, tiny_backend.model.config.hidden_size)
    out = tiny_backend.model.get_output_embeddings()
    logits = x @ out.weight.float().T + (out.bias.float() if out.bias is not None else 0)
    prompts = scorer.encode(examples)
    batch = tiny_backend.pad([p.ids for p in prompts])
    with torch.inference_mode():
        ref = tiny_backend.head(tiny_backend.hidden_at(
            batch, torch.tensor([p.predict_pos for p in prompts]))).float()
    assert torch.allclose(logits, ref, atol=1e-4)


def test_search_labels_gives_a_usable_verbalizer(tiny_backend, toy_task):
    result = search_label_words(tiny_backend, toy_task, "{sentence} [T] [T] [P] .", top_k=2)
    assert list(result.verbalizer) == toy_task.labels
    words = [w for ws in result.verbalizer.values() for w in ws]
    assert all(len(ws) == 2 for ws in result.verbalizer.values())
    assert len(set(words)) == len(words)  # no word in two classes
    allowed = allowed_token_mask(tiny_backend.tokenizer, tiny_backend.vocab_size)
    for label, ids in result.token_ids.items():
        assert all(allowed[i] for i in ids)
        scores = result.scores[label]
        assert scores == sorted(scores, reverse=True)
    # usable directly as the verbalizer: every word is one token at [P] and scoring works
    scorer = PromptScorer(tiny_backend, toy_task, "{sentence} [T] [T] [P] .",
                          verbalizer=result.verbalizer)
    assert [ids[0] for ids in scorer.label_words.word_ids] == [
        i for ids in result.token_ids.values() for i in ids]
    assert result.dev_accuracy is not None and 0 <= result.dev_accuracy <= 1
    doc = yaml.safe_load(result.to_yaml())
    assert doc["verbalizer"] == result.verbalizer


def test_search_labels_errors(tiny_causal, toy_task):
    with pytest.raises(UserError, match="top-k"):
        search_label_words(tiny_causal, toy_task, top_k=0)
    with pytest.raises(UserError, match="slots"):
        search_label_words(tiny_causal, toy_task, "{sentence} [T] [P] .", triggers=[1, 2])


def test_search_labels_command(toy_task, tmp_path, monkeypatch, tiny_causal):
    import autoprompt_search.models as models
    from autoprompt_search import api
    from autoprompt_search.cli import app
    from autoprompt_search.cli.commands import load_all

    load_all()

    monkeypatch.setattr(api, "load_task", lambda *a, **k: toy_task)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: tiny_causal)
    out = tmp_path / "labels.yaml"
    res = CliRunner().invoke(app, ["search-labels", "--task", "toy", "--model", "tiny",
                                   "--top-k", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "verbalizer:" in res.output and "--label-words" in res.output
    doc = yaml.safe_load(out.read_text())
    assert set(doc["verbalizer"]) == {"negative", "positive"}
    assert all(len(v) == 2 for v in doc["verbalizer"].values())
