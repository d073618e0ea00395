"""Gradient-guided trigger search (AutoPrompt; GCG-style candidate sets) for masked and causal LMs.

One iteration:

1. forward + backward on a batch of training examples to get the gradient of the
   loss with respect to the trigger embeddings (only those get gradients, never
   the model's weights);
2. top-k candidate tokens per trigger position by the first-order estimate
   ``-(e_w . g_j)`` among the allowed tokens (:mod:`autoprompt_search.core.tokens`);
3. candidate trigger sequences (one position changed: a random one, the next one
   in turn, or GCG's mix of positions), minus those whose text does not
   re-tokenise to the same ids, scored together with the current triggers on the
   batch in large batched forward passes (causal LMs reuse the key/value states of
   each example's prefix before the first trigger; logits only at [P], only for
   the label words when they are single tokens);
4. keep the best if it lowers the loss; evaluate on dev when the triggers changed.

The result is the prompt with the best dev accuracy seen (ties: lower dev loss).
The loss is the cross-entropy of the gold class among the class scores
(log-sum-exp of the label words' log-probabilities; causal LMs score label words of
several tokens as whole words). For an open-vocabulary task (LAMA) each candidate
object token is a class, as in ``evaluate_prompt``, so the dev accuracy is precision@1.
Forward passes that run out of memory are retried with half the batch. The objective
(encoding, prefix cache, batched scoring, gradients) is :mod:`autoprompt_search.scoring.objective`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..core.config import parse_choice
from ..core.data import Example
from ..core.errors import UserError
from ..core.results import PromptResult
from ..core.templates import Field, Predict, Template, Text, Trigger
from ..core.tokens import (
    allowed_token_mask,
    gcg_candidates,
    render_prompt,
    retokenize_mask,
    retokenizes,
    single_position_candidates,
    token_texts,
    top_candidates,
    unique_changed,
)
from ..models.base import LMBackend
from ..scoring.calibration import Calibration, CalibrationRecord, estimate_calibration
from ..scoring.evaluation import evaluation_from_scores
from ..scoring.objective import EncodedBatch, TriggerObjective  # bench/ imports TriggerObjective from here
from ..scoring.scorer import PromptScorer
from ..scoring.targets import Targets
from .base import Score, SearchConfig, SearchContext, Searcher, SearchState, strategies


class Position(str, enum.Enum):
    """Which trigger positions a step changes."""

    random = "random"
    cycle = "cycle"
    gcg = "gcg"


class GradientInit(str, enum.Enum):
    """The initial triggers."""

    neutral = "neutral"
    random = "random"
    human = "human"


@dataclass
class GradientConfig(SearchConfig):
    num_triggers: int = field(default=5, metadata={
        "help": "Trigger slots when no --template is given (template: '{field} [T]... [P]')."})
    k: int = field(default=32, metadata={"help": "Candidate tokens per trigger position (top-k)."})
    position: Position = field(default=Position.random, metadata={
        "help": "Which positions change: random (AutoPrompt: one random position), cycle (each "
                "position in turn) or gcg (candidates mixing all positions)."})
    num_candidates: int = field(default=0, metadata={
        "help": "Candidates per iteration for position=gcg (0: k)."})
    iterations: int = field(default=50, metadata={"help": "Iteration budget.", "resumable": True})
    batch_size: int = field(default=32, metadata={
        "help": "Training examples per iteration (all of them if the split is smaller)."})
    accumulation_steps: int = field(default=1, metadata={
        "help": "Training batches whose gradients are summed per iteration."})
    forward_batch: int = field(default=256, metadata={
        "help": "At most this many rows (candidate x example, times the number of multi-token "
                "label words if any) per forward pass; halved on out-of-memory."})
    forward_tokens: int = field(default=1024, metadata={
        "help": "At most this many tokens (rows x padded width) per forward pass; smaller "
                "passes use the CPU cache better; halved on out-of-memory."})
    eval_batch_size: int = field(default=64, metadata={"help": "Examples per forward pass on dev."})
    init: GradientInit = field(default=GradientInit.neutral, metadata={
        "help": "Initial triggers: neutral ([MASK] for masked LMs, else --init-word), random "
                "(allowed tokens) or human (the words of a human prompt before [P])."})
    init_word: str = field(default="the", metadata={
        "help": "The neutral trigger word for causal LMs."})
    init_prompt: str = field(default="", metadata={
        "help": "For init=human: the human prompt's name (default: the task's first prompt)."})
    whole_words: bool = field(default=True, metadata={
        "help": "Only whole-word tokens (letters, start of a word) as candidates."})
    ascii_only: bool = field(default=True, metadata={"help": "Only ASCII tokens as candidates."})
    allow_label_words: bool = field(default=False, metadata={
        "help": "Allow the label words themselves as triggers (open-vocabulary tasks: the "
                "candidate objects, else the gold objects)."})
    deny: list[str] = field(default_factory=list, metadata={
        "help": "Words never used as triggers (comma-separated)."})

    budget_field: ClassVar[str] = "iterations"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.position = parse_choice(Position, self.position, "position")
        self.init = parse_choice(GradientInit, self.init, "init")
        for name in ("k", "iterations", "batch_size", "accumulation_steps", "forward_batch",
                     "forward_tokens", "eval_batch_size", "num_triggers"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, "
                                f"got {getattr(self, name)}")
        if self.num_candidates < 0:
            raise UserError("num-candidates must be 0 or more")


SearchTargets = Targets  # the name this module used before the targets moved to scoring/


def search_targets(scorer: PromptScorer, splits: dict[str, list[Example]]) -> Targets:
    """The targets of a classification task (its label words) or of an open-vocabulary task
    (every token ``evaluate_prompt`` ranks a split's gold objects among is one class, each split
    ranked among its own candidates, so the search's dev accuracy is the evaluation's
    precision@1; the answers are kept out of the triggers): :func:`resolve_targets`."""
    return scorer.targets(splits)


# --- the searcher ----------------------------------------------------------------------------


@strategies.register("gradient")
class GradientSearch(Searcher):
    """AutoPrompt / GCG trigger search; see the module docstring."""

    name = "gradient"
    Config = GradientConfig

    # --- setup ------------------------------------------------------------------------------
    def _template(self, ctx: SearchContext) -> tuple[str, list[int] | None]:
        """The template to search and, for init=human, the human prompt's trigger ids."""
        cfg = self.config
        backend = ctx.backend
        if cfg.init == GradientInit.human:
            return human_trigger_template(ctx.task, backend, cfg.init_prompt, ctx.template)
        if ctx.template:
            return ctx.template, None
        field_name = ctx.task.fields[0]
        return "{" + field_name + "} " + " ".join(["[T]"] * cfg.num_triggers) + " [P]", None

    def _initial(self, template: Template, backend: LMBackend, allowed: torch.Tensor,
                 human: list[int] | None) -> list[int]:
        cfg = self.config
        n = template.num_triggers
        if human is not None:
            return human
        if cfg.init == GradientInit.random:
            pool = allowed.nonzero()[:, 0]
            for _ in range(100):
                pick = pool[torch.randint(len(pool), (n,), generator=self.torch_rng)].tolist()
                if retokenizes(backend.tokenizer, template, pick):
                    return pick
            raise UserError("could not draw random initial triggers that re-tokenise; use "
                            "--init neutral")
        return [backend.neutral_trigger(cfg.init_word)] * n

    def setup(self, ctx: SearchContext) -> None:
        cfg = self.config
        task = ctx.task
        backend = ctx.backend
        template_src, self.human = self._template(ctx)
        template = Template.parse(template_src, task.fields)
        if template.num_triggers == 0:
            raise UserError(f"template {template_src!r} has no [T] slot to search; add some, e.g. "
                            "'{sentence} [T] [T] [T] [P] .'")
        scorer = PromptScorer(backend, task, template, batch_size=cfg.eval_batch_size)
        scorer.check_direct("the gradient search")
        train, dev = task.examples("train"), task.examples("dev")
        if not train or not dev:
            raise UserError(f"task '{task.name}' needs train and dev examples for a search")
        targets = self._targets = search_targets(scorer, {"train": train, "dev": dev})
        objective = TriggerObjective(scorer, cfg.forward_batch, forward_tokens=cfg.forward_tokens,
                                     targets=targets.words)
        exclude = [] if cfg.allow_label_words else targets.answer_ids
        allowed = allowed_token_mask(backend.tokenizer, backend.vocab_size, exclude_ids=exclude,
                                     whole_words=cfg.whole_words, ascii_only=cfg.ascii_only,
                                     deny=cfg.deny)
        if not allowed.any():
            raise UserError("the token filters leave no candidate token; relax --whole-words, "
                            "--ascii-only or --deny")
        if cfg.calibration is not Calibration.NONE and task.is_open_vocabulary:
            raise UserError(f"--calibration {cfg.calibration.value} applies to classification "
                            f"tasks; '{task.name}' ranks an open vocabulary")
        self.template_source, self.template = template_src, template
        self.scorer, self.objective, self.targets, self.allowed = scorer, objective, targets, allowed
        self.calibration: CalibrationRecord | None = None  # of the triggers last scored on dev
        self.best_calibration: CalibrationRecord | None = None
        self.emb = backend.input_embeddings()

    def _encode(self) -> None:
        """Encode the examples once for the whole search (with the current triggers; their
        slots are overwritten at each step), running every prefix before the first trigger."""
        objective, targets = self.objective, self.targets
        self.train = objective.encode(targets.examples["train"], self.current, targets.columns["train"])
        self.dev = objective.encode(targets.examples["dev"], self.current, targets.columns["dev"])

    def init_state(self, ctx: SearchContext) -> None:
        self.current = self._initial(self.template, ctx.backend, self.allowed, self.human)
        self.best = list(self.current)
        self.current_loss: float | None = None
        self.changed = True  # the triggers changed since they were last scored on dev
        self._encode()

    def position(self) -> dict:
        return {"triggers": self.current}

    def state_dict(self) -> tuple[dict, dict]:
        def record(r: CalibrationRecord | None) -> dict | None:
            return None if r is None else r.to_json()

        return {"current": self.current, "best": self.best, "current_loss": self.current_loss,
                "changed": self.changed, "calibration": record(self.calibration),
                "best_calibration": record(self.best_calibration)}, {}

    def load_state_dict(self, data: dict, tensors: dict) -> None:
        self.current, self.best = [int(t) for t in data["current"]], [int(t) for t in data["best"]]
        self.current_loss, self.changed = data["current_loss"], bool(data["changed"])
        self._set_calibration(CalibrationRecord.from_json(data.get("calibration")))
        self.best_calibration = CalibrationRecord.from_json(data.get("best_calibration"))
        self._encode()

    def _set_calibration(self, record: CalibrationRecord | None) -> None:
        """Score with ``record``'s offsets from now on (losses, gradients, dev scores)."""
        self.calibration = record
        self.objective.offsets = None if record is None else torch.tensor(record.offsets)

    def _estimate(self, triggers: list[int]) -> CalibrationRecord | None:
        """The calibration of ``triggers`` (one estimator for every caller); None for none."""
        cfg = self.config
        if cfg.calibration is Calibration.NONE:
            return None
        return estimate_calibration(cfg.calibration, self.scorer, triggers, premise=cfg.premise)

    def needs_evaluation(self) -> bool:
        return self.changed  # the dev score changes only when the triggers do

    def evaluate(self, ctx: SearchContext) -> Score:
        # calibration: offsets re-estimated for the current triggers at each dev evaluation and
        # held fixed for the steps' gradients and candidate losses until the next one
        self._set_calibration(self._estimate(self.current))
        acc, loss = self._dev(self.objective, self.dev, self.current)
        self.changed = False
        return Score(acc, loss, {"dev_accuracy": acc, "dev_loss": loss})

    def keep_best(self, state: SearchState) -> None:
        self.best = list(self.current)
        self.best_calibration = self.calibration

    # --- one step -------------------------------------------------------------------------------
    def _batches(self, train: EncodedBatch) -> list[EncodedBatch]:
        """``accumulation_steps`` training batches (all examples if there are few)."""
        cfg = self.config
        out = []
        for _ in range(cfg.accumulation_steps):
            if cfg.batch_size >= len(train):
                out.append(train)
            else:
                out.append(train.select(sorted(self.rng.sample(range(len(train)),
                                                               cfg.batch_size))))
        return out

    def step(self, ctx: SearchContext, state: SearchState) -> dict:
        cfg = self.config
        objective, backend, template = self.objective, ctx.backend, self.template
        current = torch.tensor(self.current)
        batches = self._batches(self.train)
        grad = None
        for batch in batches:
            g, batch_loss = objective.gradient(batch, self.current)
            grad = g if grad is None else grad + g
        cand_allowed = self.allowed.clone()
        top = top_candidates(grad, self.emb, cfg.k, cand_allowed)
        num_pos = len(self.current)
        if cfg.position == Position.gcg:
            rows = gcg_candidates(current, top, cfg.num_candidates or cfg.k, self.torch_rng)
            positions = sorted({int(p) for p in (rows != current).float().argmax(1).tolist()})
        else:
            pos = (self.rng.randrange(num_pos) if cfg.position == Position.random
                   else state.step % num_pos)
            rows = single_position_candidates(current, top, pos)
            positions = [pos]
        rows = unique_changed(rows, current)
        tried = len(rows)
        if len(rows):
            rows = rows[retokenize_mask(backend.tokenizer, template, rows)]
        # the current triggers' loss on the last batch came with its gradient: score only the candidates
        current_loss = batch_loss
        cand_losses = objective.losses(batches[-1], rows) if len(rows) else torch.empty(0)
        accepted = False
        best_cand_loss = None
        if len(cand_losses):
            i = int(torch.argmin(cand_losses))
            best_cand_loss = float(cand_losses[i])
            if best_cand_loss < current_loss:
                self.current = rows[i].tolist()
                current_loss = best_cand_loss
                accepted = True
        self.current_loss = current_loss
        self.changed = self.changed or accepted
        return {"positions": positions, "loss": current_loss,
                "best_candidate_loss": best_cand_loss, "candidates": tried,
                "scored": len(rows), "accepted": accepted, "triggers": self.current,
                "dev_accuracy": None}

    def _dev(self, objective: TriggerObjective, dev: EncodedBatch,
             triggers: list[int]) -> tuple[float, float]:
        """(accuracy, mean loss) of ``triggers`` on the encoded examples ``dev`` (calibrated
        with the objective's offsets when the search is)."""
        ev = evaluation_from_scores("", "dev", objective.class_scores(dev, triggers),
                                    dev.gold.tolist(), self._targets)
        return float(ev.metrics["accuracy"]), ev.loss

    # --- result ---------------------------------------------------------------------------------
    def result(self, ctx: SearchContext, state: SearchState) -> PromptResult:
        backend, template, template_src = ctx.backend, self.template, self.template_source
        best = [int(t) for t in self.best]
        texts = token_texts(backend.tokenizer)
        tokens = [texts[t] for t in best]
        self._set_calibration(self.best_calibration)
        train_acc, train_loss = self._dev(self.objective, self.train, best)
        return PromptResult(
            task=ctx.task.name, template=template_src,
            prompt=render_prompt(backend.tokenizer, template, best),
            model=backend.name, strategy=self.name, seed=self.seed,
            verbalizer=dict(self.scorer.verbalizer), trigger_ids=best, trigger_tokens=tokens,
            calibration=None if self.best_calibration is None else self.best_calibration.to_json(),
            scores={"dev_accuracy": state.best_accuracy, "dev_loss": state.best_loss,
                    "train_accuracy": train_acc, "train_loss": train_loss,
                    "initial_dev_accuracy": state.initial_accuracy},
            extra={"iterations": state.step, "stopped": state.stopped,
                   "seconds": round(state.elapsed, 1),
                   "retokenizes": retokenizes(backend.tokenizer, template, best),
                   "skipped_multi_token": self.targets.skipped},
        )


def human_trigger_template(task, backend: LMBackend, prompt_name: str = "",
                           template: str | None = None) -> tuple[str, list[int]]:
    """A human prompt turned into a trigger template, with its words as the initial triggers.

    The literal text right before [P] (``"It was"`` in ``"{sentence} It was [P] ."``)
    becomes [T] slots, one per token; the triggers start as those tokens, so the
    first prompt scored is exactly the human prompt.
    """
    if not task.prompts:
        raise UserError(f"--init human: task '{task.name}' lists no human prompts")
    human = task.prompt(prompt_name) if prompt_name else task.prompts[0]
    parsed = Template.parse(human.template, task.fields)
    segs = list(parsed.segments)
    p = parsed.predict_index
    start = p
    while start > 0 and isinstance(segs[start - 1], Text):
        start -= 1
    if start == p:
        raise UserError(f"--init human: the prompt {human.template!r} has no words right before "
                        "[P] to turn into triggers")
    text = " ".join(s.text for s in segs[start:p])
    ids = list(backend.encoder.text_ids(text, segs[start].space))
    if template is not None:
        wanted = Template.parse(template, task.fields).num_triggers
        if wanted != len(ids):
            raise UserError(f"--init human: {text!r} is {len(ids)} tokens but --template has "
                            f"{wanted} [T] slots; leave out --template to use the human prompt's "
                            "shape")
        return template, ids
    parts = []
    for seg in segs[:start]:
        parts.append(_seg_source(seg))
    slots = " ".join(["[T]"] * len(ids))
    parts.append((" " if segs[start].space else "") + slots)
    for seg in segs[p:]:
        parts.append(_seg_source(seg))
    return "".join(parts), ids


def _seg_source(seg) -> str:
    sep = " " if seg.space else ""
    if isinstance(seg, Text):
        return sep + seg.text
    if isinstance(seg, Field):
        return sep + "{" + seg.name + "}"
    if isinstance(seg, Trigger):
        return sep + "[T]"
    assert isinstance(seg, Predict)
    return sep + "[P]"

