"""The Searcher interface, its one search loop, and the strategy registry.

Like Optuna's ``BaseSampler``: a small core, a config dataclass, its own RNGs seeded in
the constructor, no global state. Like transformers' ``Trainer``, the base class owns the
loop and a strategy only says how to set up, take a step, score the current position
and build the result:

* ``setup(ctx)`` prepares what the search works on (every run, fresh or resumed);
* ``init_state(ctx)`` picks the starting position (fresh runs only; may draw from the RNGs);
* ``step(ctx, state)`` takes one step and returns the fields it logs;
* ``evaluate(ctx)`` scores the current position on dev (a :class:`Score`);
* ``keep_best(state)`` remembers the current position as the best one;
* ``state_dict()`` / ``load_state_dict(data, tensors)`` save and restore the strategy's
  position (JSON-ready data plus named tensors);
* ``result(ctx, state)`` builds the :class:`PromptResult`.

The base owns the run folder (start, resume, ``config.json``, ``log.jsonl``), budgets
(``iterations``-like budget, seconds, patience), the evaluation cadence (``eval_every``;
a checkpoint follows every evaluation), the progress bar, the RNG state, the checkpoint
(one format: :class:`SearchState` as JSON plus tensors in safetensors, see
:mod:`autoprompt_search.core.runs`) and ``result.json``, written once at the end.
Ctrl-C raises :class:`~autoprompt_search.core.runs.SearchInterrupted` (exit status 130)
and keeps the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.config import check_keys, from_mapping, resumable_fields, to_jsonable
from ..core.errors import UserError
from ..core.registry import Registry
from ..core.results import PromptResult, task_reference
from ..core.runs import RunDir, SearchInterrupted
from ..core.tasks import Task
from ..models import LMBackend, load_model
from ..scoring.calibration import DEFAULT_PREMISE, Calibration

TORCH_RNG_KEY = "rng.torch"
STRATEGY_PREFIX = "strategy."


@dataclass
class SearchContext:
    """What a search works on: the task, the model, the template and the run folder."""

    task: Task
    model: str  # model spec (alias, folder or hub id); workers may load their own copy
    template: str | None = None
    run: RunDir | None = None
    resume: bool = False
    progress: bool = True
    dtype: str = "float32"  # resolved by api.run_search: never "auto" in a run's config.json
    device: str | None = None  # resolved likewise: "cpu", "cuda:0", "mps"
    backend_override: LMBackend | None = field(default=None, repr=False)

    @cached_property
    def backend(self) -> LMBackend:
        """The model, loaded once on first use (or the backend passed in)."""
        if self.backend_override is not None:
            return self.backend_override
        return load_model(self.model, dtype=self.dtype, device=self.device)


# the keys of a resolved config that describe the run rather than the strategy's settings;
# a run's config.json given back as a config file has them (applied or checked, never unknown)
CONTEXT_KEYS = ("strategy", "seed", "task", "task_name", "task_source", "data_seed", "model",
                "dtype", "device", "template", "versions")


class StopReason(str, enum.Enum):
    """Why a search stopped."""

    budget = "iterations"
    patience = "patience"
    time = "time budget"


@dataclass
class SearchConfig:
    """Settings every strategy has. Fields with ``metadata["resumable"]`` may change on
    ``--resume``; a subclass names its step budget field in ``budget_field``."""

    budget_field: ClassVar[str] = "iterations"

    time_budget: float = field(default=0.0, metadata={
        "help": "Seconds budget (0: none); the search stops after the step that passes it.",
        "resumable": True})
    patience: int = field(default=0, metadata={
        "help": "Stop after this many steps without a better dev score (0: never).",
        "resumable": True})
    eval_every: int = field(default=1, metadata={
        "help": "Score on the dev split (and checkpoint) every N steps and after the last one."})
    calibration: Calibration = field(default=Calibration.NONE, metadata={
        "help": "Optimise and select calibrated class scores: none, content-free, train-prior "
                "or pmi; the result stores the best prompt's offsets."})
    premise: str = field(default=DEFAULT_PREMISE, metadata={
        "help": "Domain premise of --calibration pmi."})

    def __post_init__(self) -> None:
        if self.time_budget < 0 or self.patience < 0:
            raise UserError("time-budget and patience must be 0 or more")
        if self.eval_every < 1:
            raise UserError(f"eval-every must be at least 1, got {self.eval_every}")
        self.calibration = Calibration.parse(self.calibration)

    @property
    def budget(self) -> int:
        return int(getattr(self, self.budget_field))


@dataclass
class Score:
    """A dev score of the current position: ranked by accuracy, then lower loss."""

    accuracy: float
    loss: float
    record: dict[str, Any] = field(default_factory=dict)  # what the log shows of it

    def better_than(self, accuracy: float | None, loss: float | None) -> bool:
        if accuracy is None or loss is None:
            return True
        return (self.accuracy, -self.loss) > (accuracy, -loss)


@dataclass
class SearchState:
    """Where a search stands: what the base loop checkpoints (with the strategy's state)."""

    step: int = 0
    elapsed: float = 0.0  # search seconds, across resumes
    best_step: int = 0
    best_accuracy: float | None = None
    best_loss: float | None = None
    initial_accuracy: float | None = None
    since_best: int = 0
    stopped: StopReason | None = None
    rngs: dict[str, Any] = field(default_factory=dict)  # python and numpy generators
    strategy: dict[str, Any] = field(default_factory=dict)  # the strategy's state_dict()

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "checkpoint") -> SearchState:
        check_keys(data, [f.name for f in dataclasses.fields(cls)], source)
        state = cls(**data)
        state.stopped = StopReason(state.stopped) if state.stopped is not None else None
        return state


class Searcher:
    """A prompt-search strategy. Subclasses set ``name`` and ``Config`` and implement the hooks
    (see the module docstring); :meth:`search` is the one loop."""

    name: ClassVar[str]
    Config: ClassVar[type]
    unit: ClassVar[str] = "it"

    def __init__(self, config: Any = None, seed: int = 0) -> None:
        self.config = config if config is not None else self.Config()
        self.seed = int(seed)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.torch_rng = torch.Generator().manual_seed(self.seed)
        self.template_source: str | None = None  # set by setup when it resolves the template

    @classmethod
    def from_options(cls, options: dict[str, Any], seed: int = 0, source: str = "options") -> Searcher:
        """Build from a mapping of option names (``kebab-case`` or ``snake_case``)."""
        data = {k.replace("-", "_"): v for k, v in options.items()}
        return cls(from_mapping(cls.Config, data, f"{source} for strategy '{cls.name}'"), seed)

    @classmethod
    def resumable_keys(cls) -> set[str]:
        """Settings that may change on ``--resume`` (declared per config field)."""
        return resumable_fields(cls.Config)

    def resolved_config(self, ctx: SearchContext) -> dict[str, Any]:
        """The full config recorded in the run folder and the result."""
        return {
            "strategy": self.name, "seed": self.seed, "task": task_reference(ctx.task),
            "task_name": ctx.task.name, "task_source": ctx.task.source,
            "data_seed": ctx.task.data_seed if not ctx.task.data.get("hub") else None,
            "model": ctx.model, "dtype": ctx.dtype, "device": ctx.device,
            "template": self.template_source if self.template_source is not None else ctx.template,
            **_without_default_calibration(to_jsonable(self.config)),
        }

    # --- the hooks a strategy implements ------------------------------------------------------
    # (not @abstractmethod yet: the optuna strategy still overrides search() whole until it is
    # ported onto this loop; then these become abstract)
    def setup(self, ctx: SearchContext) -> None:
        raise NotImplementedError

    def init_state(self, ctx: SearchContext) -> None:
        raise NotImplementedError

    def step(self, ctx: SearchContext, state: SearchState) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self, ctx: SearchContext) -> Score:
        raise NotImplementedError

    def keep_best(self, state: SearchState) -> None:
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def load_state_dict(self, data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def result(self, ctx: SearchContext, state: SearchState) -> PromptResult:
        raise NotImplementedError

    # optional hooks
    def needs_evaluation(self) -> bool:
        """Whether the position changed since it was last scored (else the step's evaluation
        is skipped)."""
        return True

    def position(self) -> dict[str, Any]:
        """Fields describing the starting position, for the log's step-0 record."""
        return {}

    def save_artifacts(self, ctx: SearchContext, result: PromptResult) -> None:
        """Write files besides ``result.json`` into the run folder (called by :meth:`search`)."""

    def progress(self, state: SearchState) -> dict[str, str]:
        """What the progress bar shows after each step (default: the best dev accuracy)."""
        return {"best_dev": f"{state.best_accuracy:.3f}"}

    def progress_total(self) -> int | None:
        """The progress bar's length in steps (None: unknown, the bar counts)."""
        return self.config.budget

    # --- the loop -----------------------------------------------------------------------------
    def search(self, ctx: SearchContext) -> PromptResult:
        """Run the search (or resume it) and return the best prompt found; with a run folder,
        save ``result.json`` there."""
        self.setup(ctx)
        config = self.resolved_config(ctx)
        run = ctx.run
        loaded = run.start(config, ctx.resume, self.resumable_keys()) if run is not None else None
        if loaded is None:
            state = self._fresh(ctx)
        else:
            state = self._restore(*loaded, where=str(run.checkpoint_path))
            run.truncate_log(state.step)
            state.stopped = None  # budgets may have been raised for the resumed run
        self._loop(ctx, state)
        result = dataclasses.replace(self.result(ctx, state), task=task_reference(ctx.task),
                                     config=config)
        if run is not None:
            self.save_artifacts(ctx, result)
            run.save_result(result)
        return result

    def _fresh(self, ctx: SearchContext) -> SearchState:
        self.init_state(ctx)
        state = SearchState()
        score = self.evaluate(ctx)
        state.best_accuracy, state.best_loss = score.accuracy, score.loss
        state.initial_accuracy = score.accuracy
        self.keep_best(state)
        if ctx.run is not None:
            ctx.run.log({"step": 0, **self.position(), **score.record, "time": 0.0})
            self._checkpoint(ctx, state)
        return state

    def _loop(self, ctx: SearchContext, state: SearchState) -> None:
        cfg = self.config
        budget = cfg.budget
        started = time.perf_counter() - state.elapsed
        total = self.progress_total()
        bar = tqdm(total=total, initial=min(state.step, budget), desc=f"{self.name} search",
                   unit=self.unit, disable=not ctx.progress)
        try:
            while state.stopped is None and state.step < budget:
                if cfg.time_budget and time.perf_counter() - started >= cfg.time_budget:
                    state.stopped = StopReason.time
                    break
                if cfg.patience and state.since_best >= cfg.patience:
                    state.stopped = StopReason.patience
                    break
                record = self.step(ctx, state)
                state.step += 1
                state.since_best += 1
                due = state.step % cfg.eval_every == 0 or state.step == budget
                if due and self.needs_evaluation():
                    score = self.evaluate(ctx)
                    record.update(score.record)
                    if score.better_than(state.best_accuracy, state.best_loss):
                        state.best_accuracy, state.best_loss = score.accuracy, score.loss
                        state.best_step, state.since_best = state.step, 0
                        self.keep_best(state)
                record["best_dev_accuracy"] = state.best_accuracy
                state.elapsed = time.perf_counter() - started
                record["time"] = round(state.elapsed, 3)
                if cfg.patience and state.since_best >= cfg.patience:
                    state.stopped = StopReason.patience
                elif state.step >= budget:
                    state.stopped = StopReason.budget
                if ctx.run is not None:
                    ctx.run.log({"step": state.step, **record})
                    if due or state.stopped is not None:
                        self._checkpoint(ctx, state)
                bar.update(1)
                postfix = self.progress(state)
                if isinstance(record.get("loss"), float):
                    postfix["loss"] = f"{record['loss']:.3f}"
                bar.set_postfix(postfix)
        except KeyboardInterrupt:
            if ctx.run is None:
                raise
            done = self._checkpointed_step(ctx)
            raise SearchInterrupted(
                f"interrupted, resume with --resume (--out {ctx.run.path}; the checkpoint "
                f"holds step {done})") from None
        finally:
            bar.close()
        if state.stopped is None:
            state.stopped = StopReason.budget

    # --- checkpoints ----------------------------------------------------------------------
    def _rng_state(self) -> tuple[dict[str, Any], torch.Tensor]:
        version, internal, gauss = self.rng.getstate()
        return ({"python": [version, list(internal), gauss],
                 "numpy": self.np_rng.bit_generator.state}, self.torch_rng.get_state())

    def _checkpoint(self, ctx: SearchContext, state: SearchState) -> None:
        data, tensors = self.state_dict()
        state.strategy = data
        state.rngs, torch_state = self._rng_state()
        ctx.run.save_state(state.to_dict(), {TORCH_RNG_KEY: torch_state,
                                             **{STRATEGY_PREFIX + k: v for k, v in tensors.items()}})

    def _restore(self, data: dict[str, Any], tensors: dict[str, torch.Tensor],
                 where: str) -> SearchState:
        try:
            state = SearchState.from_dict(data, where)
            version, internal, gauss = state.rngs["python"]
            self.rng.setstate((version, tuple(internal), gauss))
            self.np_rng.bit_generator.state = state.rngs["numpy"]
            self.torch_rng.set_state(tensors[TORCH_RNG_KEY])
            mine = {k[len(STRATEGY_PREFIX):]: v for k, v in tensors.items()
                    if k.startswith(STRATEGY_PREFIX)}
            self.load_state_dict(state.strategy, mine)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise UserError(f"--resume: {where} does not hold a {self.name} search state "
                            f"({type(exc).__name__}: {exc})") from None
        return state

    def _checkpointed_step(self, ctx: SearchContext) -> int | str:
        loaded = ctx.run.load_state()
        return loaded[0].get("step", "?") if loaded is not None else "none"


def _without_default_calibration(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without ``calibration: none`` and the default premise, and without the default
    ``scoring: direct`` (black-box), so an uncalibrated direct-rule run's config.json is what it
    was before calibration and scoring rules existed (and such runs still resume)."""
    if settings.get("scoring") == "direct":
        settings = {k: v for k, v in settings.items() if k != "scoring"}
    if settings.get("calibration") == Calibration.NONE.value:
        settings = {k: v for k, v in settings.items() if k != "calibration"}
        if settings.get("premise") == DEFAULT_PREMISE:
            settings.pop("premise")
    return settings


strategies: Registry[type[Searcher]] = Registry("search strategy")
"""Search strategies, all behind :class:`Searcher`; each registers itself by name."""
