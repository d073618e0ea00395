"""What a prompt's prediction is ranked among: a verbalizer's label words, or an open-vocabulary
task's candidate objects (LAMA), as one type.

:func:`resolve_targets` is the one place that tells the two apart. Both give the engine
(:mod:`autoprompt_search.scoring.engine`) the words it scores (:class:`LabelWords`: token ids of
each word and the class it belongs to) and the examples of each split with their gold class;
they differ in the metrics and the predictions an evaluation reports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch

from ..core.data import Example
from ..core.errors import UserError
from ..core.tasks import Task
from ..core.templates import Predict, Template
from ..models.base import LMBackend
from .metrics import classification_metrics, retrieval_metrics


@dataclass(frozen=True)
class LabelWords:
    """A verbalizer resolved to token ids for one backend and one template."""

    word_class: tuple[int, ...]  # class index of each label word
    word_ids: tuple[tuple[int, ...], ...]  # token ids of each label word
    num_classes: int

    @property
    def first_ids(self) -> torch.Tensor:
        return torch.tensor([ids[0] for ids in self.word_ids], dtype=torch.long)

    @property
    def membership(self) -> torch.Tensor:
        """[W, C] boolean: label word w belongs to class c."""
        m = torch.zeros(len(self.word_ids), self.num_classes, dtype=torch.bool)
        m[torch.arange(len(self.word_ids)), torch.tensor(self.word_class)] = True
        return m

    @cached_property
    def one_word_per_class(self) -> bool:
        """Word w is class w (the candidate objects of an open-vocabulary task)."""
        return self.word_class == tuple(range(self.num_classes))

    def class_scores(self, word_logp: torch.Tensor) -> torch.Tensor:
        """[N, W] label-word log-probs -> [N, C] class log-probs (log-sum-exp per class)."""
        if self.one_word_per_class:
            return word_logp
        masked = word_logp[:, :, None].masked_fill(~self.membership.to(word_logp.device), -torch.inf)
        return torch.logsumexp(masked, dim=1)

    @classmethod
    def single_tokens(cls, token_ids: Sequence[int]) -> LabelWords:
        """One single-token word per class (candidate objects, or a list of tokens to score)."""
        ids = [int(t) for t in token_ids]
        return cls(tuple(range(len(ids))), tuple((t,) for t in ids), len(ids))


def predict_space(template: Template) -> bool:
    """Whether the template writes a space before [P] (label words are tokenised with it)."""
    return next(s.space for s in template.segments if isinstance(s, Predict))


def resolve_label_words(backend: LMBackend, template: Template, labels: list[str],
                        verbalizer: dict[str, list[str]]) -> LabelWords:
    """Tokenise each label word as it appears at [P] (leading space where the template has one);
    the backend rejects words it cannot score (several tokens at a masked LM's [MASK])."""
    space = predict_space(template)
    word_class, word_ids = [], []
    for c, label in enumerate(labels):
        for word in verbalizer[label]:
            ids = backend.encoder.label_ids(word, space)
            backend.check_label_word(word, label, ids)
            word_class.append(c)
            word_ids.append(tuple(ids))
    return LabelWords(tuple(word_class), tuple(word_ids), len(labels))


@dataclass
class Targets(ABC):
    """The words a search or an evaluation ranks, and each split's examples with their class."""

    words: LabelWords
    examples: dict[str, list[Example]]  # per split, ``label`` = the class index
    columns: dict[str, torch.Tensor | None]  # per split: the classes ranked (None: all)
    skipped: dict[str, int]  # per split: examples left out
    answer_ids: list[int]  # tokens that are no triggers unless the user allows label words
    demo_labels: list[str] = field(default_factory=list)  # the answer a demonstration shows
    keeps_scores: ClassVar[bool] = True  # an Evaluation keeps the per-example class scores

    @abstractmethod
    def metrics(self, scores: torch.Tensor, gold: np.ndarray, split: str) -> dict:
        """Metrics of class scores ``[N, C]`` against gold classes."""

    def predictions(self, pred: np.ndarray) -> list[int]:
        """What an evaluation records as each example's prediction (and gold) for classes ``pred``."""
        return [int(p) for p in pred]


@dataclass
class LabelWordTargets(Targets):
    """A classification task's classes, scored by their label words."""

    labels: list[str] = field(default_factory=list)

    def metrics(self, scores, gold, split) -> dict:
        return classification_metrics(gold, scores.argmax(-1).numpy(), self.labels)


@dataclass
class OpenVocabTargets(Targets):
    """An open-vocabulary task's candidate objects, one single-token class each.

    An example's class is its gold object's token; examples whose gold object is several tokens
    are left out, and each split is ranked among its own candidates (the task's candidate
    vocabulary and the split's single-token gold objects, or the whole vocabulary).
    """

    keeps_scores: ClassVar[bool] = False  # a row over the whole candidate vocabulary is too large

    def metrics(self, scores, gold, split) -> dict:
        gold_t = torch.as_tensor(gold)
        gold_score = scores[torch.arange(len(gold_t)), gold_t]
        ranks = (scores > gold_score[:, None]).sum(-1).numpy()
        out = retrieval_metrics(ranks)
        out["accuracy"] = out["precision_at_1"]
        out["skipped_multi_token"] = self.skipped.get(split, 0)
        cols = self.columns.get(split)
        out["candidates"] = self.words.num_classes if cols is None else int(cols.sum())
        return out

    def predictions(self, pred: np.ndarray) -> list[int]:
        return [self.words.word_ids[int(p)][0] for p in pred]  # the token ids


def object_token_ids(backend: LMBackend, template: Template, words: Sequence[str]) -> dict[str, int]:
    """Single-token ids of object words at [P] (multi-token words are left out)."""
    space = predict_space(template)
    out = {}
    for word in words:
        ids = backend.encoder.label_ids(word, space)
        if len(ids) == 1:
            out[word] = ids[0]
    return out


def retrieval_candidates(backend: LMBackend, template: Template, task: Task, examples: Sequence,
                         restrict_vocab: bool = True) -> tuple[list[int], dict[str, int]]:
    """(the token ids the gold objects of ``examples`` are ranked among, gold object -> token id).

    The candidates are the single-token ids of the task's candidate vocabulary and of the gold
    objects (the whole vocabulary without ``restrict_vocab`` or a candidate vocabulary); gold
    objects that are not a single token are missing from the map.
    """
    words = task.candidate_words() if restrict_vocab else None
    gold_map = object_token_ids(backend, template, sorted({ex.extra["label_text"] for ex in examples}))
    if words:
        cand = sorted(set(object_token_ids(backend, template, words).values()) | set(gold_map.values()))
    else:
        cand = list(range(backend.vocab_size))
    return cand, gold_map


def resolve_targets(backend: LMBackend, template: Template, task: Task,
                    verbalizer: dict[str, list[str]] | None, splits: dict[str, list[Example]],
                    restrict_vocab: bool = True) -> Targets:
    """The targets of ``task`` for ``template`` (prepared for ``backend``) on ``splits``."""
    if not task.is_open_vocabulary:
        verbalizer = verbalizer or task.verbalizer
        words = resolve_label_words(backend, template, task.labels, verbalizer)
        return LabelWordTargets(words, dict(splits), dict.fromkeys(splits), dict.fromkeys(splits, 0),
                                [ids[0] for ids in words.word_ids],
                                [verbalizer[lab][0] for lab in task.labels], labels=list(task.labels))
    return _open_vocab_targets(backend, template, task, splits, restrict_vocab)


def _open_vocab_targets(backend, template, task, splits, restrict_vocab) -> OpenVocabTargets:
    per_split = {name: retrieval_candidates(backend, template, task, exs, restrict_vocab)
                 for name, exs in splits.items()}
    cand = sorted(set().union(*(c for c, _ in per_split.values())))
    col = {t: i for i, t in enumerate(cand)}
    examples, columns, skipped = {}, {}, {}
    for name, exs in splits.items():
        split_cand, gold = per_split[name]
        kept = [replace(ex, label=col[gold[ex.extra["label_text"]]]) for ex in exs
                if ex.extra["label_text"] in gold]
        if not kept:
            raise UserError(f"no {name} example of task '{task.name}' has an object that is "
                            "a single token in this model's vocabulary; only single-token "
                            "objects are ranked")
        examples[name], skipped[name] = kept, len(exs) - len(kept)
        mask = torch.zeros(len(cand), dtype=torch.bool)
        mask[[col[t] for t in split_cand]] = True
        columns[name] = None if mask.all() else mask
    golds = sorted({t for _, gold in per_split.values() for t in gold.values()})
    return OpenVocabTargets(LabelWords.single_tokens(cand), examples, columns, skipped,
                            cand if task.candidate_vocab and restrict_vocab else golds)
