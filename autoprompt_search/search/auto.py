"""``--strategy auto``: one exportable hard prompt that resists overfitting a tiny dev set.

The search starts from the task's human prompts and a small generated pool, edits the best few
(phrases of the template, demonstrations), and chooses the verbalizer and the calibration of
each candidate from cached label-word scores -- every choice judged by k-fold cross-validation
over train + dev, the final one by the mean over folds minus a spread penalty. Candidates are
scored by successive halving (a stratified fraction of the rows first, the better part on more)
through the black-box search's worker pool. See ``docs/auto.md``.

Parts and the flags that switch them off: start pool generation (``--no-generate``), phrase
edits (``--no-edit``), verbalizer screening (``--no-verbalizer``), demonstrations
(``--no-demos``), calibration (``--no-calibration``), cross-validation (``--no-cv``: one split,
train to choose and dev to judge); ``--ensemble K`` exports the top K prompts with weights.

One step scores one group of candidates on one rung (a checkpoint follows every step); the
module :mod:`.auto_plan` decides what each step does and builds the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core.errors import UserError
from ..core.results import PromptResult
from ..scoring.calibration import Calibration
from .auto_plan import AutoPlan
from .auto_select import Objective
from .base import Score, SearchConfig, SearchContext, Searcher, SearchState, StopReason, strategies


@dataclass
class AutoConfig(SearchConfig):
    """Settings of the auto search (and the base loop's: --time-budget, --patience in steps)."""

    budget_field: ClassVar[str] = "max_steps"

    time_budget: float = field(default=900.0, metadata={
        "help": "Seconds budget (0: none): no group of candidates is started that the measured "
                "cost per scored example says will not end in time.", "resumable": True})
    max_steps: int = field(default=10000, metadata={
        "help": "Steps at most (a step scores one group of candidates on one rung).",
        "resumable": True})
    rounds: int = field(default=12, metadata={"help": "Edit rounds at most after the start pool.",
                                              "resumable": True})
    stall_rounds: int = field(default=4, metadata={
        "help": "Stop after this many edit rounds without a better cross-validated score (0: never).",
        "resumable": True})
    no_generate: bool = field(default=False, metadata={"help": "Start from the human prompts only."})
    no_edit: bool = field(default=False, metadata={"help": "No phrase edits of the templates."})
    no_verbalizer: bool = field(default=False, metadata={
        "help": "Each candidate keeps its own verbalizer (no label-word screening)."})
    no_demos: bool = field(default=False, metadata={"help": "No demonstrations."})
    no_calibration: bool = field(default=False, metadata={"help": "Uncalibrated class scores only."})
    no_cv: bool = field(default=False, metadata={
        "help": "Choose on train and judge on dev (one split) instead of k-fold over train + dev."})
    ensemble: int = field(default=1, metadata={
        "help": "Export the top K prompts with weights, evaluated as one predictor (1: one prompt)."})
    folds: int = field(default=4, metadata={"help": "Cross-validation folds over train + dev."})
    spread_penalty: float = field(default=0.5, metadata={
        "help": "Final choice: mean held-out accuracy minus this times its standard deviation over folds."})
    balance: float = field(default=0.1, metadata={
        "help": "Weight of the predicted-label entropy (label balance) in the fitness."})
    objective: Objective = field(default=Objective.accuracy, metadata={
        "help": "What choices maximise per example: accuracy, ce (calibrated log-likelihood) or margin."})
    rungs: int = field(default=3, metadata={
        "help": "Successive-halving rungs (1: every candidate on every row)."})
    eta: int = field(default=2, metadata={"help": "Keep the better 1/eta of a rung for the next."})
    beam: int = field(default=3, metadata={"help": "Best candidates edited each round."})
    edits: int = field(default=8, metadata={"help": "Template edits proposed per round."})
    demo_proposals: int = field(default=4, metadata={"help": "Demonstration sets proposed per round."})
    max_demos: int = field(default=4, metadata={"help": "Demonstrations per prompt at most."})
    generate_max: int = field(default=16, metadata={"help": "Generated start templates at most."})
    neighbours: int = field(default=5, metadata={
        "help": "Embedding neighbours of each class name screened as label words."})
    workers: int = field(default=1, metadata={"help": "Scoring workers: 1 in-process, more Ray actors.",
                                              "resumable": True})
    ray_address: str = field(default="", metadata={"help": "Join a Ray cluster: 'auto' or HOST:PORT.",
                                                   "resumable": True})
    per_actor: int = field(default=2, metadata={"help": "Jobs in flight per Ray actor.", "resumable": True})
    gpus_per_worker: float = field(default=0.0, metadata={"help": "GPUs each Ray actor reserves."})
    batch_size: int = field(default=16, metadata={"help": "Examples per job (and per forward pass)."})
    calibration: Calibration = field(default=Calibration.NONE, metadata={
        "help": "none (default): choose among none, content-free, train-prior and pmi per candidate "
                "(--no-calibration: uncalibrated only); another mode: that mode only."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_steps", "folds", "rungs", "eta", "ensemble", "workers", "per_actor",
                     "batch_size", "beam"):
            if getattr(self, name) < (2 if name in ("folds", "eta") else 1):
                raise UserError(f"--{name.replace('_', '-')} must be at least "
                                f"{2 if name in ('folds', 'eta') else 1}, got {getattr(self, name)}")
        for name in ("rounds", "stall_rounds", "edits", "demo_proposals", "max_demos",
                     "generate_max", "neighbours"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.spread_penalty < 0 or self.balance < 0:
            raise UserError("--spread-penalty and --balance must be 0 or more")
        if self.gpus_per_worker < 0:
            raise UserError("--gpus-per-worker must be >= 0")
        if self.no_calibration and self.calibration is not Calibration.NONE:
            raise UserError(f"--no-calibration contradicts --calibration {self.calibration.value}")
        try:
            self.objective = Objective(self.objective)
        except ValueError:
            raise UserError(f"--objective: '{self.objective}' is not one of accuracy, ce, margin") from None

    @property
    def modes(self) -> list[Calibration]:
        """The calibration modes each candidate chooses among."""
        if self.no_calibration:
            return [Calibration.NONE]
        if self.calibration is not Calibration.NONE:
            return [self.calibration]
        return list(Calibration)


@strategies.register("auto")
class AutoSearcher(Searcher):
    """Start from human and generated prompts, edit the best, choose verbalizer, calibration and
    demonstrations by cross-validation; one exportable prompt (or a weighted ensemble)."""

    name = "auto"
    Config = AutoConfig
    unit = "step"

    def setup(self, ctx: SearchContext) -> None:
        if ctx.task.is_open_vocabulary:
            raise UserError(f"--strategy auto searches classification tasks; task '{ctx.task.name}' "
                            "ranks an open vocabulary (use --strategy gradient)")
        if ctx.template is not None and "[T]" in ctx.template:
            raise UserError("--strategy auto does not fill [T] slots; give --template without [T] "
                            "(or search triggers with --strategy gradient)")
        self.plan = AutoPlan(ctx, self.config, self.seed, self.rng)

    def init_state(self, ctx: SearchContext) -> None:
        self.plan.start()

    def step(self, ctx: SearchContext, state: SearchState) -> dict[str, Any]:
        try:
            record = self.plan.step(state.elapsed)
        except BaseException:
            self.plan.close()
            raise
        if self.plan.finished is not None:
            state.stopped = StopReason.time if self.plan.finished == "time" else StopReason.budget
        return record

    def evaluate(self, ctx: SearchContext) -> Score:
        best = self.plan.best()
        if best is None:
            return Score(0.0, 0.0, {"best_cv": None})
        return Score(best.score, -best.fitness, {"best_cv": round(best.score, 6), "best_id": best.id})

    def progress(self, state: SearchState) -> dict[str, str]:
        best = self.plan.best()
        return {"best_cv": "-" if best is None else f"{best.score:.3f}"}

    def progress_total(self) -> int | None:
        return None  # the time budget and the rounds decide, not a step count

    def keep_best(self, state: SearchState) -> None:
        pass  # every candidate is kept; the result is chosen from them

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.plan.state_dict()

    def load_state_dict(self, data: dict[str, Any], tensors: dict[str, Any]) -> None:
        self.plan.load_state_dict(data, tensors)

    def result(self, ctx: SearchContext, state: SearchState) -> PromptResult:
        try:
            return self.plan.result(self.name, state)
        finally:
            self.plan.close()


__all__ = ["AutoConfig", "AutoSearcher"]
