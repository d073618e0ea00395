"""One prompt design (template + verbalizer + few-shot framing) scored on a backend.

:class:`PromptScorer` resolves the design's targets and hands the work to the one engine
(:class:`~autoprompt_search.scoring.engine.Scorer`): batched and length-sorted, logits only at
the predict position, and for causal LMs a prefix shared by every prompt (instruction,
demonstrations) run once and its key/value states reused. The class score is the log of the
summed probability of the class's label words (log-sum-exp of their log-probabilities).

The naive path -- one example and one label word at a time, full recompute, full-vocabulary
logits at every position -- is kept as the reference that tests and benchmarks compare against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.data import Example
from ..core.tasks import Task
from ..core.templates import Template
from ..models.base import LMBackend
from ..models.encoding import EncodedPrompt, FewShot
from .engine import PrefixMode, Scorer
from .sequence import ScoringRule, needs_sequence, refuse_whole_sequence, scoring_rule
from .targets import LabelWords, Targets, resolve_label_words, resolve_targets

__all__ = ["LabelWords", "PromptScorer", "ScoringRule", "resolve_label_words"]


class PromptScorer:
    """Scores one prompt design (template + verbalizer + few-shot framing) on a backend.

    ``rule`` is how class scores are read (:class:`~.sequence.ScoringRule`); a causal LM
    scores a template with text after [P] on the whole filled-in text (:mod:`.sequence`).
    ``label_words`` is None for an open-vocabulary task, whose targets depend on the examples
    (:meth:`targets`).
    """

    def __init__(self, backend: LMBackend, task: Task, template: str | Template,
                 verbalizer: dict[str, list[str]] | None = None, fewshot: FewShot | None = None,
                 batch_size: int = 32, rule: ScoringRule | str = ScoringRule.DIRECT) -> None:
        self.backend = backend
        self.rule = scoring_rule(rule)
        self.task = task
        parsed = template if isinstance(template, Template) else Template.parse(template, task.fields)
        self.template = backend.encoder.prepare(parsed)
        self.fewshot = fewshot
        self.batch_size = batch_size
        self.verbalizer = verbalizer or task.verbalizer
        self._targets = None if task.is_open_vocabulary else self.targets({})
        self.label_words = None if self._targets is None else self._targets.words
        self.demo_labels = [] if self._targets is None else self._targets.demo_labels

    def targets(self, splits: dict[str, list[Example]], restrict_vocab: bool = True) -> Targets:
        """The classes ``splits`` are ranked among, with each split's examples and gold classes."""
        return resolve_targets(self.backend, self.template, self.task, self.verbalizer, splits,
                               restrict_vocab)

    def engine(self, words: LabelWords | None = None, *, prefix: PrefixMode = PrefixMode.SHARED,
               forward_batch: int | None = None, forward_tokens: int | None = None) -> Scorer:
        """The engine for this design and ``words`` (default: the label words); fixed prompts
        share one cached prefix, passes hold ``batch_size`` prompts."""
        return Scorer(self.backend, self.template, words or self.label_words,
                      fewshot=self.fewshot, demo_labels=self.demo_labels,
                      forward_batch=forward_batch or self.batch_size,
                      forward_tokens=forward_tokens, prefix=prefix, rule=self.rule)

    def check_direct(self, what: str) -> None:
        """Raise a user error if ``what`` needs the label read at [P] and this design is
        scored on whole sequences (channel, or text after [P] on a causal LM)."""
        if needs_sequence(self.backend, self.template, self.rule):
            refuse_whole_sequence(what, self.template, self.rule)

    # --- encoding -----------------------------------------------------------------
    def encode(self, examples: Sequence[Example], triggers: Sequence[int] = ()) -> list[EncodedPrompt]:
        enc = self.backend.encoder
        return [enc.encode(self.template, ex, triggers, self.fewshot, self.demo_labels)
                for ex in examples]

    # --- fast path ----------------------------------------------------------------
    def word_logprobs(self, prompts: Sequence[EncodedPrompt], token_ids: torch.Tensor | None = None,
                      progress: bool = False) -> torch.Tensor:
        """[N, W] log-probs of each label word (or [N, len(token_ids)] of single tokens)."""
        words = self.label_words if token_ids is None else LabelWords.single_tokens(token_ids.tolist())
        engine = self.engine(words)
        prefix, cut = engine.shared_prefix(prompts)
        batch = engine.batch(prompts, None, prefix, [0] * len(prompts), cuts=[cut] * len(prompts))
        return engine.word_logprobs(batch, progress=progress)

    def class_logprobs(self, examples: Sequence[Example], triggers: Sequence[int] = (),
                       progress: bool = False) -> torch.Tensor:
        """[N, C] class log-probabilities (fast path)."""
        engine = self.engine()
        batch = engine.encode(examples, triggers)
        return self.label_words.class_scores(engine.word_logprobs(batch, progress=progress))

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
                seq, steps = self.backend.word_reading(prompt, ids)
                logits = model(input_ids=torch.tensor([seq], device=self.backend.device)).logits[0]
                logp = torch.log_softmax(logits.float(), dim=-1)
                word_logp.append(sum(float(logp[i, t]) for i, t in steps))
            rows.append(word_logp)
        return words.class_scores(torch.tensor(rows))
