"""Black-box prompt search: Optuna proposes prompt designs, workers score them.

A trial is a whole prompt design drawn from a search space (``core/spaces.py``,
bound to the task and model in ``blackbox_space.py``): the template (human prompts
and variants, optionally with trigger slots filled from a pool built by the tool), the
instruction, the verbalizer set and the few-shot demonstrations (how many, which, in
what order). It is scored on a fixed set of search-split examples in a per-trial
shuffled order; one score per example (1 if the prediction is right) is reported to
Optuna's ``WilcoxonPruner``, which stops a design once it is significantly worse than
the best one on the same examples.

The coordinator is the only writer of the study: a
:class:`~autoprompt_search.search.blackbox_schedule.TrialScheduler` asks and tells in
an order that does not depend on timing (so a seed fixes the trials for any number of
workers) and keeps a :class:`~autoprompt_search.search.workers.WorkerPool` busy --
in-process for ``--workers 1``, Ray actors otherwise. The human prompts are enqueued as
the first trials (and never pruned), so the result is never worse than the best human
prompt on the search examples. ``--resume`` replays the stored study so that a killed
run continues exactly as if it had never stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..core.errors import UserError
from ..core.results import PromptResult, task_reference, write_json
from ..core.spaces import SearchSpace, default_space, load_space
from ..core.templates import Template
from ..scoring.calibration import CHANNEL_PMI, DEFAULT_PREMISE, Calibration
from ..scoring.sequence import ScoringRule, scoring_rule
from .base import Score, SearchConfig, SearchContext, Searcher, SearchState, strategies
from .blackbox_schedule import TrialScheduler, align, replay
from .blackbox_space import BoundSpace, bind_space, pick_examples
from .blackbox_study import (
    PrunerName,
    SamplerName,
    StorageKind,
    choice,
    counted,
    finished,
    pruners,
    quiet_optuna,
    record,
    samplers,
    save_plots,
    storage_kind,
    storages,
)
from .workers import BackendRecipe, DesignEvaluator, make_pool

log = logging.getLogger(__name__)

__all__ = ["BlackBoxSearcher", "OptunaConfig", "counted", "save_plots"]


@dataclass
class OptunaConfig(SearchConfig):
    """Settings of the black-box search (and the base loop's: --time-budget, --patience in trials)."""

    budget_field: ClassVar[str] = "trials"

    space: str = field(default="", metadata={"help": "Search-space YAML file or shipped space name "
                                                     "(default: search_spaces/<task>.yaml)."})
    trials: int = field(default=50, metadata={"help": "Trials in total, human prompts included "
                                                      "(completed + pruned + failed).", "resumable": True})
    workers: int = field(default=1, metadata={"help": "Scoring workers: 1 runs in-process without Ray; "
                                                      "more start a Ray actor pool.", "resumable": True})
    ray_address: str = field(default="", metadata={"help": "Join a Ray cluster: 'auto' or HOST:PORT "
                                                           "(default: start Ray on this machine).",
                                                   "resumable": True})
    sampler: SamplerName = field(default=SamplerName.tpe,
                                 metadata={"help": "tpe (constant_liar), nsga2 or random."})
    startup_trials: int = field(default=10, metadata={"help": "TPE: random trials before modelling."})
    population: int = field(default=16, metadata={"help": "NSGA-II population size."})
    pruner: PrunerName = field(default=PrunerName.wilcoxon,
                               metadata={"help": "wilcoxon (per-example test) or none."})
    p_threshold: float = field(default=0.1, metadata={"help": "WilcoxonPruner p-value threshold."})
    storage: str = field(default="journal", metadata={"help": "journal (study.journal in the run folder), "
                                                              "memory, or an RDB URL (postgresql://...)."})
    study_name: str = field(default="", metadata={"help": "Study name (default: the run folder name)."})
    search_splits: list[str] = field(default_factory=lambda: ["train", "dev"],
                                     metadata={"help": "Splits the search scores on (never test)."})
    search_examples: int = field(default=64, metadata={"help": "Fixed, shuffled search examples "
                                                                "(demonstration pool excluded)."})
    batch_size: int = field(default=16, metadata={"help": "Examples per job (and per forward pass)."})
    per_actor: int = field(default=2, metadata={"help": "Jobs in flight per Ray actor."})
    scoring: ScoringRule = field(default=ScoringRule.DIRECT, metadata={
        "help": "Scoring rule of every design: direct or channel (the input given the label)."})
    gpus_per_worker: float = field(default=0.0, metadata={"help": "GPUs each Ray actor reserves "
                                                                  "(0.25: four actors share one GPU)."})
    trials_in_flight: int = field(default=0, metadata={
        "help": "Trials scored at once (asked before the earlier ones are told); 0: 1 in-process, "
                "else workers x per-actor. The same seed and value give the same trials.",
        "resumable": True})
    plots: bool = field(default=True, metadata={"help": "Save optimisation-history and "
                                                        "parameter-importance plots (PNG)."})
    calibration: Calibration = field(default=Calibration.NONE, metadata={
        "help": "Score trials with calibrated class scores: none, content-free, train-prior or "
                "pmi (offsets estimated once per design); the result stores the best design's."})
    premise: str = field(default=DEFAULT_PREMISE, metadata={"help": "Domain premise of --calibration pmi."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sampler = choice(SamplerName, samplers, self.sampler, "--sampler")
        self.pruner = choice(PrunerName, pruners, self.pruner, "--pruner")
        if self.trials_in_flight < 0:
            raise UserError("--trials-in-flight must be >= 0 (0: 1 in-process, else workers x per-actor)")
        storage_kind(self.storage)  # an unknown storage is refused before anything is written
        for name in ("trials", "workers", "search_examples", "batch_size", "per_actor", "population"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        self.scoring = scoring_rule(self.scoring)
        if self.scoring is ScoringRule.CHANNEL and self.calibration is Calibration.PMI:
            raise UserError(CHANNEL_PMI)
        if self.gpus_per_worker < 0:
            raise UserError("--gpus-per-worker must be >= 0")
        if self.startup_trials < 0:
            raise UserError("--startup-trials must be >= 0")
        if not 0 < self.p_threshold < 1:
            raise UserError("--p-threshold must be between 0 and 1")
        bad = [s for s in self.search_splits if s not in ("train", "dev")]
        if bad or not self.search_splits:
            raise UserError(f"--search-splits: use train and/or dev (got {', '.join(bad) or 'none'}); "
                            "the test split is never searched on")



@strategies.register("optuna")
class BlackBoxSearcher(Searcher):
    """Black-box search over prompt designs with Optuna (TPE / NSGA-II / random)."""

    name = "optuna"
    Config = OptunaConfig
    unit = "trial"

    # --- setup --------------------------------------------------------------------------
    def resolved_config(self, ctx: SearchContext) -> dict[str, Any]:
        cfg = super().resolved_config(ctx)
        space = self._space(ctx)
        cfg["space"] = space.source
        cfg["space_hash"] = _file_hash(space.source)
        # the choices as resolved against the task: a task file that gained or lost human
        # prompts changes them, and a study cannot continue with other categorical choices
        choices = [space.template_choices(ctx.task), space.verbalizer_choices(ctx.task),
                   space.instructions]
        cfg["choices_hash"] = hashlib.sha256(json.dumps(choices, sort_keys=True).encode()).hexdigest()[:16]
        return cfg

    def _space(self, ctx: SearchContext) -> SearchSpace:
        space = load_space(self.config.space) if self.config.space else default_space(ctx.task)
        if ctx.template and ctx.template not in space.templates:
            space.templates.insert(0, ctx.template)
        space.check_task(ctx.task)
        return space

    @property
    def window(self) -> int:
        """Trials in flight: --trials-in-flight, else one in-process, else one per job slot."""
        cfg = self.config
        if cfg.trials_in_flight:
            return cfg.trials_in_flight
        return 1 if cfg.workers == 1 and not cfg.ray_address else cfg.workers * cfg.per_actor

    def _storage(self, ctx: SearchContext) -> tuple[StorageKind, optuna.storages.BaseStorage]:
        kind = storage_kind(self.config.storage)
        folder = ctx.run.path if ctx.run is not None else None
        if ctx.resume and (kind == StorageKind.memory or folder is None and kind == StorageKind.journal):
            raise UserError("--resume needs a stored study; use --storage journal or an RDB URL")
        return kind, storages.get(kind.value)(self.config.storage, folder)

    # --- the base loop's hooks: one step = one trial told -------------------------------
    # (Optuna logs warnings only inside them: quiet_optuna restores its verbosity after)
    def setup(self, ctx: SearchContext) -> None:
        cfg = self.config
        self._ctx = ctx
        self._searched = self._space(ctx)
        self.demo_pool, self.examples = pick_examples(ctx.task, self._searched, cfg.search_splits,
                                                      cfg.search_examples, self.seed)
        self.bound: BoundSpace | None = None
        self.study: optuna.Study | None = None
        self.sched: TrialScheduler | None = None
        self._pool = None
        self._told: deque[FrozenTrial] = deque()  # told, not yet logged as a step
        self.stats = {"loop_seconds": 0.0}

    def init_state(self, ctx: SearchContext) -> None:
        with quiet_optuna():
            self._open(ctx, logged=0)

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"trials_done": self.sched.done - len(self._told), "study_name": self.study.study_name,
                "best_value": _best(self.study)}, {}

    def load_state_dict(self, data: dict[str, Any], tensors: dict[str, Any]) -> None:
        with quiet_optuna():
            self._open(self._ctx, logged=int(data["trials_done"]))

    def evaluate(self, ctx: SearchContext) -> Score:
        """The best search accuracy so far (the study holds the best design)."""
        best = _best(self.study)
        return Score(best if best is not None else 0.0, 0.0)

    def keep_best(self, state: SearchState) -> None:
        pass  # the study keeps every trial; the result is its best one

    def step(self, ctx: SearchContext, state: SearchState) -> dict[str, Any]:
        if not self._told:
            try:
                with quiet_optuna():
                    self._run_until_told(ctx)
            except BaseException:  # Ctrl-C, a lost cluster: stop the workers, keep the study
                self._close_pool()
                raise
        frozen = self._told.popleft()
        return {k: v for k, v in record(frozen, 0).items() if k != "step"}

    def result(self, ctx: SearchContext, state: SearchState) -> PromptResult:
        stats = {"trials_done": self.sched.done, "trials_in_flight": self.window,
                 "requeued_jobs": self.sched.requeued, "stopped": getattr(state.stopped, "value", None),
                 "workers": self._pool.workers if self._pool is not None else 0,
                 "restarts": getattr(self._pool, "restarts", 0),
                 "lost_jobs": getattr(self._pool, "lost_jobs", 0),
                 "loop_seconds": round(self.stats["loop_seconds"], 3)}
        self._close_pool()
        done = [t for t in self.study.get_trials(deepcopy=False) if counted(t)]  # over all sessions
        stats["pruned"] = sum(t.state == TrialState.PRUNED for t in done)
        stats["failed"] = sum(t.state == TrialState.FAIL for t in done)
        return self._export(ctx, self.study, self.bound, self.examples, stats)

    def save_artifacts(self, ctx: SearchContext, result: PromptResult) -> None:
        if self.config.plots:
            result.extra["plots"] = save_plots(self.study, ctx.run.path)
        write_json(ctx.run.path / "trials.json", [record(t, i) for i, t in
                                                  enumerate(finished(self.study), 1)])

    # --- the study and the workers --------------------------------------------------------
    def _open(self, ctx: SearchContext, logged: int) -> None:
        """Bind the space, open (or replay) the study, set up the scheduler; ``logged``: trials
        the run folder's log already shows (a killed run may have told more)."""
        cfg = self.config
        pool_file = ctx.run.path / "pool.json" if ctx.run is not None else None
        if ctx.resume and cfg.storage == "journal" and not (ctx.run.path / "study.journal").exists():
            raise UserError(f"--resume: {ctx.run.path} has no study.journal to continue")
        self.bound = bind_space(ctx.backend, ctx.task, self._searched, self.demo_pool, self.examples,
                                pool_file, cfg.scoring)
        study_name = cfg.study_name or (ctx.run.path.name if ctx.run is not None else "autoprompt")
        kind, storage = self._storage(ctx)
        exists = kind != StorageKind.memory and study_name in {
            s.study_name for s in optuna.get_all_study_summaries(storage)}
        shared = kind == StorageKind.rdb  # a database study that several coordinators may share
        if exists and not ctx.resume and not shared:
            raise UserError(f"the storage already holds a study '{study_name}'; pass --resume to "
                            "continue it or choose another --study-name")
        self.study, in_flight = self._open_study(ctx, self.bound, storage, study_name, exists, shared)
        self.sched = TrialScheduler(self.study, design=self.bound.suggest, examples=self.examples,
                                    seed=self.seed, trials=cfg.trials, window=self.window,
                                    chunk=cfg.batch_size, on_finish=self._told.append)
        self._told.extend(finished(self.study)[logged:])  # told by a killed run after its checkpoint
        if in_flight:  # trials a killed run left running: scored again from scratch
            adopt_study = optuna.load_study(study_name=study_name, storage=storage,
                                            sampler=optuna.samplers.RandomSampler(),
                                            pruner=self.study.pruner)
            for frozen in in_flight:
                trial = optuna.Trial(adopt_study, frozen._trial_id)
                self.sched.adopt(trial, lambda t, p=frozen.params: self.bound.rebuild(p),
                                 set(trial._cached_frozen_trial.intermediate_values))

    def _run_until_told(self, ctx: SearchContext) -> None:
        """Keep the workers busy until the scheduler tells the next trial."""
        cfg = self.config
        if self._pool is None:
            recipe = worker_recipe(ctx, cfg)
            self._pool = make_pool(cfg.workers, backend=ctx.backend, recipe=recipe, task=ctx.task,
                                   batch_size=cfg.batch_size, address=cfg.ray_address or None,
                                   per_actor=cfg.per_actor, calibration=cfg.calibration,
                                   premise=cfg.premise)
            self.sched.start()
        pool, sched = self._pool, self.sched
        start = time.perf_counter()
        try:
            while not self._told:
                while pool.free_slots > 0:
                    job = sched.next_job()
                    if job is None:
                        break
                    pool.submit(job)
                if pool.in_flight == 0 and pool.free_slots > 0:
                    raise RuntimeError(f"the scheduler has nothing to run but no trial was told "
                                       f"(in flight: {list(sched.active)})")
                for out in pool.poll():
                    sched.handle(out)
        finally:
            self.stats["loop_seconds"] += time.perf_counter() - start

    def _close_pool(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.close()

    def _open_study(self, ctx, bound: BoundSpace, storage, study_name: str, exists: bool,
                    shared: bool) -> tuple[optuna.Study, list[FrozenTrial]]:
        """The study with a sampler in the state the run needs, and the trials to re-score.

        A resumed run's sampler is brought to where the killed run left it by replaying the
        stored study; a study the replay cannot follow (made by an older version, or shared
        by several coordinators) gets a sampler reseeded past its trials instead.
        """
        cfg = self.config
        make_sampler = samplers.get(cfg.sampler.value)
        pruner = pruners.get(cfg.pruner.value)(cfg)
        sampler, frontier, stored = make_sampler(cfg, self.seed), None, []
        if exists:
            stored = optuna.load_study(study_name=study_name, storage=storage).get_trials()
            if not shared:
                frontier = replay(stored, sampler, bound.suggest)
            if frontier is None:
                log.warning("the stored study cannot be replayed; the resumed run is reproducible "
                            "but not identical to an uninterrupted one")
                sampler = make_sampler(cfg, self.seed + sum(counted(t) for t in stored))
        study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=exists)
        if frontier is not None:
            align(storage, study._study_id, frontier, stored)
            return study, frontier.in_flight
        if exists and not shared:
            self._recover(study)
        elif not exists:
            for t in bound.templates:
                human = next((p.name or p.template for p in ctx.task.prompts if p.template == t), None)
                if human is not None or t == ctx.template:
                    study.enqueue_trial(bound.human_params(t),
                                        user_attrs={"human": human or "--template"})
        return study, []

    def _recover(self, study: optuna.Study) -> None:
        """Trials left running by a killed run: mark failed and queue their params again."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={k: v for k, v in t.user_attrs.items()
                                                      if k == "human"})

    # --- export -------------------------------------------------------------------------
    def _export(self, ctx, study, bound: BoundSpace, search, stats) -> PromptResult:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise UserError("no trial completed; see log.jsonl in the run folder for why")
        best = max(complete, key=lambda t: (t.value, -t.number))
        design = bound.design(lambda name, dist: best.params[name])
        template = Template.parse(design.template, ctx.task.fields)
        tokens = [ctx.backend.encoder.decode_trigger(i) for i in design.triggers]
        humans = [t for t in complete if t.user_attrs.get("human")]
        best_human = max(humans, key=lambda t: (t.value, -t.number)) if humans else None
        scores = {"search_accuracy": best.value, "search_examples": float(len(search))}
        if best_human is not None:
            scores["best_human_search_accuracy"] = best_human.value
        fewshot = None
        if design.fewshot is not None:
            fewshot = {"instruction": design.instruction, "demo_ids": [d.id for d in design.demos],
                       "split": bound.space.demos.split, "separator": design.separator}
        cfg = self.config
        # the best design's offsets, through the estimator the workers use
        calib_record = DesignEvaluator(ctx.backend, ctx.task, cfg.batch_size, calibration=cfg.calibration,
                                      premise=cfg.premise).record(design)
        return PromptResult(
            task=task_reference(ctx.task), template=design.template, prompt=template.render(tokens),
            model=ctx.model, strategy=self.name, seed=self.seed, verbalizer=design.verbalizer,
            trigger_ids=list(design.triggers), trigger_tokens=tokens, fewshot=fewshot,
            scoring=design.rule, scores=scores,
            calibration=None if calib_record is None else calib_record.to_json(),
            extra={"trial": best.number, "params": best.params, **stats,
                   "best_human": best_human.user_attrs["human"] if best_human else None,
                   "space": bound.space.source, "trigger_pool": {"source": bound.pool.source,
                                                                 "size": len(bound.pool.token_ids)},
                   "left_out": bound.dropped, "search_example_ids": [ex.id for ex in search]},
        )


def _best(study: optuna.Study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


def _file_hash(path: str) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None


def worker_recipe(ctx: SearchContext, cfg: OptunaConfig) -> BackendRecipe:
    """How scoring workers get the model: its spec, device and dtype, and the GPUs each reserves."""
    device = str(ctx.backend.device) if ctx.backend_override is not None else (ctx.device or "cpu")
    pooled = cfg.workers > 1 or bool(cfg.ray_address)
    if pooled and not device.startswith("cpu") and cfg.gpus_per_worker <= 0:
        raise UserError(f"--device {device} with Ray workers needs --gpus-per-worker (e.g. "
                        f"{1 / cfg.workers:.2g} for {cfg.workers} workers sharing one GPU), or use "
                        "--device cpu")
    if ctx.backend_override is not None:
        return BackendRecipe.from_backend(ctx.backend_override, num_gpus=cfg.gpus_per_worker)
    return BackendRecipe(ctx.model, ctx.dtype, ctx.device, num_gpus=cfg.gpus_per_worker)
