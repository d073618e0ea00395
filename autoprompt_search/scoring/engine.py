"""The one scoring engine: label-word log-probabilities of prompts on a backend.

:class:`Scorer` encodes examples once into an :class:`EncodedBatch` and scores them, with the
template's [T] slots holding the encoded trigger ids, other trigger ids (candidate rows of a
search), or continuous vectors (soft prompts, PEZ), with gradients with respect to the slots.
It owns

* the prefix caches (causal LMs): a prefix every prompt shares (instruction, demonstrations)
  run once (:attr:`PrefixMode.SHARED`), or each example's tokens before its first [T] run once
  and continued by many trigger rows (:attr:`PrefixMode.PER_EXAMPLE`);
* label words of several tokens (causal LMs), scored as whole words: a row per multi-token word,
  the prompt followed by the word's tokens but the last;
* targets of one type: a verbalizer's label words or an open-vocabulary task's candidate
  objects (:mod:`autoprompt_search.scoring.targets`), a class's score being the log-sum-exp of
  its words' log-probabilities;
* the scoring rule (:class:`~.sequence.ScoringRule`): channel scoring, and a causal LM's
  template with text after [P], read whole sequences (:mod:`.sequence`), not the word at [P];
* chunking (at most ``forward_batch`` rows and ``forward_tokens`` tokens per forward pass,
  examples of similar length together) and out-of-memory halving.

The naive reference (one example and one word at a time, full recompute) is
:meth:`autoprompt_search.scoring.scorer.PromptScorer.naive_class_logprobs`.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..core.data import Example
from ..core.errors import UserError
from ..core.templates import Template
from ..models.base import LMBackend, PaddedBatch, PrefixCache
from ..models.encoding import EncodedPrompt, FewShot
from .sequence import ScoringRule, SequenceScorer, needs_sequence, refuse_whole_sequence, scoring_rule
from .targets import LabelWords

log = logging.getLogger(__name__)

PREFIX_CHUNK = 64  # prompts per prefix-encoding pass
MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a cache


class PrefixMode(str, enum.Enum):
    """Which tokens of the prompts run once and are kept as key/value states (causal LMs)."""

    NONE = "none"  # every pass runs the whole prompt
    SHARED = "shared"  # the prefix all prompts share (fixed prompts: instruction, demonstrations)
    PER_EXAMPLE = "per_example"  # each prompt's tokens before its first [T] (trigger searches)


@dataclass
class EncodedBatch:
    """Examples encoded once; the trigger slots may be overwritten per candidate.

    With a prefix cache, row ``prefix_rows[b]`` of ``prefix`` holds example b's tokens before
    the cut and only the suffix from the cut on is run again.
    """

    gold: torch.Tensor  # [B] (-1: not known, for scores without a loss)
    prefix: PrefixCache | None
    prefix_rows: torch.Tensor  # [B] row of each example in ``prefix``
    suffix: torch.Tensor  # [B, L] right-padded ids after the cut (room for appended label words)
    suffix_mask: torch.Tensor  # [B, L]
    suffix_len: torch.Tensor  # [B]
    trig_pos: torch.Tensor  # [B, P] trigger positions relative to the cut
    pred_pos: torch.Tensor  # [B] predict position relative to the cut
    columns: torch.Tensor | None = None  # [C] bool: the classes these examples are ranked among
    examples: tuple[Example, ...] = ()  # what a whole-sequence rule scores (:mod:`.sequence`)
    triggers: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.gold)

    def select(self, index: Sequence[int]) -> EncodedBatch:
        """The examples ``index`` (sharing this batch's prefix cache)."""
        i = torch.tensor(list(index), dtype=torch.long)
        d = i.to(self.suffix.device)
        return EncodedBatch(self.gold[i], self.prefix, self.prefix_rows[d], self.suffix[d],
                            self.suffix_mask[d], self.suffix_len[d], self.trig_pos[d],
                            self.pred_pos[d], self.columns,
                            tuple(self.examples[j] for j in index) if self.examples else (),
                            self.triggers)


class Scorer:
    """Label-word (or candidate-object) log-probabilities of prompts, class scores, losses and
    gradients with respect to the [T] slots; see the module docstring.

    ``template`` is already prepared for the backend (:meth:`PromptEncoder.prepare`);
    ``words`` are the targets' words (:attr:`Targets.words`); ``fewshot`` and ``demo_labels``
    frame each prompt with demonstrations. ``forward_tokens=None`` puts no limit on the tokens
    of a pass.
    """

    def __init__(self, backend: LMBackend, template: Template, words: LabelWords, *,
                 fewshot: FewShot | None = None, demo_labels: Sequence[str] = (),
                 forward_batch: int = 256, forward_tokens: int | None = 1024,
                 prefix: PrefixMode = PrefixMode.PER_EXAMPLE,
                 rule: ScoringRule = ScoringRule.DIRECT) -> None:
        self.backend = backend
        self.rule = scoring_rule(rule)
        self.sequence = SequenceScorer(backend, template, words, self.rule, fewshot=fewshot,
                                       demo_labels=demo_labels, forward_batch=forward_batch) \
            if needs_sequence(backend, template, self.rule) else None
        self.template = template
        self.targets = words
        self.fewshot = fewshot
        self.demo_labels = list(demo_labels)
        self.forward_batch = forward_batch
        self.forward_tokens = math.inf if forward_tokens is None else forward_tokens
        self.prefix_mode = PrefixMode(prefix) if backend.supports_prefix_cache else PrefixMode.NONE
        # demonstrations written with the encoded trigger ids keep them whatever fills the query
        self._demo_triggers = bool(fewshot is not None and fewshot.demos and template.num_triggers)
        device = backend.device
        first = words.first_ids
        whole_vocab = torch.equal(first, torch.arange(backend.vocab_size))
        self.label_ids = None if whole_vocab else first.to(device)  # None: every token, in order
        multi = [(w, ids) for w, ids in enumerate(words.word_ids) if len(ids) > 1]
        self.ext = max((len(ids) - 1 for _, ids in multi), default=0)  # tokens appended after [P]
        self.groups = max(1, len(multi))  # rows per example: one per multi-token word
        appended = torch.full((self.groups, self.ext), backend.pad_id, dtype=torch.long)
        queries = []  # (row group, step after [P], token, word) of every continuation token
        for g, (w, ids) in enumerate(multi):
            appended[g, : len(ids) - 1] = torch.tensor(ids[:-1])
            queries += [(g, j, ids[j], w) for j in range(1, len(ids))]
        self._appended = appended.to(device)
        self._appended_len = torch.tensor([len(ids) - 1 for _, ids in multi] or [0], device=device)
        self._queries = torch.tensor(queries, dtype=torch.long, device=device).reshape(-1, 4).T
        # [C] log-space calibration offsets subtracted from the class scores of losses, gradients
        # and class_scores (scoring.calibration); None: uncalibrated
        self.offsets: torch.Tensor | None = None

    @property
    def use_prefix_cache(self) -> bool:
        return self.prefix_mode is not PrefixMode.NONE

    # --- encoding ----------------------------------------------------------------------
    def prompts(self, examples: Sequence[Example], triggers: Sequence[int]) -> list[EncodedPrompt]:
        """``examples`` encoded with ``triggers`` in the [T] slots (and the few-shot framing)."""
        enc = self.backend.encoder
        return [enc.encode(self.template, ex, list(triggers), self.fewshot, self.demo_labels)
                for ex in examples]

    def encode(self, examples: Sequence[Example], triggers: Sequence[int],
               columns: torch.Tensor | None = None,
               gold: Sequence[int] | None = None) -> EncodedBatch:
        """Encode ``examples`` (with any trigger ids when the slots are overwritten later);
        ``columns`` restricts the classes they are ranked among; ``gold`` replaces their labels."""
        gold = [ex.label for ex in examples] if gold is None else gold
        if self.sequence is not None:  # whole sequences per word: encoded when scored
            n, empty = len(examples), torch.zeros(len(examples), 0, dtype=torch.long)
            return EncodedBatch(torch.tensor(list(gold)), None, torch.zeros(n, dtype=torch.long),
                                empty, empty, torch.zeros(n, dtype=torch.long), empty,
                                torch.zeros(n, dtype=torch.long), columns, tuple(examples),
                                tuple(int(t) for t in triggers))
        prompts = self.prompts(examples, triggers)
        if self.prefix_mode is PrefixMode.SHARED:
            prefix, cut = self.shared_prefix(prompts)
            return self.batch(prompts, gold, prefix, [0] * len(prompts), columns,
                              cuts=[cut] * len(prompts))
        prefix = self.prefix_cache(prompts) if self.use_prefix_cache else None
        return self.batch(prompts, gold, prefix, columns=columns)

    def shared_prefix(self, prompts: Sequence[EncodedPrompt]) -> tuple[PrefixCache | None, int]:
        """(the key/value states of the tokens every prompt shares, their number), if worth it.

        The prefix stops before every prompt's predict position; trigger slots inside it keep
        the ids the prompts were encoded with.
        """
        if not self.backend.supports_prefix_cache or len(prompts) < 2:
            return None, 0
        limit = min(p.predict_pos for p in prompts)  # the predict position must stay outside
        first = prompts[0].ids
        cut = 0
        while cut < limit and all(p.ids[cut] == first[cut] for p in prompts):
            cut += 1
        if cut < MIN_SHARED_PREFIX:
            return None, 0
        return PrefixCache.concat([self.backend.encode_prefix([first[:cut]])]), cut  # plain tensors

    def prefix_cache(self, prompts: Sequence[EncodedPrompt]) -> PrefixCache | None:
        """Key/value states of each prompt's tokens before its first [T], row n for prompt n
        (causal LMs; None for masked LMs or when a prompt starts with its first [T]).

        The tensors are plain ones (not inference tensors), so autograd may save them when
        gradients flow through the suffix that continues them.
        """
        if not self.backend.supports_prefix_cache or min(p.prefix_len for p in prompts) < 1:
            return None
        return PrefixCache.concat([self.backend.encode_prefix([p.ids[: p.prefix_len] for p in
                                                           prompts[i : i + PREFIX_CHUNK]])
                               for i in range(0, len(prompts), PREFIX_CHUNK)])

    def batch(self, prompts: Sequence[EncodedPrompt], gold: Sequence[int] | None = None,
              prefix: PrefixCache | None = None, prefix_rows: Sequence[int] | None = None,
              columns: torch.Tensor | None = None, cuts: Sequence[int] | None = None,
              ) -> EncodedBatch:
        """Encoded prompts as a batch (``gold``: their classes, -1 where unknown).

        With ``prefix``, prompt n continues cached row ``prefix_rows[n]`` (default n) and only
        its tokens from ``cuts[n]`` on (default: its first [T], :meth:`prefix_cache`) are run.
        """
        backend = self.backend
        device = backend.device
        if cuts is None:
            cuts = [p.prefix_len if prefix is not None else 0 for p in prompts]
        rows = range(len(prompts)) if prefix_rows is None else prefix_rows
        suffix = backend.pad([p.ids[c:] for p, c in zip(prompts, cuts)])
        room = (0, self.ext)  # padding columns where multi-token label words are appended
        return EncodedBatch(
            gold=torch.tensor([-1] * len(prompts) if gold is None else list(gold)),
            prefix=prefix,
            prefix_rows=torch.tensor(list(rows), dtype=torch.long, device=device),
            suffix=torch.nn.functional.pad(suffix.input_ids, room, value=backend.pad_id),
            suffix_mask=torch.nn.functional.pad(suffix.attention_mask, room),
            suffix_len=suffix.attention_mask.sum(-1),
            trig_pos=torch.tensor([[t - c for t in p.trigger_pos] for p, c in zip(prompts, cuts)],
                                  dtype=torch.long, device=device).reshape(len(prompts), -1),
            pred_pos=torch.tensor([p.predict_pos - c for p, c in zip(prompts, cuts)], device=device),
            columns=None if columns is None else columns.to(device),
        )

    def _classes(self, scores: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
        """[R, W] word scores -> [R, C] class scores (-inf outside ``columns``)."""
        classes = self.targets.class_scores(scores)
        if self.offsets is not None:
            classes = classes - self.offsets.to(classes.device, classes.dtype)
        return classes if columns is None else classes.masked_fill(~columns, -torch.inf)

    def _row_loss(self, scores: torch.Tensor, gold: torch.Tensor,
                  columns: torch.Tensor | None = None) -> torch.Tensor:
        classes = self._classes(scores, columns)
        return -torch.log_softmax(classes, -1).gather(1, gold[:, None].to(classes.device))[:, 0]

    def _forward(self, batch: EncodedBatch, b: torch.Tensor, rows: torch.Tensor | None,
                 trig_embeds: torch.Tensor | None = None, exact: bool = False) -> torch.Tensor:
        """``[R, W]`` target-word scores for examples ``b`` with trigger ids ``rows`` ([R, P];
        None: the ids encoded in the batch) or, with ``trig_embeds`` ([P, d]), those vectors
        in the trigger slots of every row (gradients flow into them).

        Logits at [P] when every word is one token (their normaliser cancels among the
        classes) unless ``exact``, else log-probabilities of the whole words.
        """
        self.check_direct("trigger searches and soft prompts")
        if (rows is not None or trig_embeds is not None) and (
                self._demo_triggers or bool((batch.trig_pos[b] < 0).any())):
            raise ValueError("trigger slots in demonstrations or in a shared prefix cannot be "
                             "refilled; encode the prompts with the triggers to score")
        bx = b.repeat_interleave(self.groups)  # each example's rows, one per multi-token word
        width = int(batch.suffix_len[b].max()) + self.ext
        ids = batch.suffix[bx, :width]
        if rows is not None:
            ids.scatter_(1, batch.trig_pos[bx], rows.repeat_interleave(self.groups, 0))
        mask, pos = batch.suffix_mask[bx, :width], batch.pred_pos[bx]
        if self.ext:
            pos = self._append_words(ids, mask, pos)
        kw = {}
        if batch.prefix is not None:
            kw = {"prefix": batch.prefix, "prefix_rows": batch.prefix_rows[bx]}
        if trig_embeds is not None:  # trigger embeddings that receive gradients
            emb = self.backend.embed(ids).detach()
            tpos = batch.trig_pos[bx]
            r = torch.arange(len(bx), device=ids.device)[:, None].expand_as(tpos)
            slot = torch.arange(tpos.shape[1], device=ids.device)[None, :].expand_as(tpos)
            values = trig_embeds.to(device=emb.device, dtype=emb.dtype)[slot.reshape(-1)]
            kw["inputs_embeds"] = emb.index_put((r.reshape(-1), tpos.reshape(-1)), values)
        hidden = self.backend.hidden_at(PaddedBatch(ids, mask), pos, **kw)
        if self.ext:
            return self._word_logprobs(hidden.view(len(b), self.groups, self.ext + 1, -1))
        if not exact:
            return self.backend.head(hidden, self.label_ids).float()
        return self._first_logprobs(hidden)

    def check_direct(self, what: str) -> None:
        """Raise a user error if ``what`` (which reads the label word at [P]) meets a
        whole-sequence rule (:func:`~.sequence.refuse_whole_sequence`)."""
        if self.sequence is not None:
            refuse_whole_sequence(what, self.template, self.rule)

    def _append_words(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Write each row's label word (all tokens but the last) after [P], in place; return
        the positions to read: [P] and each appended token (``[R, ext + 1]``)."""
        device = ids.device
        group = torch.arange(self.groups, device=device).repeat(len(ids) // self.groups)
        steps = torch.arange(self.ext, device=device)
        valid = steps[None, :] < self._appended_len[group][:, None]
        cols = (pos[:, None] + 1 + steps[None, :])[valid]
        r = torch.arange(len(ids), device=device)[:, None].expand_as(valid)[valid]
        ids[r, cols] = self._appended[group][valid]
        mask[r, cols] = 1
        return pos[:, None] + torch.arange(self.ext + 1, device=device)[None, :]

    def _word_logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[R, W]`` log p(word | prompt) from hidden states ``[R, groups, ext + 1, d]``."""
        first = self._first_logprobs(hidden[:, 0, 0])
        group, step, token, word = self._queries
        cont = torch.log_softmax(self.backend.head(hidden[:, group, step]).float(), -1)  # [R, Q, V]
        picked = cont.gather(-1, token[None, :, None].expand(len(hidden), -1, 1))[..., 0]
        return first.index_add(1, word, picked)

    def _first_logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[R, W]`` log p(first token of each word) from the hidden states ``[R, d]`` at [P]."""
        logp = torch.log_softmax(self.backend.head(hidden).float(), -1)
        return logp if self.label_ids is None else logp[:, self.label_ids]

    # --- continuous vectors in the trigger slots ------------------------------------------------
    def vector_word_logprobs(self, batch: EncodedBatch, vectors: torch.Tensor) -> torch.Tensor:
        """``[B, W]`` log-probabilities of the target words (whole words) for every example of
        ``batch`` with ``vectors`` ([P, d]) in its trigger slots, differentiable in ``vectors``.

        One forward pass of ``B`` times the rows per example: the caller sizes the batch.
        """
        b = torch.arange(len(batch), device=self.backend.device)
        return self._forward(batch, b, None, vectors, exact=True)

    def vector_loss(self, batch: EncodedBatch, vectors: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the gold classes with ``vectors`` in the slots (differentiable)."""
        scores = self.vector_word_logprobs(batch, vectors)
        return self._row_loss(scores, batch.gold, batch.columns).mean()

    # --- chunking and out-of-memory retries ---------------------------------------------------
    def _in_chunks(self, widths: Sequence[int], run: Callable[[int, int], None],
                   backward: bool = False, progress: bool = False) -> None:
        """``run(start, end)`` over consecutive units (examples or example x candidate pairs,
        ``groups`` rows of ``widths[i]`` tokens each), at least one unit per chunk.

        Forward passes take at most ``forward_batch`` rows and ``forward_tokens`` tokens;
        passes with a backward pass ``forward_batch // 4`` rows. A chunk that runs out of
        memory halves both limits and is run again in smaller pieces.
        """
        start = 0
        with tqdm(total=len(widths), desc="scoring", unit="prompt", disable=not progress,
                  leave=False) as bar:
            while start < len(widths):
                end = self._chunk_end(widths, start, backward)
                if self._fits(run, start, end):
                    bar.update(end - start)
                    start = end

    def _chunk_end(self, widths: Sequence[int], start: int, backward: bool) -> int:
        max_rows = max(1, self.forward_batch // 4) if backward else self.forward_batch
        max_tokens = math.inf if backward else self.forward_tokens
        end, width = start + 1, widths[start]
        while end < len(widths):
            rows, w = (end + 1 - start) * self.groups, max(width, widths[end])
            if rows > max_rows or rows * w > max_tokens:
                break
            end, width = end + 1, w
        return end

    def _fits(self, run: Callable[[int, int], None], start: int, end: int) -> bool:
        """Run one chunk; False, with halved limits, if it ran out of memory."""
        try:
            run(start, end)
            return True
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        # the exception (and the tensors its traceback held) is released here
        if end - start == 1:
            raise UserError("one example does not fit in memory even alone in a forward pass; "
                            "use a smaller model, --dtype bfloat16 or shorter inputs")
        self.forward_batch = max(1, self.forward_batch // 2)
        if self.forward_tokens != math.inf:  # no token limit stays none
            self.forward_tokens = max(1, self.forward_tokens // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of memory in a forward pass of %d rows; retrying with --forward-batch "
                    "%d and --forward-tokens %s", (end - start) * self.groups, self.forward_batch,
                    self.forward_tokens)
        return False

    # --- fast batched candidate scoring ----------------------------------------------------
    @torch.inference_mode()
    def losses(self, batch: EncodedBatch, rows: torch.Tensor) -> torch.Tensor:
        """``[N]`` mean loss over the batch of each trigger sequence in ``rows`` ``[N, P]``.

        All candidate x example pairs go through forward passes of at most
        ``forward_batch`` rows and ``forward_tokens`` tokens, examples of similar
        length together (little padding).
        """
        device = self.backend.device
        n, num_ex = rows.shape[0], len(batch)
        rows = rows.to(device)
        order = sorted(range(num_ex), key=lambda b: int(batch.suffix_len[b]))
        ex_idx = torch.tensor(order, device=device).repeat_interleave(n)
        cand_idx = torch.arange(n, device=device).repeat(num_ex)
        widths = (batch.suffix_len.to(device)[ex_idx] + self.ext).tolist()  # ascending
        gold = batch.gold.to(device)
        total = torch.zeros(n, dtype=torch.float64)

        def run(start: int, end: int) -> None:
            b, c = ex_idx[start:end], cand_idx[start:end]
            loss = self._row_loss(self._forward(batch, b, rows[c]), gold[b], batch.columns)
            total.index_add_(0, c.cpu(), loss.double().cpu())

        self._in_chunks(widths, run)
        return (total / num_ex).float()

    def _by_length(self, batch: EncodedBatch, fn: Callable[[torch.Tensor], None],
                   progress: bool = False) -> None:
        """``fn(b)`` over chunks of examples ``b``, shortest first."""
        device = self.backend.device
        order = torch.argsort(batch.suffix_len.cpu(), stable=True)
        widths = (batch.suffix_len.cpu()[order] + self.ext).tolist()
        self._in_chunks(widths, lambda start, end: fn(order[start:end].to(device)),
                        progress=progress)

    def _trigger_rows(self, triggers: Sequence[int] | None, n: int) -> torch.Tensor | None:
        if triggers is None:
            return None
        return torch.tensor(list(triggers), device=self.backend.device)[None, :].expand(n, -1)

    @torch.inference_mode()
    def word_logprobs(self, batch: EncodedBatch, triggers: Sequence[int] | None = None,
                      progress: bool = False) -> torch.Tensor:
        """``[B, W]`` log-probabilities of the target words (whole words), with ``triggers``
        in the slots (None: the ids the batch was encoded with)."""
        if self.sequence is not None:
            if len(batch) and not batch.examples:  # encoded prompts: only the [P] reading is known
                self.check_direct("scoring encoded prompts")
            return self.sequence.word_logprobs(
                batch.examples, batch.triggers if triggers is None else triggers)
        out = torch.empty(len(batch), len(self.targets.word_ids))

        def run(b: torch.Tensor) -> None:
            out[b.cpu()] = self._forward(batch, b, self._trigger_rows(triggers, len(b)),
                                         exact=True).cpu()

        self._by_length(batch, run, progress)
        return out

    @torch.inference_mode()
    def class_scores(self, batch: EncodedBatch, triggers: Sequence[int] | None = None,
                     progress: bool = False) -> torch.Tensor:
        """``[B, C]`` class scores (log-softmax over the classes, -inf outside the batch's
        columns) of every example for ``triggers`` (None: the ids encoded in the batch)."""
        if self.sequence is not None:
            scores = self._classes(self.word_logprobs(batch, triggers), batch.columns)
            return torch.log_softmax(scores, -1)
        out = torch.empty(len(batch), self.targets.num_classes)

        def run(b: torch.Tensor) -> None:
            scores = self._forward(batch, b, self._trigger_rows(triggers, len(b)))
            out[b.cpu()] = torch.log_softmax(self._classes(scores, batch.columns), -1).cpu()

        self._by_length(batch, run, progress)
        return out

    @torch.inference_mode()
    def at_predict(self, batch: EncodedBatch, fn: Callable[[torch.Tensor, torch.Tensor,
                                                            torch.Tensor], None]) -> None:
        """``fn(b, hidden, positions)`` for chunks of examples ``b``: the hidden states that feed
        the LM head at [P] (``[len(b), d]``) and where [P] is in the rows that were run."""
        self.check_direct("hidden states at [P]")
        def run(b: torch.Tensor) -> None:
            width = int(self.ext + batch.suffix_len[b].max())
            ids, mask, pos = batch.suffix[b, :width], batch.suffix_mask[b, :width], batch.pred_pos[b]
            kw = {}
            if batch.prefix is not None:
                kw = {"prefix": batch.prefix, "prefix_rows": batch.prefix_rows[b]}
            fn(b, self.backend.hidden_at(PaddedBatch(ids, mask), pos, **kw), pos)

        self._by_length(batch, run)

    # --- gradient ---------------------------------------------------------------------------
    def gradient(self, batch: EncodedBatch, triggers: Sequence[int]) -> tuple[torch.Tensor, float]:
        """(``[P, d]`` gradient of the mean loss w.r.t. the trigger embeddings, the mean loss).

        Only the trigger embeddings get gradients (the model's weights are frozen);
        for causal LMs the cached prefix is a constant and only the suffix is back-propagated.
        """
        backend = self.backend
        device = backend.device
        trig_ids = torch.tensor(list(triggers), device=device)
        gold = batch.gold.to(device)
        grad = torch.zeros(len(trig_ids), backend.input_embeddings().shape[1])
        total = 0.0

        def run(start: int, end: int) -> None:
            nonlocal total
            b = torch.arange(start, end, device=device)
            trig = backend.embed(trig_ids).detach().clone().requires_grad_(True)  # [P, d]
            scores = self._forward(batch, b, trig_ids[None, :].expand(len(b), -1), trig)
            loss = self._row_loss(scores, gold[b], batch.columns).sum() / len(batch)
            (g,) = torch.autograd.grad(loss, trig)
            grad.add_(g.float().cpu())
            total += float(loss.detach())

        with torch.enable_grad():
            self._in_chunks((batch.suffix_len.cpu() + self.ext).tolist(), run, backward=True)
        return grad, total


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator (or CPU allocator) out-of-memory error."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, (oom, torch.cuda.OutOfMemoryError)) or "out of memory" in str(exc)
