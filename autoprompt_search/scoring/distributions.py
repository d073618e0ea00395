"""Cached next-token distributions at [P]: score many verbalizers with no further forward pass.

For one template (and trigger ids), :func:`cache_distributions` runs the labelled examples once
through the one engine (:class:`~autoprompt_search.scoring.engine.Scorer`) with the whole
vocabulary as its targets and keeps each example's full log-distribution at [P] (the next token
of a causal LM, the [MASK] of a masked LM) as an ``[N, V]`` tensor -- or only its top ``k``
entries for large ``N``. A candidate verbalizer (:class:`LabelWords`: one or several words per
class, a class scoring the log-sum-exp of its words) is then scored from the cache by indexing,
with or without class-level calibration offsets (:meth:`DistributionCache.class_logprobs`).

Label words of several tokens (causal LMs) are not in the [P] distribution: the cache scores
them from one extra pass over the examples that reads their continuations (``words`` of
:func:`cache_distributions`); a multi-token word that pass did not cover is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.data import Example
from ..core.errors import UserError
from .scorer import PromptScorer
from .targets import LabelWords

CACHE_CHUNK = 256  # examples per engine call (the [chunk, V] block before sparsification)


@dataclass
class DistributionCache:
    """Per-example log-distributions at [P] and the whole-word log-probs of multi-token words.

    Dense: ``logp`` is ``[N, V]`` and ``index`` is None. Top-k: ``logp`` is ``[N, k]`` with the
    token ids in ``index`` and every other token gets ``floor[n]``, the example's left-over
    probability mass spread evenly over the tokens outside its top k (an approximation).
    """

    logp: torch.Tensor
    gold: torch.Tensor  # [N] class of each example
    num_classes: int
    vocab_size: int
    index: torch.Tensor | None = None  # [N, k] token ids of a top-k cache
    floor: torch.Tensor | None = None  # [N] log-prob of a token outside the top k
    multi: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict)  # word -> [N]

    def __len__(self) -> int:
        return len(self.gold)

    @property
    def dense(self) -> bool:
        return self.index is None

    def token_logprobs(self, token_ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, T]`` log-probs of single tokens ``token_ids`` at [P] (``rows``: these examples)."""
        token_ids = torch.as_tensor(token_ids, dtype=torch.long)
        logp = self.logp if rows is None else self.logp[rows]
        if self.dense:
            return logp[:, token_ids].float()
        index = self.index if rows is None else self.index[rows]
        floor = self.floor if rows is None else self.floor[rows]
        hit = index[:, :, None] == token_ids[None, None, :]  # [n, k, T]
        found = hit.any(1)
        value = (logp.float()[:, :, None] * hit).sum(1)
        return torch.where(found, value, floor[:, None].float())

    def word_logprobs(self, words: LabelWords, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, W]`` whole-word log-probs of ``words`` (multi-token words from the extra pass)."""
        single = [w for w, ids in enumerate(words.word_ids) if len(ids) == 1]
        n = len(self) if rows is None else len(rows)
        out = torch.empty(n, len(words.word_ids))
        if single:
            ids = torch.tensor([words.word_ids[w][0] for w in single])
            out[:, single] = self.token_logprobs(ids, rows)
        for w, ids in enumerate(words.word_ids):
            if len(ids) > 1:
                if ids not in self.multi:
                    raise UserError(f"label word with token ids {list(ids)} is several tokens and "
                                    "was not scored when the distributions were cached")
                col = self.multi[ids]
                out[:, w] = col if rows is None else col[rows]
        return out

    def class_logprobs(self, words: LabelWords, rows: torch.Tensor | None = None,
                       prior: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, C]`` class scores (log-sum-exp of each class's word log-probs), as
        :meth:`PromptScorer.class_logprobs` gives them with these words.

        ``prior`` calibrates: a ``[C]`` vector is subtracted from every row (class-level
        offsets, e.g. :meth:`class_prior`); a ``[V]`` log-distribution over the vocabulary (e.g.
        a content-free input's) gives the offsets of the words' single tokens.
        """
        scores = words.class_scores(self.word_logprobs(words, rows))
        if prior is None:
            return scores
        prior = torch.as_tensor(prior, dtype=torch.float32)
        if prior.shape == (self.vocab_size,) and prior.shape != (words.num_classes,):
            if any(len(ids) > 1 for ids in words.word_ids):
                raise UserError("a vocabulary prior cannot calibrate label words of several "
                                "tokens; give class offsets instead")
            prior = words.class_scores(prior[words.first_ids][None, :])[0]
        if prior.shape != (words.num_classes,):
            raise ValueError(f"prior of shape {tuple(prior.shape)}: expected [{words.num_classes}] "
                             f"class offsets or a [{self.vocab_size}] vocabulary log-distribution")
        return scores - prior

    def class_prior(self, words: LabelWords, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[C]`` train-prior offsets: the log of each class's probability under the mean
        distribution over the cached examples (``rows``: these only)."""
        word_logp = self.word_logprobs(words, rows)
        mean = torch.logsumexp(word_logp, 0) - math.log(len(word_logp))
        return words.class_scores(mean[None, :])[0]


def cache_distributions(scorer: PromptScorer, examples: Sequence[Example],
                        triggers: Sequence[int] = (), *, words: Sequence[Sequence[int]] = (),
                        top_k: int | None = None, dtype: torch.dtype = torch.float32,
                        progress: bool = False) -> DistributionCache:
    """One pass of ``examples`` through ``scorer``'s design (with ``triggers`` in its [T] slots)
    keeping every example's log-distribution at [P] (``top_k``: only its k largest entries).

    ``words`` are label words (token ids) that may be several tokens: those that are get one
    extra pass that reads their continuations, so that they too score from the cache.
    """
    if not examples:
        raise UserError("no examples to cache distributions for")
    scorer.check_direct("cached [P] distributions")
    backend = scorer.backend
    vocab = backend.vocab_size
    if top_k is not None and not 1 <= top_k < vocab:
        raise UserError(f"--cache-top-k must be between 1 and {vocab - 1}, got {top_k}")
    engine = scorer.engine(LabelWords.single_tokens(range(vocab)))
    batch = engine.encode(examples, triggers)
    parts, index, floor = [], [], []
    for start in range(0, len(batch), CACHE_CHUNK):
        logp = engine.word_logprobs(batch.select(range(start, min(len(batch), start + CACHE_CHUNK))),
                                    progress=progress)  # [chunk, V]
        if top_k is None:
            parts.append(logp.to(dtype))
            continue
        values, ids = logp.topk(top_k, dim=-1)
        rest = torch.log1p(-values.exp().sum(-1).clamp(max=1 - 1e-7)) - math.log(vocab - top_k)
        parts.append(values.to(dtype))
        index.append(ids)
        floor.append(rest)
    cache = DistributionCache(torch.cat(parts), torch.tensor([ex.label for ex in examples]),
                              len(scorer.task.labels), vocab,
                              torch.cat(index) if index else None,
                              torch.cat(floor) if floor else None)
    multi = sorted({tuple(int(t) for t in ids) for ids in words if len(ids) > 1})
    if multi:
        extra = LabelWords(tuple(range(len(multi))), tuple(multi), len(multi))
        mengine = scorer.engine(extra)
        logp = mengine.word_logprobs(mengine.encode(examples, triggers), progress=progress)
        cache.multi = {ids: logp[:, w].clone() for w, ids in enumerate(multi)}
    return cache
