"""Reference outputs of the scoring engines on tiny models, recorded before the engines were merged.

``python tests/scoring_reference.py`` writes ``tests/data/scoring_reference.json`` (run it only on a
commit whose numbers are the reference: 77097c5 recorded the shipped file);
``tests/test_scoring_reference.py`` recomputes every case and compares. The cases only use entry
points that exist before and after the merge: class scores of fixed prompts (masked and causal,
triggers, multi-token label words, a few-shot prefix), LAMA retrieval, trigger-slot losses, class
scores and gradients, soft-prompt word log-probabilities, the HotFlip pool and the probe features.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

REFERENCE = Path(__file__).resolve().parent / "data" / "scoring_reference.json"
MULTI = {"negative": ["bad", "terribly"], "positive": ["great", "greatness", "films"]}
ROWS = [
    ("the movie was great", 1), ("a wonderful story", 1), ("a good film", 1),
    ("it was fine and good", 1), ("what a great game", 1), ("the team won", 1),
    ("it was terrible", 0), ("a bad film", 0), ("not good , not great", 0),
    ("the market fell today", 0), ("it was bad", 0), ("a terrible story", 0),
]
FACTS = [("the team", "sports"), ("the game", "sports"), ("the phone", "tech"),
         ("the story", "news"), ("the shop", "market"), ("the pet", "cats"),
         ("the firm", "business"), ("the planet", "world")]
VOCAB = ["sports", "tech", "news", "business", "world", "game", "story", "answer", "cats"]


def toy_task(folder: Path):
    from autoprompt_search.core.tasks import Task

    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in ROWS))
    raw = {"name": "toy", "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
           "fields": ["sentence"], "labels": ["negative", "positive"],
           "verbalizer": {"negative": ["bad"], "positive": ["great"]},
           "prompts": ["{sentence} it was [P] .", "{sentence} a [P] film ."]}
    return Task.from_mapping(raw, source="toy.yaml", base=folder)


def lama_task(folder: Path):
    from autoprompt_search.core.tasks import Task

    (folder / "train.jsonl").write_text("".join(
        json.dumps({"sub_label": s, "obj_label": o}) + "\n" for s, o in FACTS))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    path = folder / "task.yaml"
    path.write_text("name: tiny-lama\ndata: {train: train.jsonl, dev: train.jsonl, test: train.jsonl}\n"
                    "fields: [sub_label]\nlabel_field: obj_label\nlabel_space: vocabulary\n"
                    "candidate_vocab: vocab.txt\nprompts: ['{sub_label} is about [P] .']\n")
    return Task.from_yaml(path)


def _vectors(backend, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    emb = backend.input_embeddings().detach()
    ids = torch.randint(5, backend.vocab_size, (n,), generator=gen)
    return emb[ids] + 0.1 * emb.std() * torch.randn(n, emb.shape[1], generator=gen)


def _rows(backend, n: int, width: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(5, backend.vocab_size, (n, width), generator=gen)


def compute(backends: dict, folder: Path) -> dict[str, list]:
    """Every reference case, by name, as nested lists of floats (or ints)."""
    from autoprompt_search.core.spaces import SearchSpace, TriggerSpec
    from autoprompt_search.models.encoding import FewShot
    from autoprompt_search.scoring.evaluation import evaluate_prompt
    from autoprompt_search.scoring.objective import TriggerObjective
    from autoprompt_search.scoring.scorer import PromptScorer
    from autoprompt_search.scoring.softprompt import SoftScorer
    from autoprompt_search.search.labels import predict_features
    from autoprompt_search.search.pools import PoolContext, gradient_pool

    task = toy_task(folder)
    (folder / "lama").mkdir(exist_ok=True)
    lama = lama_task(folder / "lama")
    examples = task.examples("train")
    out: dict[str, list] = {}
    for kind, backend in backends.items():
        verbs = {"single": None, "multi": MULTI} if kind == "causal" else {"single": None}
        trig = "Review : {sentence} so [T] [T] it was [P] ."
        for vname, verb in verbs.items():
            for tname, template in {"plain": "{sentence} it was [P] .", "triggers": trig}.items():
                scorer = PromptScorer(backend, task, template, verb, batch_size=5)
                ids = _rows(backend, 1, scorer.template.num_triggers, seed=3)[0].tolist()
                out[f"{kind}/{vname}/{tname}/class_logprobs"] = \
                    scorer.class_logprobs(examples, ids).tolist()
            fs = FewShot("Classify each review.", tuple(examples[:3]))
            scorer = PromptScorer(backend, task, trig, verb, fs, batch_size=4)
            ids = _rows(backend, 1, 2, seed=4)[0].tolist()
            out[f"{kind}/{vname}/fewshot/class_logprobs"] = \
                scorer.class_logprobs(examples, ids).tolist()
            scorer = PromptScorer(backend, task, trig, verb)
            obj = TriggerObjective(scorer, forward_batch=7, forward_tokens=80)
            rows = _rows(backend, 4, 2)
            batch = obj.encode(examples, rows[0].tolist())
            out[f"{kind}/{vname}/objective/losses"] = obj.losses(batch, rows).tolist()
            out[f"{kind}/{vname}/objective/class_scores"] = \
                obj.class_scores(batch, rows[1].tolist()).tolist()
            grad, loss = obj.gradient(batch, rows[2].tolist())
            out[f"{kind}/{vname}/objective/gradient"] = grad.tolist()
            out[f"{kind}/{vname}/objective/gradient_loss"] = [loss]
            soft = SoftScorer(backend, task, trig, verb)
            with torch.no_grad():
                out[f"{kind}/{vname}/soft/word_logprobs"] = soft.word_logprobs(
                    soft.encode(examples), _vectors(backend, 2)).tolist()
            soft_ev = soft.evaluate(examples, _vectors(backend, 2), "dev")
            out[f"{kind}/{vname}/soft/evaluate"] = [soft_ev.metrics["accuracy"],
                                                    soft_ev.metrics["loss"]]
        ev = evaluate_prompt(backend, task, "{sentence} it was [P] .", "dev")
        out[f"{kind}/evaluate"] = [ev.metrics["accuracy"], ev.metrics["macro_f1"]] + ev.predictions
        # LAMA retrieval (ranks among the candidate vocabulary, and the whole vocabulary)
        for restrict in (True, False):
            ev = evaluate_prompt(backend, lama, "{sub_label} [T] [T] [P] .", "dev",
                                 triggers=_rows(backend, 1, 2, seed=5)[0].tolist(),
                                 restrict_vocab=restrict)
            m = ev.metrics
            out[f"{kind}/lama/restrict={restrict}"] = [m["precision_at_1"], m["precision_at_10"],
                                                       m["mrr"], m["n"]] + ev.predictions
        # the HotFlip pool and the label-word probe's features
        space = SearchSpace(task=None)
        spec = TriggerSpec(pool="gradient", size=20, min_chars=1)
        templates = ["{sentence} it was [P] ."]
        ctx = PoolContext(backend, task, space, spec, examples, templates, frozenset())
        out[f"{kind}/gradient_pool"] = gradient_pool(ctx)[:20]
        scorer = PromptScorer(backend, task, trig)
        feats = predict_features(backend, scorer, examples, _rows(backend, 1, 2, seed=6)[0].tolist())
        out[f"{kind}/probe_features"] = feats[:, :8].tolist()
    return out


def tiny_backends() -> dict:
    from autoprompt_search.models import wrap_model
    from autoprompt_search.testing import tiny_causal_lm, tiny_masked_lm

    return {"causal": wrap_model(*tiny_causal_lm(seed=0), name="tiny-causal"),
            "masked": wrap_model(*tiny_masked_lm(seed=0), name="tiny-masked")}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        cases = compute(tiny_backends(), Path(tmp))
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(cases) + "\n")
    print(f"{len(cases)} cases -> {REFERENCE}", file=sys.stderr)
