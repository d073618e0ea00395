"""Class scores for (task, template, verbalizer) on a backend: the fast and the naive path.

The class score is the log of the summed probability of the class's label words
(log-sum-exp of their log-probabilities). The fast path computes logits only at the
predict position, batches examples sorted by length, and for causal LMs runs a
prefix shared by every prompt (instruction, demonstrations) once and reuses its
key/value states. The naive path -- one example at a time, full recompute,
full-vocabulary logits at every position -- is kept as the reference that tests
and benchmarks compare against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.data import Example
from ..models.encoding import EncodedPrompt, FewShot
from ..core.errors import UserError
from ..models.base import LMBackend, PrefixCache
from ..core.templates import Predict, Template
from ..core.tasks import Task

MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a cache


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


def resolve_label_words(backend: LMBackend, template: Template, labels: list[str],
                        verbalizer: dict[str, list[str]]) -> LabelWords:
    """Tokenise each label word as it appears at [P] (leading space where the template has one).

    Multi-token words are scored as a sequence by causal LMs and rejected for masked LMs.
    """
    space = next(s.space for s in template.segments if isinstance(s, Predict))
    word_class, word_ids = [], []
    for c, label in enumerate(labels):
        for word in verbalizer[label]:
            ids = backend.encoder.label_ids(word, space)
            if len(ids) > 1 and backend.kind == "masked":
                pieces = [backend.tokenizer.convert_ids_to_tokens(i) for i in ids]
                raise UserError(
                    f"label word {word!r} (class '{label}') splits into {len(ids)} tokens "
                    f"{pieces} in this masked LM's vocabulary; a [MASK] slot predicts one token. "
                    "Choose a single-token word (try `autoprompt-search search-labels` to find some)."
                )
            word_class.append(c)
            word_ids.append(tuple(ids))
    return LabelWords(tuple(word_class), tuple(word_ids), len(labels))


class PromptScorer:
    """Scores one prompt design (template + verbalizer + few-shot framing) on a backend."""

    def __init__(self, backend: LMBackend, task: Task, template: str | Template,
                 verbalizer: dict[str, list[str]] | None = None, fewshot: FewShot | None = None,
                 batch_size: int = 32) -> None:
        self.backend = backend
        self.task = task
        parsed = template if isinstance(template, Template) else Template.parse(template, task.fields)
        self.template = backend.encoder.prepare(parsed)
        self.fewshot = fewshot
        self.batch_size = batch_size
        self.verbalizer = verbalizer or task.verbalizer
        if task.is_open_vocabulary:
            self.label_words = None
            self.demo_labels: list[str] = []
        else:
            self.label_words = resolve_label_words(backend, self.template, task.labels,
                                                   self.verbalizer)
            self.demo_labels = [self.verbalizer[lab][0] for lab in task.labels]

    # --- encoding -----------------------------------------------------------------
    def encode(self, examples: Sequence[Example], triggers: Sequence[int] = ()) -> list[EncodedPrompt]:
        enc = self.backend.encoder
        return [enc.encode(self.template, ex, triggers, self.fewshot, self.demo_labels)
                for ex in examples]

    # --- fast path ----------------------------------------------------------------
    @torch.inference_mode()
    def word_logprobs(self, prompts: Sequence[EncodedPrompt], token_ids: torch.Tensor | None = None,
                      progress: bool = False) -> torch.Tensor:
        """[N, W] log-probs of each label word (or [N, len(token_ids)] of single tokens)."""
        backend = self.backend
        first = token_ids if token_ids is not None else self.label_words.first_ids
        first = first.to(backend.device)
        prefix, cut = self._shared_prefix(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
        out = torch.empty(len(prompts), len(first))
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="scoring", unit="batch", disable=not progress, leave=False):
            idx = order[start : start + self.batch_size]
            batch = backend.pad([prompts[i].ids[cut:] for i in idx])
            pos = torch.tensor([prompts[i].predict_pos - cut for i in idx], device=backend.device)
            kw = {}
            if prefix is not None:
                kw = {"prefix": prefix, "prefix_rows": torch.zeros(len(idx), dtype=torch.long,
                                                                   device=backend.device)}
            out[idx] = backend.logprobs_at(batch, pos, first, **kw).cpu()
        if token_ids is None:
            out = out + self._continuation_logprobs(prompts, prefix, cut)
        return out

    def _shared_prefix(self, prompts: Sequence[EncodedPrompt]) -> tuple[PrefixCache | None, int]:
        """Cache the token prefix every prompt shares (causal LMs), if long enough."""
        if not self.backend.supports_prefix_cache or len(prompts) < 2:
            return None, 0
        limit = min(p.predict_pos for p in prompts)  # the predict position must stay outside
        first = prompts[0].ids
        cut = 0
        while cut < limit and all(p.ids[cut] == first[cut] for p in prompts):
            cut += 1
        if cut < MIN_SHARED_PREFIX:
            return None, 0
        return self.backend.encode_prefix([first[:cut]]), cut

    def _continuation_logprobs(self, prompts, prefix, cut) -> torch.Tensor:
        """log p(t_2..t_m | prompt, t_1..) for multi-token label words (causal LMs); 0 otherwise."""
        extra = torch.zeros(len(prompts), len(self.label_words.word_ids))
        multi = [(w, ids) for w, ids in enumerate(self.label_words.word_ids) if len(ids) > 1]
        backend = self.backend
        for w, ids in multi:
            rest = torch.tensor(ids[1:], device=backend.device)
            steps = torch.arange(len(ids) - 1, device=backend.device)
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                batch = backend.pad([p.ids[cut:] + ids[:-1] for p in chunk])
                pos = torch.tensor([p.predict_pos - cut for p in chunk], device=backend.device)
                pos = pos[:, None] + 1 + steps[None, :]
                kw = {}
                if prefix is not None:
                    kw = {"prefix": prefix, "prefix_rows": torch.zeros(len(chunk), dtype=torch.long,
                                                                       device=backend.device)}
                logp = backend.logprobs_at(batch, pos, **kw)  # [R, m-1, V]
                picked = logp.gather(-1, rest[None, :, None].expand(len(chunk), -1, 1))[..., 0]
                extra[start : start + len(chunk), w] = picked.sum(-1).cpu()
        return extra

    def class_logprobs(self, examples: Sequence[Example], triggers: Sequence[int] = (),
                       progress: bool = False) -> torch.Tensor:
        """[N, C] class log-probabilities (fast path)."""
        return self.label_words.class_scores(self.word_logprobs(self.encode(examples, triggers),
                                                                progress=progress))

    # --- naive reference ------------------------------------------------------------
    @torch.inference_mode()
    def naive_class_logprobs(self, examples: Sequence[Example], triggers: Sequence[int] = (),
                             label_words: LabelWords | None = None) -> torch.Tensor:
        """The same scores the slow way: one example and one label word at a time, full
        recompute, full-vocabulary logits at every position (as research code does).
        ``label_words`` replaces the verbalizer's words."""
        model = self.backend.model
        words = label_words or self.label_words
        rows = []
        for prompt in self.encode(examples, triggers):
            word_logp = []
            for ids in words.word_ids:
                if self.backend.kind == "masked":
                    seq, steps = list(prompt.ids), [(prompt.predict_pos, ids[0])]
                else:
                    seq = list(prompt.ids) + list(ids[:-1])
                    steps = [(prompt.predict_pos + j, t) for j, t in enumerate(ids)]
                logits = model(input_ids=torch.tensor([seq], device=self.backend.device)).logits[0]
                logp = torch.log_softmax(logits.float(), dim=-1)
                word_logp.append(sum(float(logp[i, t]) for i, t in steps))
            rows.append(word_logp)
        return words.class_scores(torch.tensor(rows))


@dataclass
class Evaluation:
    """Metrics of one prompt on one split, with per-example results for paired tests."""

    prompt: str
    split: str
    metrics: dict
    predictions: list[int]
    gold: list[int]
    scores: list[list[float]] | None = None

    @property
    def correct(self) -> np.ndarray:
        return np.asarray(self.predictions) == np.asarray(self.gold)

    def to_dict(self, with_examples: bool = False) -> dict:
        d = {"prompt": self.prompt, "split": self.split, **self.metrics}
        if with_examples:
            d.update(predictions=self.predictions, gold=self.gold)
        return d
