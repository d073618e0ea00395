"""The trigger-slot objective: class scores of examples whose [T] slots hold trigger token ids
or continuous vectors, batched, with gradients.

:class:`TriggerObjective` encodes examples once into an :class:`EncodedBatch` (for causal LMs
the tokens before each example's first [T] go into a key/value prefix cache) and then runs
only the rest of each prompt per trigger sequence. The same forward pass serves

* the gradient search (:mod:`autoprompt_search.search.gradient`): candidate trigger ids scored
  in large chunked passes (:meth:`TriggerObjective.losses`, :meth:`~TriggerObjective.class_scores`)
  and the gradient w.r.t. the trigger embeddings (:meth:`~TriggerObjective.gradient`);
* soft prompts and PEZ (:class:`autoprompt_search.scoring.softprompt.SoftScorer`): exact label-word
  log-probabilities with given vectors in the slots, differentiable in the vectors
  (:meth:`TriggerObjective.vector_word_logprobs`).

Label words of several tokens (causal LMs) are scored as whole words; open-vocabulary tasks
rank their candidate objects (one class each, ``columns`` restricting a split's candidates).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..core.data import Example
from ..models.encoding import EncodedPrompt
from ..core.errors import UserError
from ..models.base import LMBackend, PaddedBatch, PrefixCache
from .scorer import LabelWords, PromptScorer

log = logging.getLogger(__name__)

PREFIX_CHUNK = 64  # prompts per prefix-encoding pass


@dataclass
class EncodedBatch:
    """Examples encoded once; the trigger slots are overwritten per candidate.

    For causal LMs the tokens before the first trigger of each example live in a
    key/value cache (``prefix``, row ``prefix_rows[b]`` for example b) and only the
    suffix from the first trigger to [P] is run again per candidate.
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

    def __len__(self) -> int:
        return len(self.gold)

    def select(self, index: Sequence[int]) -> EncodedBatch:
        """The examples ``index`` (sharing this batch's prefix cache)."""
        i = torch.tensor(list(index), dtype=torch.long)
        d = i.to(self.suffix.device)
        return EncodedBatch(self.gold[i], self.prefix, self.prefix_rows[d], self.suffix[d],
                            self.suffix_mask[d], self.suffix_len[d], self.trig_pos[d],
                            self.pred_pos[d], self.columns)


class TriggerObjective:
    """Cross-entropy of the gold class for what fills the [T] slots: trigger ids (batched
    candidate losses, gradients w.r.t. their embeddings) or continuous vectors.

    The classes are ``targets``: the scorer's label words by default, or an
    open-vocabulary task's candidate objects, one class each
    (:func:`~autoprompt_search.search.gradient.search_targets`).
    A class's score is the log-sum-exp of its words' log-probabilities. A label word of
    several tokens (causal LMs) gets a row of its own: the prompt followed by the word's
    tokens but the last, read at [P] and at each appended token; the first of these rows
    also gives every word's first token at [P].

    Forward passes of trigger ids hold at most ``forward_batch`` rows and ``forward_tokens``
    tokens; when one runs out of memory both are halved and the same work is done again.
    Continuous vectors (:meth:`vector_word_logprobs`, :meth:`vector_loss`) get exact
    log-probabilities in one differentiable pass over the batch they are given.
    """

    def __init__(self, scorer: PromptScorer, forward_batch: int = 256,
                 use_prefix_cache: bool = True, forward_tokens: int = 1024,
                 targets: LabelWords | None = None) -> None:
        targets = targets if targets is not None else scorer.label_words
        if targets is None:
            raise UserError(f"'{scorer.task.name}' is an open-vocabulary task: pass its candidate "
                            "objects as targets (see search_targets)")
        if scorer.fewshot is not None:
            raise UserError("gradient search does not support few-shot demonstrations")
        self.scorer = scorer
        self.backend: LMBackend = scorer.backend
        self.targets = targets
        self.forward_batch = forward_batch
        self.forward_tokens = forward_tokens
        self.use_prefix_cache = use_prefix_cache and self.backend.supports_prefix_cache
        device = self.backend.device
        first = targets.first_ids
        whole_vocab = torch.equal(first, torch.arange(self.backend.vocab_size))
        self.label_ids = None if whole_vocab else first.to(device)  # None: every token, in order
        multi = [(w, ids) for w, ids in enumerate(targets.word_ids) if len(ids) > 1]
        if multi and self.backend.kind != "causal":
            raise UserError("a masked LM predicts one token at [P]; use single-token label words")
        self.ext = max((len(ids) - 1 for _, ids in multi), default=0)  # tokens appended after [P]
        self.groups = max(1, len(multi))  # rows per example: one per multi-token word
        appended = torch.full((self.groups, self.ext), self.backend.pad_id, dtype=torch.long)
        queries = []  # (row group, step after [P], token, word) of every continuation token
        for g, (w, ids) in enumerate(multi):
            appended[g, : len(ids) - 1] = torch.tensor(ids[:-1])
            queries += [(g, j, ids[j], w) for j in range(1, len(ids))]
        self._appended = appended.to(device)
        self._appended_len = torch.tensor([len(ids) - 1 for _, ids in multi] or [0], device=device)
        self._queries = torch.tensor(queries, dtype=torch.long, device=device).reshape(-1, 4).T

    # --- encoding ----------------------------------------------------------------------
    def encode(self, examples: Sequence[Example], triggers: Sequence[int],
               columns: torch.Tensor | None = None) -> EncodedBatch:
        """Encode ``examples`` (with any trigger ids: the slots are overwritten later);
        ``columns`` restricts the classes they are ranked among."""
        prompts = self.scorer.encode(examples, list(triggers))
        prefix = self.prefix_cache(prompts) if self.use_prefix_cache else None
        return self.batch(prompts, [ex.label for ex in examples], prefix, columns=columns)

    def prefix_cache(self, prompts: Sequence[EncodedPrompt]) -> PrefixCache | None:
        """Key/value states of each prompt's tokens before its first [T], row n for prompt n
        (causal LMs; None for masked LMs or when a prompt starts with its first [T]).

        The tensors are plain ones (not inference tensors), so autograd may save them when
        gradients flow through the suffix that continues them.
        """
        if not self.backend.supports_prefix_cache or min(p.prefix_len for p in prompts) < 1:
            return None
        return _concat_prefix([self.backend.encode_prefix([p.ids[: p.prefix_len] for p in
                                                           prompts[i : i + PREFIX_CHUNK]])
                               for i in range(0, len(prompts), PREFIX_CHUNK)])

    def batch(self, prompts: Sequence[EncodedPrompt], gold: Sequence[int] | None = None,
              prefix: PrefixCache | None = None, prefix_rows: Sequence[int] | None = None,
              columns: torch.Tensor | None = None) -> EncodedBatch:
        """Encoded prompts as a batch (``gold``: their classes, -1 where unknown).

        With ``prefix`` (:meth:`prefix_cache`), prompt n continues cached row ``prefix_rows[n]``
        (default n) and only its tokens from the first [T] on are run.
        """
        backend = self.backend
        device = backend.device
        cut = [p.prefix_len if prefix is not None else 0 for p in prompts]
        rows = range(len(prompts)) if prefix_rows is None else prefix_rows
        suffix = backend.pad([p.ids[c:] for p, c in zip(prompts, cut)])
        room = (0, self.ext)  # padding columns where multi-token label words are appended
        return EncodedBatch(
            gold=torch.tensor([-1] * len(prompts) if gold is None else list(gold)),
            prefix=prefix,
            prefix_rows=torch.tensor(list(rows), dtype=torch.long, device=device),
            suffix=torch.nn.functional.pad(suffix.input_ids, room, value=backend.pad_id),
            suffix_mask=torch.nn.functional.pad(suffix.attention_mask, room),
            suffix_len=suffix.attention_mask.sum(-1),
            trig_pos=torch.tensor([[t - c for t in p.trigger_pos] for p, c in zip(prompts, cut)],
                                  device=device),
            pred_pos=torch.tensor([p.predict_pos - c for p, c in zip(prompts, cut)], device=device),
            columns=None if columns is None else columns.to(device),
        )

    def _classes(self, scores: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
        """[R, W] word scores -> [R, C] class scores (-inf outside ``columns``)."""
        classes = self.targets.class_scores(scores)
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
                   backward: bool = False) -> None:
        """``run(start, end)`` over consecutive units (examples or example x candidate pairs,
        ``groups`` rows of ``widths[i]`` tokens each), at least one unit per chunk.

        Forward passes take at most ``forward_batch`` rows and ``forward_tokens`` tokens;
        passes with a backward pass ``forward_batch // 4`` rows. A chunk that runs out of
        memory halves both limits and is run again in smaller pieces.
        """
        start = 0
        while start < len(widths):
            end = self._chunk_end(widths, start, backward)
            if self._fits(run, start, end):
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
        self.forward_tokens = max(1, self.forward_tokens // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of memory in a forward pass of %d rows; retrying with --forward-batch "
                    "%d and --forward-tokens %d", (end - start) * self.groups, self.forward_batch,
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

    @torch.inference_mode()
    def class_scores(self, batch: EncodedBatch, triggers: Sequence[int]) -> torch.Tensor:
        """``[B, C]`` class scores (log-softmax over classes) of every example for ``triggers``."""
        device = self.backend.device
        trig = torch.tensor(list(triggers), device=device)
        order = torch.argsort(batch.suffix_len.cpu(), stable=True)
        widths = (batch.suffix_len.cpu()[order] + self.ext).tolist()
        out = torch.empty(len(batch), self.targets.num_classes)

        def run(start: int, end: int) -> None:
            b = order[start:end]
            scores = self._forward(batch, b.to(device), trig[None, :].expand(len(b), -1))
            out[b] = torch.log_softmax(self._classes(scores, batch.columns), -1).cpu()

        self._in_chunks(widths, run)
        return out

    # --- the slow reference -------------------------------------------------------------------
    @torch.inference_mode()
    def naive_losses(self, examples: Sequence[Example], rows: torch.Tensor) -> torch.Tensor:
        """The same losses one candidate, one example and one label word at a time, full
        recompute and full-vocabulary logits at every position (as the original AutoPrompt
        code does); every class is a candidate (no ``columns``)."""
        gold = torch.tensor([ex.label for ex in examples])
        out = []
        for row in rows.tolist():
            classes = self.scorer.naive_class_logprobs(examples, row, self.targets)
            out.append(float(-torch.log_softmax(classes, -1).gather(1, gold[:, None]).mean()))
        return torch.tensor(out)

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


def _concat_prefix(parts: list[PrefixCache]) -> PrefixCache:
    """One prefix cache of new plain tensors from one or several (right-padded to the longest)."""
    width = max(p.mask.shape[1] for p in parts)

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        extra = width - t.shape[dim]
        if not extra:
            return t
        shape = list(t.shape)
        shape[dim] = extra
        return torch.cat([t, t.new_zeros(shape)], dim=dim)

    layers = [(torch.cat([pad(p.layers[i][0], 2) for p in parts]),
               torch.cat([pad(p.layers[i][1], 2) for p in parts]))
              for i in range(len(parts[0].layers))]
    return PrefixCache(layers, torch.cat([pad(p.mask, 1) for p in parts]))
