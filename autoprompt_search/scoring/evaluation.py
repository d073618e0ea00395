"""Evaluate a prompt on a task split: classification metrics or fact-retrieval ranks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..models.encoding import FewShot
from ..core.errors import UserError
from .metrics import classification_metrics, retrieval_metrics
from ..models.base import LMBackend
from .scorer import Evaluation, PromptScorer
from ..core.tasks import Task
from ..core.templates import Predict


def evaluate_prompt(
    backend: LMBackend,
    task: Task,
    template: str,
    split: str = "test",
    *,
    verbalizer: dict[str, list[str]] | None = None,
    triggers: Sequence[int] = (),
    fewshot: FewShot | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = False,
    restrict_vocab: bool = True,
) -> Evaluation:
    """Score ``template`` on ``split`` of ``task``; return metrics and per-example results.

    ``triggers`` fills the template's [T] slots with token ids. For open-vocabulary
    tasks (LAMA) the gold object is ranked among the candidate vocabulary (the task's
    ``candidate_vocab`` when ``restrict_vocab``, else the whole vocabulary).
    """
    examples = task.examples(split)
    if limit is not None:
        examples = examples[:limit]
    scorer = PromptScorer(backend, task, template, verbalizer, fewshot, batch_size)
    if task.is_open_vocabulary:
        return _evaluate_retrieval(scorer, examples, triggers, split, progress, restrict_vocab)
    scores = scorer.class_logprobs(examples, triggers, progress=progress)
    pred = scores.argmax(-1).numpy()
    gold = np.array([ex.label for ex in examples])
    metrics = classification_metrics(gold, pred, task.labels)
    return Evaluation(template, split, metrics, pred.tolist(), gold.tolist(), scores.tolist())


def object_token_ids(backend: LMBackend, scorer: PromptScorer, words: Sequence[str]) -> dict[str, int]:
    """Single-token ids of object words at [P] (multi-token words are left out)."""
    space = next(s.space for s in scorer.template.segments if isinstance(s, Predict))
    out = {}
    for word in words:
        ids = backend.encoder.label_ids(word, space)
        if len(ids) == 1:
            out[word] = ids[0]
    return out


def retrieval_candidates(scorer: PromptScorer, examples: Sequence,
                         restrict_vocab: bool = True) -> tuple[list[int], dict[str, int]]:
    """(the token ids the gold objects of ``examples`` are ranked among, gold object -> token id).

    The candidates are the single-token ids of the task's candidate vocabulary and of the gold
    objects (the whole vocabulary without ``restrict_vocab`` or a candidate vocabulary); gold
    objects that are not a single token are missing from the map.
    """
    backend = scorer.backend
    words = scorer.task.candidate_words() if restrict_vocab else None
    gold_map = object_token_ids(backend, scorer, sorted({ex.extra["label_text"] for ex in examples}))
    if words:
        cand = sorted(set(object_token_ids(backend, scorer, words).values()) | set(gold_map.values()))
    else:
        cand = list(range(backend.vocab_size))
    return cand, gold_map


def _evaluate_retrieval(scorer, examples, triggers, split, progress, restrict_vocab) -> Evaluation:
    cand, gold_map = retrieval_candidates(scorer, examples, restrict_vocab)
    kept = [ex for ex in examples if ex.extra["label_text"] in gold_map]
    if not kept:
        raise UserError("no object of this split is a single token in the model's vocabulary")
    cand_t = torch.tensor(cand)
    logp = scorer.word_logprobs(scorer.encode(kept, triggers), token_ids=cand_t, progress=progress)
    col = {t: i for i, t in enumerate(cand)}
    gold_col = torch.tensor([col[gold_map[ex.extra["label_text"]]] for ex in kept])
    gold_score = logp[torch.arange(len(kept)), gold_col]
    ranks = (logp > gold_score[:, None]).sum(-1).numpy()
    metrics = retrieval_metrics(ranks)
    metrics["accuracy"] = metrics["precision_at_1"]
    metrics["skipped_multi_token"] = len(examples) - len(kept)
    metrics["candidates"] = len(cand)
    pred = [cand[i] for i in logp.argmax(-1).tolist()]
    gold = [gold_map[ex.extra["label_text"]] for ex in kept]
    return Evaluation(scorer.template.source, split, metrics, pred, gold)
