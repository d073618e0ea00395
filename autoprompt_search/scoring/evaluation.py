"""Evaluate a prompt on a task split: one path from class scores to metrics and loss.

:func:`evaluation_from_scores` turns class scores, gold classes and the targets into an
:class:`Evaluation` (classification metrics, or fact-retrieval ranks for open-vocabulary
tasks, and the mean cross-entropy); ``evaluate``, ``compare``, ``project``, every strategy's
dev scoring and the Ray workers go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.data import Example
from ..core.errors import UserError
from ..core.sampling import stratified_sample
from ..core.tasks import Task
from ..models.base import LMBackend
from ..models.encoding import FewShot
from .calibration import Calibration, CalibrationRecord, resolve_calibration
from .scorer import PromptScorer
from .sequence import ScoringRule
from .targets import LabelWordTargets, Targets
from .targets import object_token_ids as _object_token_ids
from .targets import retrieval_candidates as _retrieval_candidates

EVALUATION_FORMAT = "autoprompt-search/evaluation"


@dataclass
class Evaluation:
    """Metrics of one prompt on one split, with per-example results for paired tests."""

    prompt: str
    split: str
    metrics: dict
    predictions: list[int]
    gold: list[int]
    scores: list[list[float]] | None = None
    loss: float | None = None  # mean cross-entropy of the gold class among the classes
    calibration: CalibrationRecord | None = None  # offsets the scores were calibrated with

    @property
    def correct(self) -> np.ndarray:
        return np.asarray(self.predictions) == np.asarray(self.gold)

    def to_dict(self, with_examples: bool = False) -> dict:
        d = {"prompt": self.prompt, "split": self.split, **self.metrics}
        if with_examples:
            d.update(predictions=self.predictions, gold=self.gold)
        return d

    def to_json(self) -> dict[str, Any]:
        """Everything, per-example predictions and scores included (:meth:`from_json` reads it)."""
        return {"format": EVALUATION_FORMAT, "prompt": self.prompt, "split": self.split,
                "metrics": self.metrics, "predictions": self.predictions, "gold": self.gold,
                "scores": self.scores, "loss": self.loss,
                "calibration": None if self.calibration is None else self.calibration.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any], split: str | None = None) -> Evaluation:
        """An evaluation saved by :meth:`to_json` (or by an older cache without the format)."""
        return cls(data["prompt"], data.get("split", split), data["metrics"],
                   list(data["predictions"]), list(data["gold"]), data.get("scores"),
                   data.get("loss"), CalibrationRecord.from_json(data.get("calibration")))


def evaluation_from_scores(prompt: str, split: str, scores: torch.Tensor, gold: Sequence[int],
                           targets: Targets | Sequence[str],
                           calibration: CalibrationRecord | None = None) -> Evaluation:
    """The evaluation of class scores ``[N, C]`` against gold classes ``[N]``.

    ``targets`` says which metrics apply (a task's labels: classification); the loss is the
    mean cross-entropy of the gold class with the scores renormalised over the classes.
    With ``calibration`` the scores first have its offsets subtracted (predictions, metrics,
    loss and the kept scores are all calibrated ones).
    """
    if not isinstance(targets, Targets):
        targets = LabelWordTargets(None, {}, {}, {}, [], labels=list(targets))
    scores = scores.detach().float().cpu()
    if calibration is not None:
        scores = calibration.apply(scores)
    gold_arr = np.asarray(gold, dtype=np.int64)
    pred = scores.argmax(-1).numpy()
    metrics = targets.metrics(scores, gold_arr, split)
    loss = float(torch.nn.functional.cross_entropy(scores, torch.as_tensor(gold_arr))) \
        if len(gold_arr) else float("nan")
    return Evaluation(prompt, split, metrics, targets.predictions(pred),
                      targets.predictions(gold_arr),
                      scores.tolist() if targets.keeps_scores else None, loss,
                      calibration if calibration is not None and calibration.active else None)


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
    rule: ScoringRule | str = ScoringRule.DIRECT,
    limit_seed: int = 0,
    calibration: Calibration | str | CalibrationRecord | None = None,
    premise: str | None = None,
) -> Evaluation:
    """Score ``template`` on ``split`` of ``task``; return metrics and per-example results.

    ``triggers`` fills the template's [T] slots with token ids. For open-vocabulary
    tasks (LAMA) the gold object is ranked among the candidate vocabulary (the task's
    ``candidate_vocab`` when ``restrict_vocab``, else the whole vocabulary); examples whose
    object is several tokens are left out. ``limit`` scores a seeded class-stratified sample
    of that many examples (:func:`~autoprompt_search.core.sampling.stratified_sample`, seed
    ``limit_seed``); ``rule`` is the scoring rule (:class:`~.sequence.ScoringRule`).
    ``calibration`` is a mode (offsets estimated for this prompt under ``rule``,
    :func:`~autoprompt_search.scoring.calibration.estimate_calibration`) or a stored record
    (its offsets used as they are); ``premise`` is the ``pmi`` premise.
    """
    examples = stratified_sample(task.examples(split), limit, limit_seed)
    scorer = PromptScorer(backend, task, template, verbalizer, fewshot, batch_size, rule)
    return evaluate_examples(scorer, examples, triggers, split, progress=progress,
                             restrict_vocab=restrict_vocab, calibration=calibration,
                             premise=premise)


def evaluate_examples(scorer: PromptScorer, examples: Sequence[Example], triggers: Sequence[int] = (),
                      split: str = "test", *, progress: bool = False,
                      restrict_vocab: bool = True,
                      calibration: Calibration | str | CalibrationRecord | None = None,
                      premise: str | None = None) -> Evaluation:
    """Metrics and per-example results of ``scorer``'s prompt design on ``examples``
    (``calibration``: a mode to estimate or a record to apply, as in :func:`evaluate_prompt`)."""
    record = resolve_calibration(calibration, scorer, triggers, premise)
    targets = scorer.targets({split: list(examples)}, restrict_vocab)
    kept = targets.examples[split]
    engine = scorer.engine(targets.words)
    batch = engine.encode(kept, triggers, gold=[ex.label for ex in kept])
    scores = targets.words.class_scores(engine.word_logprobs(batch, progress=progress))
    return evaluation_from_scores(scorer.template.source, split, scores, batch.gold.tolist(),
                                  targets, record)


def ensemble_scores(calibrated: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``[N, C]`` class scores of an ensemble: the weighted sum of its members' calibrated class
    scores, each renormalised over the classes (log-softmax)."""
    out = torch.zeros(calibrated[0].shape, dtype=torch.float64)
    for scores, weight in zip(calibrated, weights):
        out += float(weight) * torch.log_softmax(torch.as_tensor(scores).double(), -1)
    return out.float()


def evaluate_ensemble(backend: LMBackend, spec, split: str = "test", *, batch_size: int = 32,
                      limit: int | None = None, limit_seed: int = 0, progress: bool = False,
                      calibration: Calibration | str | None = None, premise: str | None = None,
                      scoring: str | None = None) -> Evaluation:
    """Score an ensemble spec (:class:`~autoprompt_search.scoring.specs.PromptSpec` with
    ``ensemble`` members) as one predictor: each member on the same examples (``limit``: the
    same stratified sample as :func:`evaluate_prompt`) under its own scoring rule (``scoring``
    overrides it) with its stored calibration, then :func:`ensemble_scores`."""
    from .specs import spec_calibration

    scores, gold = [], None
    for member, _ in spec.ensemble:
        ev = evaluate_prompt(backend, member.task, member.template, split, verbalizer=member.verbalizer,
                             triggers=member.triggers, fewshot=member.fewshot, batch_size=batch_size,
                             limit=limit, limit_seed=limit_seed, progress=progress,
                             rule=scoring or member.scoring,
                             calibration=spec_calibration(member, calibration, scoring),
                             premise=premise)
        if gold is not None and ev.gold != gold:
            raise UserError("the ensemble's members were scored on different examples")
        gold = ev.gold
        scores.append(torch.tensor(ev.scores))
    combined = ensemble_scores(scores, [w for _, w in spec.ensemble])
    return evaluation_from_scores(spec.name or spec.template, split, combined, gold,
                                  list(spec.task.labels))


def object_token_ids(backend: LMBackend, scorer, words: Sequence[str]) -> dict[str, int]:
    """Single-token ids of object words at the scorer's [P] (multi-token words are left out)."""
    return _object_token_ids(backend, scorer.template, words)


def retrieval_candidates(scorer, examples: Sequence,
                         restrict_vocab: bool = True) -> tuple[list[int], dict[str, int]]:
    """(candidate token ids, gold object -> token id) of ``examples`` for the scorer's template
    (:func:`autoprompt_search.scoring.targets.retrieval_candidates`)."""
    return _retrieval_candidates(scorer.backend, scorer.template, scorer.task, examples,
                                 restrict_vocab)
