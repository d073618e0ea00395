"""Scoring prompt designs: in the coordinator's process, or on a pool of Ray actors.

The black-box coordinator cuts each trial into jobs (one design, a chunk of
examples) and hands them to a :class:`WorkerPool`:

* :class:`InProcessPool` (``--workers 1``) scores jobs with the already-loaded model,
  one at a time, without starting Ray (Ray's start costs seconds and ~500 MB);
* :class:`RayPool` keeps one actor per worker (each loads the model once) with about
  two jobs in flight per actor, on the local machine or on a cluster
  (``ray_address="auto"`` or ``HOST:PORT``). An actor or node that dies mid-job gives
  back a *lost* outcome: the coordinator re-queues the job on a live actor, and the
  pool starts a replacement actor where the cluster still has room.

A job's ``kind`` says what it returns: ``correct`` (the black-box search: one 0/1 score per
example) or ``words`` (the ``auto`` search: each example's log-probability of every label word
of the design's verbalizer, ``[n, W]``, from which verbalizers and calibrations are chosen
without another pass).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.data import Example
from ..core.errors import UserError
from ..core.tasks import Task
from ..models import LMBackend, load_model, wrap_model
from ..models.encoding import FewShot
from ..scoring.calibration import DEFAULT_PREMISE, Calibration, CalibrationRecord, resolve_calibration
from ..scoring.evaluation import evaluate_examples
from ..scoring.scorer import PromptScorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Design:
    """One prompt design: template (with its [T] slots), trigger ids, verbalizer, few-shot framing."""

    template: str
    verbalizer: dict[str, list[str]]
    triggers: tuple[int, ...] = ()
    instruction: str = ""
    demos: tuple[Example, ...] = ()
    separator: str = "\n"
    rule: str = "direct"  # the scoring rule (ScoringRule)

    @property
    def fewshot(self) -> FewShot | None:
        if not self.instruction and not self.demos:
            return None
        return FewShot(self.instruction, self.demos, self.separator)

    @property
    def key(self) -> str:
        return json.dumps([self.template, self.verbalizer, list(self.triggers), self.instruction,
                           [d.id for d in self.demos], self.separator, self.rule])


@dataclass
class Job:
    """A chunk of one trial's examples to score with the trial's design."""

    trial: int
    chunk: int
    design: Design
    steps: tuple[int, ...]  # fixed example ids (positions in the search set), reported to the pruner
    examples: tuple[Example, ...]
    attempts: int = 0
    kind: str = "correct"  # correct: 0/1 per example; words: [n, W] label-word log-probs


@dataclass
class Outcome:
    job: Job
    scores: list | None = None  # correct: one per example (1.0 / 0.0); words: [n, W] log-probs
    error: UserError | None = None  # the design cannot be scored (bad template for this model, ...)
    lost: bool = False  # the worker died: re-queue the job


class DesignEvaluator:
    """Scores designs on example chunks with one backend (keeps a few scorers cached).

    With ``calibration``, each design's offsets are estimated once (its first chunk) and every
    chunk of it is scored with them."""

    def __init__(self, backend: LMBackend, task: Task, batch_size: int = 32, cache: int = 8,
                 calibration: Calibration | str = Calibration.NONE,
                 premise: str = DEFAULT_PREMISE) -> None:
        self.backend = backend
        self.task = task
        self.batch_size = batch_size
        self.calibration = Calibration.parse(calibration)
        self.premise = premise
        self._scorers: OrderedDict[str, PromptScorer] = OrderedDict()
        self._records: dict[str, CalibrationRecord | None] = {}
        self._cache = cache

    def scorer(self, design: Design) -> PromptScorer:
        key = design.key
        if key not in self._scorers:
            self._scorers[key] = PromptScorer(self.backend, self.task, design.template,
                                              design.verbalizer, design.fewshot, self.batch_size,
                                              design.rule)
            while len(self._scorers) > self._cache:
                old, _ = self._scorers.popitem(last=False)
                self._records.pop(old, None)
        self._scorers.move_to_end(key)
        return self._scorers[key]

    def record(self, design: Design) -> CalibrationRecord | None:
        """The design's calibration (estimated once per design; None without calibration)."""
        scorer = self.scorer(design)
        if design.key not in self._records:
            self._records[design.key] = resolve_calibration(self.calibration, scorer,
                                                            design.triggers, self.premise)
        return self._records[design.key]

    def score(self, design: Design, examples: Sequence[Example]) -> list[float]:
        ev = evaluate_examples(self.scorer(design), list(examples), design.triggers, "search",
                               calibration=self.record(design))
        return ev.correct.astype(float).tolist()

    def word_scores(self, design: Design, examples: Sequence[Example]) -> list[list[float]]:
        """``[n, W]``: each example's log-probability of every label word of the design's
        verbalizer (classes in task order, words in verbalizer order; labels unused)."""
        scorer = self.scorer(design)
        engine = scorer.engine()
        batch = engine.encode(list(examples), design.triggers, gold=[-1] * len(examples))
        return engine.word_logprobs(batch).float().cpu().tolist()

    def run(self, job: Job) -> list:
        """What ``job`` asks for (its ``kind``)."""
        if job.kind == "words":
            return self.word_scores(job.design, job.examples)
        return self.score(job.design, job.examples)


@dataclass
class BackendRecipe:
    """How a worker gets its own copy of the model: load by spec, or unpickle a given model.

    A backend whose name is loadable (an alias or a model folder) travels as its spec,
    never as its weights; an in-memory model travels as a CPU copy and is moved to
    ``device`` in the worker. ``num_gpus`` is what each Ray actor asks for."""

    spec: str
    dtype: str = "float32"
    device: str | None = None
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    num_gpus: float = 0.0

    @classmethod
    def from_backend(cls, backend: LMBackend, num_gpus: float = 0.0) -> BackendRecipe:
        from ..core.devices import dtype_name
        from ..models.loading import is_loadable

        dtype, device = dtype_name(backend.dtype), str(backend.device)
        if is_loadable(backend.name):
            return cls(backend.name, dtype, device, num_gpus=num_gpus)
        model = backend.model
        if backend.device.type != "cpu":  # never pickle accelerator tensors into a worker
            import copy

            model = copy.deepcopy(model).cpu()
        return cls(backend.name, dtype, device, model=model, tokenizer=backend.tokenizer,
                   num_gpus=num_gpus)

    def build(self) -> LMBackend:
        if self.model is not None:
            from ..core.devices import resolve_device

            where = resolve_device(self.device or "cpu")
            model = self.model if where.type == "cpu" else self.model.to(where)
            return wrap_model(model, self.tokenizer, name=self.spec)
        return load_model(self.spec, dtype=self.dtype, device=self.device)


class WorkerPool(ABC):
    """Runs jobs and hands back their outcomes."""

    @property
    @abstractmethod
    def free_slots(self) -> int:
        """How many more jobs may be submitted now."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Jobs submitted and not yet handed back."""

    @property
    def workers(self) -> int:
        return 1

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    @abstractmethod
    def poll(self) -> list[Outcome]:
        """Wait for at least one outcome (if any job is in flight) and return those ready."""

    def close(self) -> None:
        pass

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessPool(WorkerPool):
    """Scores in the coordinator's own process, one job at a time (no Ray)."""

    def __init__(self, evaluator: DesignEvaluator) -> None:
        self.evaluator = evaluator
        self._queue: list[Job] = []

    @property
    def free_slots(self) -> int:
        return 0 if self._queue else 1

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def poll(self) -> list[Outcome]:
        if not self._queue:
            return []
        job = self._queue.pop(0)
        try:
            return [Outcome(job, scores=self.evaluator.run(job))]
        except UserError as exc:
            return [Outcome(job, error=exc)]


# --- Ray ------------------------------------------------------------------------------
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage-stats upload
}


@contextlib.contextmanager
def _env_defaults(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables that are unset, for the block only (the Ray processes
    started inside it inherit them; this process's environment is restored after)."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` ("auto" or HOST:PORT) or start a local Ray on loopback.

    Returns whether this call started or joined Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING}
    try:
        with _env_defaults(RAY_ENV):
            if address:
                ray.init(address=address, **kwargs)
            else:  # a private Ray on this machine, bound to loopback ("local": never join a
                # cluster another process started here, which ray.init() would otherwise do)
                ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
                         **kwargs)
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address!r}: {exc}. Start it with "
                        "`ray start --head` (and `ray start --address=HEAD:6379` on other machines), "
                        "or leave out --ray-address to run on this machine") from None
    return True


def _actor_class():
    import ray

    @ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)
    class ScoringActor:
        """Loads the model once and scores jobs for the coordinator."""

        def __init__(self, recipe: BackendRecipe, task: Task, batch_size: int, threads: int,
                     calibration: str = "none", premise: str = DEFAULT_PREMISE) -> None:
            torch.set_num_threads(max(1, threads))
            self.evaluator = DesignEvaluator(recipe.build(), task, batch_size,
                                             calibration=calibration, premise=premise)

        def ready(self) -> tuple[int, str]:
            """(process id, node id): where this actor runs."""
            return os.getpid(), ray.get_runtime_context().get_node_id()

        def score(self, design: Design, examples: Sequence[Example]) -> list[float]:
            return self.evaluator.score(design, examples)

        def word_scores(self, design: Design, examples: Sequence[Example]) -> list[list[float]]:
            return self.evaluator.word_scores(design, examples)

    return ScoringActor


@dataclass
class _Actor:
    handle: Any
    ready_ref: Any
    ready: bool = False
    jobs: dict[Any, Job] = field(default_factory=dict)  # object ref -> job
    pid: int | None = None  # set once it is up
    node: str | None = None


class RayPool(WorkerPool):
    """A pool of Ray actors with ``per_actor`` jobs in flight each; dead actors are replaced."""

    def __init__(self, recipe: BackendRecipe, task: Task, workers: int, *, batch_size: int = 32,
                 per_actor: int = 2, address: str | None = None, cpus_per_worker: int = 1,
                 start_timeout: float = 300.0, calibration: Calibration | str = Calibration.NONE,
                 premise: str = DEFAULT_PREMISE) -> None:
        import ray

        self._ray = ray
        self.owns_ray = init_ray(address, num_cpus=None)
        self.target = workers
        self.per_actor = per_actor
        self.cpus = cpus_per_worker
        self.start_timeout = start_timeout
        self.num_gpus = recipe.num_gpus
        self._cls = _actor_class().options(**self.actor_options())
        self._recipe = ray.put(recipe)
        self._task = ray.put(task)
        self._batch_size = batch_size
        self._calibration = (Calibration.parse(calibration).value, premise)
        self.actors: list[_Actor] = []
        self.restarts = 0
        self.lost_jobs = 0
        for _ in range(workers):
            self._start_actor()
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Block until every first actor has loaded its model (so timings measure scoring)."""
        ray = self._ray
        refs = {a.ready_ref: a for a in self.actors}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.start_timeout)
        if not ready:
            self.close()
            raise UserError(f"no Ray worker started within {self.start_timeout:.0f} s; the cluster "
                            "may lack free CPUs (`ray status`)")
        for ref in ready:
            refs[ref].pid, refs[ref].node = ray.get(ref)  # a failed model load raises here
            refs[ref].ready = True

    # --- actors -------------------------------------------------------------------
    def actor_options(self) -> dict[str, Any]:
        """Ray options of every actor (resources, placement)."""
        return {"num_cpus": self.cpus, "num_gpus": self.num_gpus, "scheduling_strategy": "SPREAD"}

    def _start_actor(self) -> None:
        handle = self._cls.remote(self._recipe, self._task, self._batch_size, self.cpus,
                                  *self._calibration)
        self.actors.append(_Actor(handle, handle.ready.remote()))

    def _alive_cpus(self) -> float:
        return sum(n.get("Resources", {}).get("CPU", 0) for n in self._ray.nodes() if n.get("Alive"))

    def _replace(self, dead: _Actor) -> None:
        """Drop a dead actor and start a new one if the live nodes have room for it."""
        if dead not in self.actors:
            return
        self.actors.remove(dead)
        self._ray.kill(dead.handle, no_restart=True)
        if (len(self.actors) + 1) * self.cpus <= self._alive_cpus():
            self._start_actor()
            self.restarts += 1
            log.warning("a Ray worker died; started a replacement (%d restarts)", self.restarts)
        else:
            log.warning("a Ray worker died and the cluster has no room for a replacement; "
                        "continuing with %d workers", len(self.actors))
        if not self.actors:
            raise UserError("every Ray worker died and none can be restarted; check the cluster "
                            "(`ray status`) and continue the run with --resume")

    @property
    def workers(self) -> int:
        """Actors that are up (a replacement waiting for a free CPU does not count)."""
        return sum(a.ready for a in self.actors)

    @property
    def free_slots(self) -> int:
        return sum(self.per_actor - len(a.jobs) for a in self.actors if a.ready)

    @property
    def in_flight(self) -> int:
        return sum(len(a.jobs) for a in self.actors)

    def in_flight_by_node(self) -> dict[str, int]:
        """Jobs handed to the actors of each node (node id -> count), actors that are up only."""
        counts: Counter[str] = Counter()
        for actor in list(self.actors):
            if actor.node is not None:
                counts[actor.node] += len(actor.jobs)
        return dict(counts)

    def submit(self, job: Job) -> None:
        ready = [a for a in self.actors if a.ready and len(a.jobs) < self.per_actor]
        if not ready:
            raise RuntimeError("submit() with no free slot")
        actor = min(ready, key=lambda a: len(a.jobs))
        method = actor.handle.word_scores if job.kind == "words" else actor.handle.score
        actor.jobs[method.remote(job.design, job.examples)] = job

    def poll(self) -> list[Outcome]:
        ray = self._ray
        waiting = {a.ready_ref: a for a in self.actors if not a.ready}
        jobs = {ref: a for a in self.actors for ref in a.jobs}
        if not waiting and not jobs:
            return []
        timeout = None if jobs else self.start_timeout
        ready, _ = ray.wait(list(waiting) + list(jobs), num_returns=1, timeout=timeout)
        if not ready:
            raise UserError(f"no Ray worker started within {self.start_timeout:.0f} s; the "
                            "cluster may lack free CPUs (`ray status`)")
        # collect everything that is ready now, not just the first
        ready, _ = ray.wait(list(waiting) + list(jobs), num_returns=len(waiting) + len(jobs),
                            timeout=0)
        outcomes: list[Outcome] = []
        for ref in ready:
            if ref in waiting:
                actor = waiting[ref]
                try:
                    actor.pid, actor.node = ray.get(ref)
                    actor.ready = True
                except ray.exceptions.RayError as exc:  # the actor could not start
                    if isinstance(exc, UserError):
                        raise
                    self._replace(actor)
                continue
            actor = jobs[ref]
            if ref not in actor.jobs:  # already handed back as lost with its dead actor
                continue
            job = actor.jobs.pop(ref)
            try:
                outcomes.append(Outcome(job, scores=ray.get(ref)))
            except UserError as exc:  # raised by the design, not by a crash
                outcomes.append(Outcome(job, error=exc))
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError):
                # the actor is gone: this job and every other job it held go back to the queue
                lost = [job, *actor.jobs.values()]
                actor.jobs.clear()
                for j in lost:
                    self.lost_jobs += 1
                    j.attempts += 1
                    outcomes.append(Outcome(j, lost=True))
                self._replace(actor)
        return outcomes

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor.handle, no_restart=True)
        self.actors = []
        if self.owns_ray:
            self._ray.shutdown()


def make_pool(workers: int, *, backend: LMBackend | None, recipe: BackendRecipe, task: Task,
              batch_size: int, address: str | None = None, per_actor: int = 2,
              calibration: Calibration | str = Calibration.NONE,
              premise: str = DEFAULT_PREMISE) -> WorkerPool:
    """``workers == 1`` without an address: in-process; else a Ray actor pool (every worker
    scores designs with ``calibration``)."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if workers == 1 and not address:
        return InProcessPool(DesignEvaluator(backend if backend is not None else recipe.build(),
                                             task, batch_size, calibration=calibration,
                                             premise=premise))
    start = time.perf_counter()
    pool = RayPool(recipe, task, workers, batch_size=batch_size, per_actor=per_actor, address=address,
                   calibration=calibration, premise=premise)
    log.info("Ray pool of %d workers requested in %.1f s", workers, time.perf_counter() - start)
    return pool
