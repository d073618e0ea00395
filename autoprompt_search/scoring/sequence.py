"""Scoring rules that read a whole filled-in text (causal LMs): full-sequence and channel.

The engine's direct rule reads the label word at [P]: log p(word | the prompt up to [P]).
Two cases need the log-likelihood of more than the word, and are scored here, one row per
(example, target word), in batched forward passes:

* **Full sequence** (the direct rule for a template with text after [P] on a causal LM, as
  lm-evaluation-harness scores a multiple-choice continuation): the sum of the log-probabilities
  of the filled-in text's tokens *from the label word's first token to the end* -- the word and
  everything after it (``[P] News: {text}``: the word, `` News:`` and the article). Tokens before
  [P] are the same for every class and are left out of the sum; when nothing precedes [P] the
  text is read after the beginning-of-text token (:meth:`LMBackend.start_id`), as lm-eval reads
  a continuation with an empty context. With only punctuation after [P] the template keeps
  the word-only reading (:meth:`Template.for_causal` drops the punctuation), so published scores
  do not change; with nothing after [P] the two readings are the same number.
* **Channel** (:attr:`ScoringRule.CHANNEL`, Min et al. 2022, "Noisy Channel Language Model
  Prompting for Few-Shot Text Classification"): log p(input | label word, prompt). The channel
  template (:meth:`Template.for_channel`) moves the input span -- first ``{field}`` to last,
  with what lies between -- after everything else, the [P] word included
  (``{sentence} It was [P] .`` -> ``It was great . {sentence}``); the score is the summed
  log-probability of the input span's tokens. Demonstrations are written in the same
  channel form.

A class's score is the log-sum-exp of its words' scores, as for the direct rule.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch

from ..core.data import Example
from ..core.errors import UserError
from ..core.templates import Template
from ..models.base import LMBackend
from ..models.encoding import FewShot
from .targets import LabelWords

MAX_SEQUENCE_WORDS = 100  # rows per example; open-vocabulary candidate lists are far longer
SCORED_TOKENS = 512  # scored positions per forward pass (their full-vocabulary log-softmax)


class ScoringRule(str, enum.Enum):
    """How a prompt's class scores are read from the LM."""

    DIRECT = "direct"  # p(label word | prompt), or the filled text from [P] on (text after [P])
    CHANNEL = "channel"  # p(input | label word, prompt): the input scored after the label


def scoring_rule(value: str | ScoringRule) -> ScoringRule:
    """``value`` as a rule; a user error naming the choices otherwise."""
    try:
        return ScoringRule(value)
    except ValueError:
        raise UserError(f"unknown scoring rule {value!r}; choose one of "
                        f"{', '.join(r.value for r in ScoringRule)}") from None


def needs_sequence(backend: LMBackend, template: Template, rule: ScoringRule) -> bool:
    """Whether ``rule`` on ``template`` (prepared for ``backend``) reads whole sequences."""
    if rule is ScoringRule.CHANNEL:
        return True
    return backend.reads_left_to_right and template.text_after_predict


def refuse_whole_sequence(what: str, template: Template, rule: ScoringRule) -> None:
    """The user error for ``what``, which reads the label word at [P], meeting a whole-sequence
    rule (channel scoring, or ``template``'s text after [P] on a causal LM)."""
    why = "--scoring channel" if rule is ScoringRule.CHANNEL else \
        f"the template {template.source!r} (text after [P])"
    raise UserError(f"{what}: it reads the label word at [P] only, but {why} is scored "
                    "on whole sequences; use --scoring direct with a template that ends "
                    "with [P], or the black-box search (--strategy optuna)")


class SequenceScorer:
    """Full-sequence or channel log-likelihoods of ``words`` (see the module docstring)."""

    def __init__(self, backend: LMBackend, template: Template, words: LabelWords,
                 rule: ScoringRule = ScoringRule.DIRECT, *, fewshot: FewShot | None = None,
                 demo_labels: Sequence[str] = (), forward_batch: int = 256) -> None:
        rule = scoring_rule(rule)
        what = "channel scoring" if rule is ScoringRule.CHANNEL else "text after [P]"
        if not backend.reads_left_to_right:
            raise UserError(f"{what} needs a causal LM; {backend.name} is a masked LM "
                            "(use --scoring direct)")
        self.what = what
        self.backend = backend
        self.rule = rule
        self.words = words
        self.fewshot = fewshot
        self.demo_labels = list(demo_labels)
        self.forward_batch = forward_batch
        if rule is ScoringRule.CHANNEL:
            # from the full template: punctuation a causal LM drops after [P] is read here
            self.template, self.score_from = Template.parse(template.source).for_channel()
        else:
            self.template, self.score_from = template, template.predict_index

    def rows(self, example: Example, triggers: Sequence[int] = ()) -> list[tuple[tuple[int, ...], int]]:
        """(token ids, index of the first scored token) of ``example`` with each target word."""
        enc = self.backend.encoder
        out = []
        for word in self.words.word_ids:
            ids, start = enc.encode_filled(self.template, example, word, triggers, self.fewshot,
                                           self.demo_labels, self.score_from)
            if start == 0:  # nothing to read the first token after: the start token
                ids, start = (self.backend.start_id(), *ids), 1
            if start >= len(ids):
                raise UserError(f"template {self.template.source!r} leaves nothing to score "
                                f"for example {example.id!r}")
            out.append((ids, start))
        return out

    @torch.inference_mode()
    def word_logprobs(self, examples: Sequence[Example], triggers: Sequence[int] = ()) -> torch.Tensor:
        """``[N, W]`` summed log-probabilities of each example's scored tokens, per word."""
        if len(self.words.word_ids) > MAX_SEQUENCE_WORDS:
            raise UserError(f"{self.what} scores one text per target word and this task ranks "
                            f"{len(self.words.word_ids)} (more than {MAX_SEQUENCE_WORDS}); use a "
                            "template that ends with [P] and --scoring direct")
        if not examples:
            return torch.empty(0, len(self.words.word_ids))
        rows = [r for ex in examples for r in self.rows(ex, triggers)]
        n_words = len(self.words.word_ids)
        # full-sequence rows of one example share every token before the word: run them once
        share = n_words if (self.rule is ScoringRule.DIRECT and n_words > 1
                            and min(s for _, s in rows) > 1) else 1
        out = torch.empty(len(rows), dtype=torch.float64)
        units = sorted(range(len(rows) // share), key=lambda u: len(rows[u * share][0]))
        scored = [max(len(ids) - s for ids, s in rows[u * share:(u + 1) * share])
                  for u in range(len(rows) // share)]
        start = 0
        while start < len(units):
            end, width = start + 1, scored[units[start]]
            while end < len(units) and (end + 1 - start) * share <= self.forward_batch and (
                    end + 1 - start) * share * max(width, scored[units[end]]) <= SCORED_TOKENS:
                end, width = end + 1, max(width, scored[units[end]])
            idx = [u * share + g for u in units[start:end] for g in range(share)]
            out[idx] = self._score([rows[i] for i in idx], share if share > 1 else 0).double()
            start = end
        return out.view(len(examples), n_words).float()

    def _score(self, rows: Sequence[tuple[tuple[int, ...], int]], share: int = 0) -> torch.Tensor:
        """Summed log-probabilities of tokens ``ids[start:]`` of each (ids, start) row; with
        ``share``, each run of ``share`` rows has the same tokens before ``start - 1`` and they
        are run once (a prefix cache) for the run."""
        backend = self.backend
        device = backend.device
        kw = {}
        if share:
            prefixes = [ids[: s - 1] for ids, s in rows[::share]]
            kw = {"prefix": backend.encode_prefix(prefixes),
                  "prefix_rows": torch.arange(len(rows), device=device) // share}
            rows = [(ids[s - 1:], 1) for ids, s in rows]
        batch = backend.pad([ids for ids, _ in rows])
        n_scored = max(len(ids) - s for ids, s in rows)
        steps = torch.arange(n_scored, device=device)[None, :]
        starts = torch.tensor([s for _, s in rows], device=device)[:, None]
        lengths = torch.tensor([len(ids) for ids, _ in rows], device=device)[:, None]
        valid = starts + steps < lengths  # [R, K]
        last = batch.input_ids.shape[1] - 1
        read = (starts - 1 + steps).clamp(max=last)  # the output at ``read`` predicts read + 1
        target = batch.input_ids.gather(1, (read + 1).clamp(max=last))
        logp = torch.log_softmax(backend.head(backend.hidden_at(batch, read, **kw)).float(), -1)
        picked = logp.gather(-1, target[..., None])[..., 0]
        return picked.masked_fill(~valid, 0.0).sum(-1).cpu()


@torch.inference_mode()
def naive_sequence_logprobs(scorer: SequenceScorer, examples: Sequence[Example],
                            triggers: Sequence[int] = ()) -> torch.Tensor:
    """The reference: one row at a time, full-vocabulary logits at every position, a loop."""
    model = scorer.backend.model
    out = []
    for ex in examples:
        row = []
        for ids, start in scorer.rows(ex, triggers):
            logits = model(input_ids=torch.tensor([ids], device=scorer.backend.device)).logits[0]
            logp = torch.log_softmax(logits.float(), -1)
            row.append(sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids))))
        out.append(row)
    return torch.tensor(out)
