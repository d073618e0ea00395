"""Black-box prompt search: Optuna proposes prompt designs, workers score them.

A trial is a whole prompt design drawn from a search space (``spaces.py``): the
template (human prompts and variants, optionally with trigger slots filled from a
pool built by the tool), the instruction, the verbalizer set and the few-shot
demonstrations (how many, which, in what order). It is scored on a fixed set of
search-split examples in a per-trial shuffled order; one score per example (1 if the
prediction is right) is reported to Optuna's ``WilcoxonPruner``, which stops a
design once it is significantly worse than the best one on the same examples.

The coordinator is the only writer of the study: it calls ``ask()``/``tell()`` and
keeps a :class:`~autoprompt_search.search.workers.WorkerPool` busy -- in-process for
``--workers 1``, Ray actors otherwise. The human prompts are enqueued as the first
trials (and never pruned), so the result is never worse than the best human prompt on
the search examples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import optuna.distributions as od
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..core.data import Example
from ..core.errors import UserError
from ..core.results import PromptResult, task_reference, write_json
from ..scoring.scorer import PromptScorer
from ..scoring.sequence import scoring_rule
from ..core.spaces import TASK_VERBALIZER, SearchSpace, default_space, insert_triggers, load_space
from ..core.templates import Template
from .base import SearchContext, Searcher, strategies
from .pools import TriggerPool, build_pool
from .workers import BackendRecipe, Design, Job, Outcome, make_pool

log = logging.getLogger(__name__)
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("wilcoxon", "none")
MAX_JOB_ATTEMPTS = 5  # a job lost this many times (worker deaths) fails its trial


@dataclass
class OptunaConfig:
    space: str = field(default="", metadata={"help": "Search-space YAML file or shipped space name "
                                                     "(default: search_spaces/<task>.yaml)."})
    trials: int = field(default=50, metadata={"help": "Trials in total, human prompts included "
                                                      "(completed + pruned + failed).", "resumable": True})
    workers: int = field(default=1, metadata={"help": "Scoring workers: 1 runs in-process without Ray; "
                                                      "more start a Ray actor pool.", "resumable": True})
    ray_address: str = field(default="", metadata={"help": "Join a Ray cluster: 'auto' or HOST:PORT "
                                                           "(default: start Ray on this machine).",
                                                   "resumable": True})
    sampler: str = field(default="tpe", metadata={"help": "tpe (constant_liar), nsga2 or random."})
    startup_trials: int = field(default=10, metadata={"help": "TPE: random trials before modelling."})
    population: int = field(default=16, metadata={"help": "NSGA-II population size."})
    pruner: str = field(default="wilcoxon", metadata={"help": "wilcoxon (per-example test) or none."})
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
    scoring: str = field(default="direct", metadata={"help": "Scoring rule of every design: direct "
                                                           "or channel (the input given the label)."})
    gpus_per_worker: float = field(default=0.0, metadata={"help": "GPUs each Ray actor reserves "
                                                                  "(0.25: four actors share one GPU)."})
    plots: bool = field(default=True, metadata={"help": "Save optimisation-history and "
                                                        "parameter-importance plots (PNG)."})

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r}: choose {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise UserError(f"--pruner {self.pruner!r}: choose {', '.join(PRUNERS)}")
        for name in ("trials", "workers", "search_examples", "batch_size", "per_actor", "population"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        self.scoring = scoring_rule(self.scoring).value
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


@dataclass
class BoundSpace:
    """A space resolved for one task, model and seed: concrete choices and the examples."""

    space: SearchSpace
    templates: list[str]
    verbalizers: dict[str, dict[str, list[str]]]
    instructions: list[str]
    demo_pool: list[Example]
    pool: TriggerPool
    dropped: list[str]
    rule: str = "direct"  # the scoring rule of every design

    def design(self, get: Callable[[str, Any], Any]) -> Design:
        """Build a design, asking ``get(name, distribution)`` for each choice made."""
        template = _choose(get, "template", self.templates)
        verb_name = _choose(get, "verbalizer", list(self.verbalizers))
        instruction = _choose(get, "instruction", self.instructions)
        shots = _draw(get, "shots", self.space.param("shots"))
        by_id = {ex.id: ex for ex in self.demo_pool}
        demo_ids: list[int] = []
        for i in range(shots):
            d = get(f"demo_{i}", od.CategoricalDistribution(list(by_id)))
            if d not in demo_ids:  # a demonstration drawn twice is used once
                demo_ids.append(d)
        extra = _draw(get, "trigger_slots", self.space.param("trigger_slots"))
        if extra:
            position = _draw(get, "trigger_position", self.space.param("trigger_position"))
            template = insert_triggers(template, extra, position)
        n_slots = Template.parse(template).num_triggers
        pool = od.CategoricalDistribution(list(self.pool.token_ids))
        triggers = tuple(int(get(f"trigger_{i}", pool)) for i in range(n_slots))
        return Design(template, self.verbalizers[verb_name], triggers, instruction,
                      tuple(by_id[i] for i in demo_ids), self.space.demos.separator, self.rule)

    def human_params(self, template: str) -> dict[str, Any]:
        """Params that reproduce a human prompt as written (no instruction, demos, triggers)."""
        params: dict[str, Any] = {"template": template, "verbalizer": TASK_VERBALIZER,
                                  "instruction": "" if "" in self.instructions else self.instructions[0]}
        for name in ("shots", "trigger_slots"):
            dist = self.space.param(name)
            if isinstance(dist, od.BaseDistribution):
                params[name] = dist.low
        return params


def _choose(get, name: str, choices: list) -> Any:
    return choices[0] if len(choices) == 1 else get(name, od.CategoricalDistribution(choices))


def _draw(get, name: str, value: Any) -> Any:
    return get(name, value) if isinstance(value, od.BaseDistribution) else value


def _suggest(trial: optuna.Trial, name: str, dist: od.BaseDistribution) -> Any:
    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def counted(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial uses up budget (interrupted trials are re-run instead)."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and "error" in t.user_attrs)


@dataclass
class _TrialRun:
    trial: optuna.Trial
    design: Design
    pending: deque
    chunks: int
    human: str | None
    started: float = field(default_factory=time.perf_counter)
    done: dict[int, list[float]] = field(default_factory=dict)
    steps: int = 0


@strategies.register("optuna")
class BlackBoxSearcher(Searcher):
    """Black-box search over prompt designs with Optuna (TPE / NSGA-II / random)."""

    name = "optuna"
    Config = OptunaConfig

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
        if space.task is not None and space.task != ctx.task.name:
            raise UserError(f"the space {space.source} is for task '{space.task}', but the search "
                            f"runs on '{ctx.task.name}'; pass --task {space.task}")
        if ctx.template and ctx.template not in space.templates:
            space.templates.insert(0, ctx.template)
        space.check_task(ctx.task)
        return space

    def _examples(self, ctx: SearchContext, space: SearchSpace) -> tuple[list[Example], list[Example]]:
        """(demonstration pool, search examples): disjoint, seeded, never from test."""
        rng = random.Random(self.seed)
        split = space.demos.split
        candidates = ctx.task.examples(split)
        rng.shuffle(candidates)
        if space.demos.per_class:
            by_class: dict[int, list[Example]] = {}
            for ex in candidates:
                by_class.setdefault(ex.label, []).append(ex)
            order = []
            queues = [by_class[c] for c in sorted(by_class)]
            while any(queues):
                for q in queues:
                    if q:
                        order.append(q.pop(0))
            candidates = order
        need = space.max_shots and space.demos.pool_size
        demo_pool = candidates[:need] if need else []
        if len(demo_pool) < space.max_shots:
            raise UserError(f"the {split} split has {len(demo_pool)} examples for demonstrations; "
                            f"the space asks for up to {space.max_shots}")
        taken = {ex.id for ex in demo_pool}
        search: list[Example] = []
        for s in self.config.search_splits:
            search += [ex for ex in ctx.task.examples(s) if not (s == split and ex.id in taken)]
        rng.shuffle(search)
        search = search[: self.config.search_examples]
        if len(search) < 2:
            raise UserError("fewer than 2 search examples left after the demonstration pool; "
                            "use more data or a smaller demos.pool_size")
        return demo_pool, search

    def _bind(self, ctx: SearchContext, space: SearchSpace, demo_pool, search, pool_file) -> BoundSpace:
        backend = ctx.backend
        dropped: list[str] = []
        verbalizers = {}
        probe = space.template_choices(ctx.task)
        for name, verb in space.verbalizer_choices(ctx.task).items():
            try:
                _try_scorer(ctx, probe, verb, self.config.scoring)
                verbalizers[name] = verb
            except UserError as exc:
                dropped.append(f"verbalizer {name}: {exc}")
        if TASK_VERBALIZER not in verbalizers:
            raise UserError(f"the task's own verbalizer cannot be scored by this model: {dropped}")
        templates = []
        for t in probe:
            try:
                PromptScorer(backend, ctx.task, t, ctx.task.verbalizer,
                             rule=self.config.scoring).engine()  # the rule can read it
                templates.append(t)
            except UserError as exc:
                dropped.append(f"template {t!r}: {exc}")
        if not templates:
            raise UserError("no template of the space can be read by this model: " + "; ".join(dropped))
        for d in dropped:
            log.warning("left out of the space: %s", d)
        if pool_file is not None and pool_file.is_file():
            pool = TriggerPool.from_dict(json.loads(pool_file.read_text()))
        elif space.max_trigger_slots or any(Template.parse(t).num_triggers for t in templates):
            pool = build_pool(backend, ctx.task, space, search, templates, list(verbalizers.values()))
        else:
            pool = TriggerPool((), (), "none")
        if pool_file is not None:
            write_json(pool_file, pool.to_dict())
        return BoundSpace(space, templates, verbalizers, space.instructions, demo_pool, pool, dropped,
                          self.config.scoring)

    def _sampler(self, n_done: int) -> optuna.samplers.BaseSampler:
        seed = self.seed + n_done  # a resumed run reseeds past the trials it already has
        if self.config.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                              n_startup_trials=self.config.startup_trials)
        if self.config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.config.population)
        return optuna.samplers.RandomSampler(seed=seed)

    def _storage(self, ctx: SearchContext):
        kind = self.config.storage
        if kind == "memory" or (kind == "journal" and ctx.run is None):
            if ctx.resume:
                raise UserError("--resume needs a stored study; use --storage journal or an RDB URL")
            return optuna.storages.InMemoryStorage()
        if kind == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(str(ctx.run.path / "study.journal")))
        if "://" in kind:
            try:
                return optuna.storages.RDBStorage(kind)
            except ImportError as exc:
                raise UserError(f"--storage {kind}: a database driver is missing ({exc})") from None
        raise UserError(f"--storage {kind!r}: use journal, memory or a database URL such as "
                        "postgresql://user@host/db or sqlite:///study.db")

    # --- the search ---------------------------------------------------------------------
    def search(self, ctx: SearchContext) -> PromptResult:
        cfg = self.config
        space = self._space(ctx)
        config = self.resolved_config(ctx)
        if ctx.run is not None:
            ctx.run.start(config, ctx.resume, self.resumable_keys())
        if ctx.resume and cfg.storage == "journal" and not (ctx.run.path / "study.journal").exists():
            raise UserError(f"--resume: {ctx.run.path} has no study.journal to continue")
        demo_pool, search = self._examples(ctx, space)
        pool_file = ctx.run.path / "pool.json" if ctx.run is not None else None
        bound = self._bind(ctx, space, demo_pool, search, pool_file)
        study_name = cfg.study_name or (ctx.run.path.name if ctx.run is not None else "autoprompt")
        storage = self._storage(ctx)
        exists = study_name in {s.study_name for s in optuna.get_all_study_summaries(storage)} \
            if not isinstance(storage, optuna.storages.InMemoryStorage) else False
        shared = "://" in cfg.storage  # a database study that several coordinators may share
        if exists and not ctx.resume and not shared:
            raise UserError(f"the storage already holds a study '{study_name}'; pass --resume to "
                            "continue it or choose another --study-name")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        n_done = 0
        if exists:
            n_done = sum(counted(t) for t in optuna.load_study(study_name=study_name,
                                                               storage=storage).trials)
        with warnings.catch_warnings():  # WilcoxonPruner is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            pruner = (optuna.pruners.WilcoxonPruner(p_threshold=cfg.p_threshold)
                      if cfg.pruner == "wilcoxon" else optuna.pruners.NopPruner())
        study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                    sampler=self._sampler(n_done), pruner=pruner,
                                    load_if_exists=exists)
        if exists and not shared:
            self._recover(study)  # (RUNNING trials of a shared study may be another coordinator's)
        elif not exists:
            for t in bound.templates:
                human = next((p.name or p.template for p in ctx.task.prompts if p.template == t), None)
                if human is not None or t == ctx.template:
                    study.enqueue_trial(bound.human_params(t),
                                        user_attrs={"human": human or "--template"})
        if ctx.run is not None:
            self._rewrite_log(ctx, study)
        recipe = worker_recipe(ctx, cfg)
        start = time.perf_counter()
        with make_pool(cfg.workers, backend=ctx.backend, recipe=recipe, task=ctx.task,
                       batch_size=cfg.batch_size, address=cfg.ray_address or None,
                       per_actor=cfg.per_actor) as pool:
            stats = self._loop(ctx, study, bound, search, pool)
            stats["workers"] = pool.workers
            stats["restarts"] = getattr(pool, "restarts", 0)
            stats["lost_jobs"] = getattr(pool, "lost_jobs", 0)
        stats["seconds"] = round(time.perf_counter() - start, 2)
        finished = [t for t in study.get_trials(deepcopy=False) if counted(t)]  # over all sessions
        stats["pruned"] = sum(t.state == TrialState.PRUNED for t in finished)
        stats["failed"] = sum(t.state == TrialState.FAIL for t in finished)
        result = self._export(ctx, study, bound, search, config, stats)
        if ctx.run is not None:
            if cfg.plots:
                result.extra["plots"] = save_plots(study, ctx.run.path)
            write_json(ctx.run.path / "trials.json", [_record(t, i) for i, t in
                                                      enumerate(_finished(study), 1)])
            ctx.run.save_result(result)  # (until this strategy runs on the base loop)
        return result

    def _recover(self, study: optuna.Study) -> None:
        """Trials left running by a killed run: mark failed and queue their params again."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={k: v for k, v in t.user_attrs.items()
                                                      if k == "human"})

    def _loop(self, ctx, study, bound: BoundSpace, search: list[Example], pool) -> dict[str, Any]:
        cfg = self.config
        done = sum(counted(t) for t in study.trials)
        best = _best_value(study)
        active: dict[int, _TrialRun] = {}
        requeue: deque[Job] = deque()
        pruned = failed = 0
        bar = tqdm(total=cfg.trials, initial=min(done, cfg.trials), desc="trials", unit="trial",
                   disable=not ctx.progress)
        if best is not None:
            bar.set_postfix(best=f"{best:.3f}")
        chunk = cfg.batch_size

        def next_job() -> Job | None:
            while requeue:
                job = requeue.popleft()
                if job.trial in active:
                    return job
            for run in active.values():
                if run.pending:
                    return run.pending.popleft()
            if done + len(active) >= cfg.trials:
                return None
            trial = study.ask()
            try:
                design = bound.design(lambda name, dist: _suggest(trial, name, dist))
            except UserError as exc:
                finish(trial, None, TrialState.FAIL, str(exc))
                return next_job()
            order = random.Random(f"{self.seed}-{trial.number}").sample(range(len(search)), len(search))
            jobs = deque(Job(trial.number, k, design, tuple(order[i:i + chunk]),
                             tuple(search[j] for j in order[i:i + chunk]))
                         for k, i in enumerate(range(0, len(order), chunk)))
            active[trial.number] = _TrialRun(trial, design, jobs, len(jobs),
                                             trial.user_attrs.get("human"))
            return next_job()

        def finish(trial, run: _TrialRun | None, state, error: str | None = None, value=None) -> None:
            nonlocal done, best, pruned, failed
            if error is not None:
                trial.set_user_attr("error", error[:500])
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            active.pop(trial.number, None)
            done += 1
            pruned += state == TrialState.PRUNED
            failed += state == TrialState.FAIL
            if value is not None and (best is None or value > best):
                best = value
            if ctx.run is not None:
                frozen = study._storage.get_trial(trial._trial_id)
                ctx.run.log(_record(frozen, done))
                ctx.run.save_checkpoint({"trials_done": done, "best_value": best,
                                         "study_name": study.study_name})
            bar.update(1)
            bar.set_postfix(best=f"{best:.3f}" if best is not None else "-", pruned=pruned)

        def handle(out: Outcome) -> None:
            run = active.get(out.job.trial)
            if run is None:  # the trial was pruned or failed while this job was in flight
                return
            if out.lost:
                if out.job.attempts >= MAX_JOB_ATTEMPTS:
                    finish(run.trial, run, TrialState.FAIL,
                           f"a job was lost {out.job.attempts} times (workers kept dying)")
                else:
                    requeue.append(out.job)
                return
            if out.error is not None:
                finish(run.trial, run, TrialState.FAIL, str(out.error))
                return
            if out.job.chunk in run.done:  # never count a chunk twice
                return
            run.done[out.job.chunk] = out.scores
            for step, score in zip(out.job.steps, out.scores):
                run.trial.report(score, step)
            run.steps += len(out.scores)
            if len(run.done) == run.chunks:
                scores = [s for c in sorted(run.done) for s in run.done[c]]
                run.trial.set_user_attr("examples", len(scores))
                finish(run.trial, run, TrialState.COMPLETE, value=sum(scores) / len(scores))
            elif run.human is None and run.trial.should_prune():
                scores = [s for c in run.done.values() for s in c]
                run.trial.set_user_attr("examples", run.steps)
                run.trial.set_user_attr("partial_accuracy", sum(scores) / len(scores))
                finish(run.trial, run, TrialState.PRUNED)

        loop_start = time.perf_counter()
        while True:
            while pool.free_slots > 0:
                job = next_job()
                if job is None:
                    break
                pool.submit(job)
            if pool.in_flight == 0 and pool.free_slots > 0:
                break  # nothing in flight and nothing left to submit
            for out in pool.poll():
                handle(out)
        bar.close()
        return {"trials_done": done, "pruned": pruned, "failed": failed,
                "loop_seconds": round(time.perf_counter() - loop_start, 3)}

    # --- export -------------------------------------------------------------------------
    def _export(self, ctx, study, bound: BoundSpace, search, config, stats) -> PromptResult:
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
        return PromptResult(
            task=task_reference(ctx.task), template=design.template, prompt=template.render(tokens),
            model=ctx.model, strategy=self.name, seed=self.seed, verbalizer=design.verbalizer,
            trigger_ids=list(design.triggers), trigger_tokens=tokens, fewshot=fewshot,
            scoring=design.rule, scores=scores, config=config,
            extra={"trial": best.number, "params": best.params, **stats,
                   "best_human": best_human.user_attrs["human"] if best_human else None,
                   "space": bound.space.source, "trigger_pool": {"source": bound.pool.source,
                                                                 "size": len(bound.pool.token_ids)},
                   "left_out": bound.dropped, "search_example_ids": [ex.id for ex in search]},
        )

    def _rewrite_log(self, ctx, study) -> None:
        """log.jsonl rebuilt from the study (the study is the record a killed run keeps)."""
        ctx.run.log_path.write_text("")
        for i, t in enumerate(_finished(study), 1):
            ctx.run.log(_record(t, i))


def _try_scorer(ctx, templates, verbalizer, rule: str = "direct") -> None:
    errors = []
    for t in templates:
        try:
            PromptScorer(ctx.backend, ctx.task, t, verbalizer, rule=rule).engine()
            return
        except UserError as exc:
            errors.append(exc)
    raise errors[-1]


def _finished(study) -> list:
    done = [t for t in study.get_trials(deepcopy=False) if counted(t)]
    return sorted(done, key=lambda t: (t.datetime_complete or t.datetime_start, t.number))


def _best_value(study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


def _record(t: optuna.trial.FrozenTrial, step: int) -> dict[str, Any]:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    value = t.value if t.state == TrialState.COMPLETE else None
    return {"step": step, "trial": t.number, "state": t.state.name, "value": value,
            "partial_accuracy": t.user_attrs.get("partial_accuracy"),
            "examples": t.user_attrs.get("examples"), "human": t.user_attrs.get("human"),
            "error": t.user_attrs.get("error"), "seconds": seconds, "params": t.params}


def _file_hash(path: str) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None


def save_plots(study: optuna.Study, folder: Path) -> dict[str, str]:
    """Optimisation history and parameter importances as PNG files (headless Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out: dict[str, str] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {"optimization_history.png": ovm.plot_optimization_history}
    varied = {k for t in complete for k in t.params if len({str(s.params.get(k)) for s in complete}) > 1}
    if len(complete) >= 2 and varied:
        plots["param_importances.png"] = ovm.plot_param_importances
    else:
        out["param_importances.png"] = "skipped: fewer than 2 completed trials with varied params"
    for name, fn in plots.items():
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = fn(study)
        except (ValueError, RuntimeError) as exc:  # optuna refuses (e.g. one distinct value)
            out[name] = f"skipped: {exc}"
            continue
        ax.figure.tight_layout()
        ax.figure.savefig(folder / name, dpi=100)
        plt.close(ax.figure)
        out[name] = str(folder / name)
    return out


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
