"""Calibrated class scores: the label prior divided out, estimated once, stored with the prompt.

A small model's class scores are dominated by its prior over the label words (SmolLM2 answers
" great" to nearly every review). Each mode estimates one offset per class, in log space, and
the decision rule becomes

    predict argmax_c  log p(c | x) - offset_c

where ``log p(c | x)`` is the class score the engine gives (the log-sum-exp of the class's
label-word log-probabilities) and ``offset_c = log p_prior(c)`` with ``p_prior`` a distribution
over the classes (normalised to sum to one, so the offsets only shift classes against each
other). The modes differ in where ``p_prior`` comes from:

* ``content-free`` (Zhao et al. 2021, "Calibrate before use"): the prompt (template, triggers,
  demonstrations) with every text field filled with a content-free input -- ``N/A``, the empty
  string and the mask token (the literal ``[MASK]`` for a tokenizer without one, as Zhao et al.
  did for GPT models); the mean of their class distributions (softmax over the classes).
  Cost: 3 forward passes per prompt.
* ``train-prior``: the mean predicted class distribution over the training inputs (labels
  unused). Cost: one forward pass per training example (at most ``MAX_PRIOR_EXAMPLES``).
* ``pmi`` (domain-conditional PMI, Holtzman et al. 2021): the label words' probability after a
  short domain premise alone (default ``Answer:``, read as the template ``"Answer: [P]"`` with
  no demonstrations). The offset is per *class*: ``log sum_{w in c} p(w | premise)``, i.e.
  the class's probability under the premise, subtracted after the class log-sum-exp. With one
  word per class this is exactly Holtzman et al.'s per-word rule; with several words a class
  keeps the same shape as its uncalibrated score (a sum of probabilities) and the record stays
  one offset per class, so every mode has the same decision rule. Cost: 1 forward pass.

Scoring rules (:mod:`.sequence`): offsets are estimated through the prompt's own engine, so
under its rule. With ``--scoring channel`` a class score is log p(input | label word, prompt):
``content-free`` scores the content-free inputs that have tokens (``N/A`` and the mask token;
the empty string has none to score) and ``train-prior`` the training inputs, both under the
channel rule; ``pmi`` is refused (the channel score has no label-word prior to divide out).
A causal LM's template with text after [P] (the full-sequence reading) keeps all three modes;
``pmi``'s offset is then the label word's prior after the premise, as for any other template.

:func:`estimate_calibration` is the one place offsets are estimated (``evaluate``, ``compare``,
``export`` via the record, every search strategy's dev/train scoring, the black-box workers);
:func:`apply_offsets` the one place they are applied. A :class:`CalibrationRecord` is stored
in ``result.json`` so a prompt is re-scored with its own offsets, never re-estimated ones.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..core.data import Example
from ..core.errors import UserError
from ..core.templates import Template
from .sequence import ScoringRule, scoring_rule
from .targets import predict_space

if TYPE_CHECKING:
    from .scorer import PromptScorer

DEFAULT_PREMISE = "Answer:"
MAX_PRIOR_EXAMPLES = 512  # train-prior: at most this many training inputs (evenly spaced)
CALIBRATION_FORMAT = "autoprompt-search/calibration"
CLASS_SCORE = {  # what log p(c|x) is under each scoring rule, in words
    ScoringRule.DIRECT.value: "log of the summed probability of c's label words",
    ScoringRule.CHANNEL.value: "log of the summed probability of the input given each of c's "
                               "label words (noisy channel), normalised over the classes",
}
CHANNEL_PMI = ("--calibration pmi does not apply to --scoring channel: pmi divides out the label "
               "words' probability after a premise, and a channel score, p(input | label word), "
               "has no such prior; use --calibration content-free or train-prior")


class Calibration(str, enum.Enum):
    """How class scores are calibrated (see the module docstring)."""

    NONE = "none"
    CONTENT_FREE = "content-free"
    TRAIN_PRIOR = "train-prior"
    PMI = "pmi"

    @classmethod
    def parse(cls, value: str | Calibration) -> Calibration:
        """The mode named ``value``; a user error naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            choices = "|".join(m.value for m in cls)
            raise UserError(f"unknown calibration {value!r} ({choices})") from None


@dataclass
class CalibrationRecord:
    """A calibration as estimated for one prompt: its mode, one log-space offset per class
    (subtracted from the class scores) and what the offsets were estimated from."""

    mode: Calibration
    offsets: list[float] = field(default_factory=list)  # log p_prior(c), one per class
    labels: list[str] = field(default_factory=list)  # the classes, in offset order
    source: str = ""  # what the prior was estimated from, in words
    inputs: list[str] = field(default_factory=list)  # content-free inputs / the premise
    n: int = 0  # forward passes (prompts scored) behind the estimate
    scoring: str = ScoringRule.DIRECT.value  # the scoring rule the offsets were estimated under

    def __post_init__(self) -> None:
        self.mode = Calibration.parse(self.mode)
        self.scoring = scoring_rule(self.scoring).value
        if self.mode is not Calibration.NONE and len(self.offsets) != len(self.labels):
            raise UserError(f"calibration record: {len(self.offsets)} offsets for "
                            f"{len(self.labels)} classes")

    @property
    def active(self) -> bool:
        return self.mode is not Calibration.NONE

    def apply(self, class_scores: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` class scores with this record's offsets subtracted."""
        if not self.active:
            return class_scores
        return apply_offsets(class_scores, torch.tensor(self.offsets))

    def decision_rule(self) -> str:
        """The rule a user of the exported prompt must apply, in words."""
        score = CLASS_SCORE[self.scoring]
        if not self.active:
            return f"predict argmax_c log p(c|x), log p(c|x) = {score}"
        offsets = ", ".join(f"{label} {o:.6f}" for label, o in zip(self.labels, self.offsets))
        return (f"predict argmax_c log p(c|x) - offset_c, log p(c|x) = {score}; calibration "
                f"{self.mode.value} ({self.source}); offsets: {offsets}")

    def to_json(self) -> dict[str, Any]:
        return {"format": CALIBRATION_FORMAT, "mode": self.mode.value, "offsets": list(self.offsets),
                "labels": list(self.labels), "source": self.source, "inputs": list(self.inputs),
                "n": self.n, "rule": self.decision_rule(),
                # records of the direct rule are written as before the rules existed
                **({"scoring": self.scoring} if self.scoring != ScoringRule.DIRECT.value else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> CalibrationRecord | None:
        """A record written by :meth:`to_json` (None stays None)."""
        if data is None:
            return None
        if not isinstance(data, dict) or "mode" not in data:
            raise UserError("calibration record: expected a mapping with a 'mode'")
        return cls(data["mode"], [float(o) for o in data.get("offsets", [])],
                   list(data.get("labels", [])), data.get("source", ""),
                   list(data.get("inputs", [])), int(data.get("n", 0)),
                   data.get("scoring", ScoringRule.DIRECT.value))


# --- pure functions on class scores --------------------------------------------------------
def apply_offsets(class_scores: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` scores minus ``[C]`` log-space offsets (class ``c`` is scored
    ``log p(c|x) - offsets[c]``); -inf stays -inf."""
    return class_scores - offsets.to(class_scores.device, class_scores.dtype)[None, :]


def prior_offsets(class_scores: torch.Tensor) -> torch.Tensor:
    """``[C]`` log of the mean class distribution of ``[M, C]`` class scores: each row
    softmaxed over the classes, averaged over rows (a normalised distribution)."""
    if class_scores.ndim != 2 or not len(class_scores):
        raise ValueError("prior_offsets needs [M, C] scores with M >= 1")
    mean = torch.softmax(class_scores.double(), -1).mean(0)
    return torch.log(mean).float()


def normalised_offsets(class_scores: torch.Tensor) -> torch.Tensor:
    """``[C]`` log of one row of class log-probabilities renormalised over the classes
    (``[C]`` or ``[1, C]``)."""
    return torch.log_softmax(class_scores.reshape(-1).double(), -1).float()


# --- estimators (through the one engine) ----------------------------------------------------
def content_free_inputs(scorer: PromptScorer) -> list[str]:
    """``N/A``, the empty string and the tokenizer's mask token (else the literal ``[MASK]``)."""
    mask = getattr(scorer.backend.tokenizer, "mask_token", None) or "[MASK]"
    return ["N/A", "", str(mask)]


def _class_logprobs(scorer: PromptScorer, examples: Sequence[Example],
                    triggers: Sequence[int]) -> torch.Tensor:
    """[N, C] class scores of ``examples`` through the engine (no gold needed)."""
    engine = scorer.engine()
    batch = engine.encode(list(examples), list(triggers), gold=[-1] * len(examples))
    return scorer.label_words.class_scores(engine.word_logprobs(batch)).float()


def estimate_calibration(mode: Calibration | str, scorer: PromptScorer,
                         triggers: Sequence[int] = (), *, premise: str = DEFAULT_PREMISE,
                         train: Sequence[Example] | None = None,
                         score: Callable[[list[Example]], torch.Tensor] | None = None,
                         ) -> CalibrationRecord:
    """The calibration ``mode`` of ``scorer``'s prompt with ``triggers`` in its [T] slots.

    ``train`` replaces the task's training inputs for ``train-prior``; ``premise`` is the
    domain premise of ``pmi``; ``score`` replaces how the prompt's ``[N, C]`` class scores of
    examples are computed (soft prompts: vectors in the slots; default: the engine with
    ``triggers``).
    """
    mode = Calibration.parse(mode)
    if mode is Calibration.NONE:
        return CalibrationRecord(Calibration.NONE)
    if scorer.label_words is None:
        raise UserError(f"calibration {mode.value} applies to classification tasks; task "
                        f"'{scorer.task.name}' ranks an open vocabulary")
    rule = scoring_rule(getattr(scorer, "rule", ScoringRule.DIRECT)).value
    channel = rule == ScoringRule.CHANNEL.value
    if channel and mode is Calibration.PMI:
        raise UserError(CHANNEL_PMI)
    labels = list(scorer.task.labels)
    fields = list(scorer.template.field_names)
    if score is None:
        def score(examples: list[Example]) -> torch.Tensor:
            return _class_logprobs(scorer, examples, triggers)

    if mode is Calibration.CONTENT_FREE:
        inputs = content_free_inputs(scorer)
        if channel:  # the channel rule scores the input's tokens: the empty input has none
            inputs = [text for text in inputs if text]
        examples = [Example({f: text for f in fields}, -1, id=-1 - i) for i, text in enumerate(inputs)]
        offsets = prior_offsets(score(examples).detach().float().cpu())
        return CalibrationRecord(mode, offsets.tolist(), labels,
                                 "mean class distribution of the prompt with content-free inputs",
                                 inputs, len(examples), rule)
    if mode is Calibration.TRAIN_PRIOR:
        examples = list(scorer.task.examples("train") if train is None else train)
        if not examples:
            raise UserError(f"calibration train-prior: task '{scorer.task.name}' has no training inputs")
        if len(examples) > MAX_PRIOR_EXAMPLES:
            step = len(examples) / MAX_PRIOR_EXAMPLES
            examples = [examples[math.floor(i * step)] for i in range(MAX_PRIOR_EXAMPLES)]
        offsets = prior_offsets(score(examples).detach().float().cpu())
        return CalibrationRecord(mode, offsets.tolist(), labels,
                                 f"mean class distribution over {len(examples)} training inputs "
                                 "(labels unused)", [], len(examples), rule)
    return _pmi(scorer, premise, labels)


def _pmi(scorer: PromptScorer, premise: str, labels: list[str]) -> CalibrationRecord:
    from .scorer import PromptScorer

    if not premise.strip():
        raise UserError("calibration pmi: the domain premise is empty; pass e.g. 'Answer:'")
    space = " " if predict_space(scorer.template) else ""
    source = premise.rstrip() + space + "[P]"
    try:
        template = Template.parse(source, [])
    except UserError as exc:
        raise UserError(f"calibration pmi: premise {premise!r}: {exc}") from None
    if template.field_names or template.num_triggers:
        raise UserError(f"calibration pmi: the premise {premise!r} must be plain text")
    premised = PromptScorer(scorer.backend, scorer.task, template, scorer.verbalizer, None,
                            scorer.batch_size)
    scores = _class_logprobs(premised, [Example({}, -1, id=-1)], [])
    return CalibrationRecord(Calibration.PMI, normalised_offsets(scores[0]).tolist(), labels,
                             f"label words' probability after the domain premise {premise!r}",
                             [premise], 1)


def resolve_calibration(calibration: Calibration | str | CalibrationRecord | None,
                        scorer: PromptScorer, triggers: Sequence[int] = (),
                        premise: str | None = None) -> CalibrationRecord | None:
    """The record to score ``scorer``'s prompt with: a stored record as it is (never
    re-estimated), a mode estimated now for ``triggers``, None for no calibration."""
    if calibration is None or isinstance(calibration, CalibrationRecord):
        return calibration if calibration is None or calibration.active else None
    mode = Calibration.parse(calibration)
    if mode is Calibration.NONE:
        return None
    return estimate_calibration(mode, scorer, triggers, premise=premise or DEFAULT_PREMISE)
