"""Deterministic trial scheduling for the black-box search, and resume by replay.

The sampler's proposals depend on what the study holds when ``ask()`` is called, so
for a fixed seed to give fixed trials the coordinator's asks and tells must happen in
an order that does not depend on which worker finishes first:

* at most ``window`` trials are in flight; a new trial is asked only right after a
  tell (or at the start), never when a worker happens to become free;
* results are buffered, and only the oldest trial in flight (the *head*) is processed:
  its chunks are reported in chunk order, the pruner is asked after each, and it is
  told as soon as it completes, is pruned or fails. Trials are therefore told in trial
  number order, and each trial records how many trials had been told when it was
  asked (``told_before``, a system attribute).

The sampler thus sees the same history at every ``ask()`` whatever the number of
workers and the timing, as long as ``window`` is the same. :func:`replay` uses the
record to resume a killed run exactly: it re-runs the stored asks and tells on an
in-memory copy of the study, which brings a fresh sampler to the state the killed run
had (TPE, NSGA-II and random samplers are deterministic given their seed and the
history), and returns the trials that were in flight so they can be re-scored.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..core.data import Example
from ..core.errors import UserError
from .workers import Design, Job, Outcome

TOLD_BEFORE = "autoprompt_search:told_before"  # trial system attr: trials told when it was asked
MAX_JOB_ATTEMPTS = 5  # a job lost this many times (worker deaths) fails its trial


@dataclass
class TrialRun:
    """A trial in flight: its jobs and the results that came back (in any order)."""

    trial: optuna.Trial
    human: str | None
    jobs: list[Job]
    pending: deque[Job]
    reported: set[int] = field(default_factory=set)  # steps already stored (a resumed trial)
    results: dict[int, list[float] | str] = field(default_factory=dict)  # chunk -> scores | error
    processed: int = 0  # chunks reported, in chunk order
    scores: list[float] = field(default_factory=list)
    error: str | None = None


class TrialScheduler:
    """Asks trials in a fixed order, hands out their jobs, tells them in trial order.

    ``on_finish(frozen_trial)`` is called after each tell (log, checkpoint, progress).
    """

    def __init__(self, study: optuna.Study, *, design: Callable[[optuna.Trial], Design],
                 examples: Sequence[Example], seed: int, trials: int, window: int, chunk: int,
                 on_finish: Callable[[FrozenTrial], None]) -> None:
        self.study = study
        self._design = design
        self.examples = list(examples)
        self.seed = seed
        self.trials = trials
        self.window = window
        self.chunk = chunk
        self.on_finish = on_finish
        stored = study.get_trials(deepcopy=False)
        self.done = sum(_counted(t) for t in stored)
        self.told = sum(t.state.is_finished() for t in stored)
        self.active: dict[int, TrialRun] = {}  # trial number -> run, in asking order
        self.requeue: deque[Job] = deque()
        self.requeued = 0
        self.lost_trials = 0

    # --- trials in and out --------------------------------------------------------
    def start(self) -> None:
        """Fill the window, then process whatever the adopted trials allow."""
        self.fill()
        self.advance()

    def fill(self) -> None:
        while self.done + len(self.active) < self.trials and len(self.active) < self.window:
            self._ask()

    def _ask(self) -> None:
        trial = self.study.ask()
        self.study._storage.set_trial_system_attr(trial._trial_id, TOLD_BEFORE, self.told)
        self.adopt(trial, self._design)

    def adopt(self, trial: optuna.Trial, design: Callable[[optuna.Trial], Design],
              reported: set[int] | None = None) -> None:
        """Put a trial in flight: a new one, or one a killed run left running."""
        human = trial.user_attrs.get("human")
        try:
            built = design(trial)
        except UserError as exc:  # the design cannot be built: fails when its turn comes
            run = TrialRun(trial, human, [], deque(), error=str(exc))
        else:
            rng = random.Random(f"{self.seed}-{trial.number}")
            order = rng.sample(range(len(self.examples)), len(self.examples))
            jobs = [Job(trial.number, k, built, tuple(order[i:i + self.chunk]),
                        tuple(self.examples[j] for j in order[i:i + self.chunk]))
                    for k, i in enumerate(range(0, len(order), self.chunk))]
            run = TrialRun(trial, human, jobs, deque(jobs), set(reported or ()))
        self.active[trial.number] = run

    def next_job(self) -> Job | None:
        """A lost job first, then the oldest trial's next chunk; None when none is left."""
        while self.requeue:
            job = self.requeue.popleft()
            run = self.active.get(job.trial)
            if run is not None and run.error is None and job.chunk not in run.results:
                return job
        for run in self.active.values():
            if run.pending and run.error is None:
                return run.pending.popleft()
        return None

    def handle(self, out: Outcome) -> None:
        run = self.active.get(out.job.trial)
        if run is None or run.error is not None or out.job.chunk in run.results:
            return  # a late result for a finished trial, or a chunk already in (never twice)
        if out.lost:
            if out.job.attempts >= MAX_JOB_ATTEMPTS:
                run.error = f"a job was lost {out.job.attempts} times (workers kept dying)"
                run.pending.clear()
            else:
                self.requeue.append(out.job)
                self.requeued += 1
            return
        if out.error is not None:  # a design that cannot be scored: later chunks are not needed
            run.results[out.job.chunk] = str(out.error)
            run.pending = deque(j for j in run.pending if j.chunk < out.job.chunk)
        else:
            run.results[out.job.chunk] = list(out.scores or [])
        self.advance()

    def advance(self) -> None:
        """Process the head trial; tell it when it is decided and let the next one in."""
        while self.active:
            run = next(iter(self.active.values()))
            state = self._process(run)
            if state is None:
                return
            self._finish(run, state)
            self.fill()

    def _process(self, run: TrialRun) -> TrialState | None:
        if run.error is not None:
            return TrialState.FAIL
        trial = run.trial
        while run.processed in run.results:
            result = run.results[run.processed]
            if isinstance(result, str):
                run.error = result
                return TrialState.FAIL
            job = run.jobs[run.processed]
            for step, score in zip(job.steps, result):
                if step not in run.reported:
                    trial.report(score, step)
            run.scores += result
            run.processed += 1
            if run.processed == len(run.jobs):
                trial.set_user_attr("examples", len(run.scores))
                return TrialState.COMPLETE
            if run.human is None and trial.should_prune():
                trial.set_user_attr("examples", len(run.scores))
                trial.set_user_attr("partial_accuracy", sum(run.scores) / len(run.scores))
                return TrialState.PRUNED
        return None

    def _finish(self, run: TrialRun, state: TrialState) -> None:
        trial = run.trial
        if run.error is not None:
            trial.set_user_attr("error", run.error[:500])
        value = sum(run.scores) / len(run.scores) if state == TrialState.COMPLETE else None
        self.study.tell(trial, value, state=state)
        del self.active[trial.number]
        self.done += 1
        self.told += 1
        self.on_finish(self.study._storage.get_trial(trial._trial_id))


def _counted(t: FrozenTrial) -> bool:
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and "error" in t.user_attrs)


# --- resume -----------------------------------------------------------------------------
@dataclass
class Frontier:
    """Where a replayed study stands: the trials that were in flight, as the replay asked them."""

    shadow: optuna.Study
    in_flight: list[FrozenTrial]  # the replay's copies, full params and system attrs


def replay(stored: Sequence[FrozenTrial], sampler: optuna.samplers.BaseSampler,
           design: Callable[[optuna.Trial], Any]) -> Frontier | None:
    """Re-run a stored study's asks and tells with ``sampler`` on an in-memory study.

    Returns None when the stored study was not made by this scheduler (an older
    version, a shared study) or the replay proposes other params than were stored;
    the caller then falls back to a reseeded sampler.
    """
    trials = sorted(stored, key=lambda t: t.number)
    asked = [t for t in trials if t.state != TrialState.WAITING]
    if any(t.state == TrialState.FAIL and "error" not in t.user_attrs for t in trials):
        return None  # re-queued interrupted trials: the old resume
    shadow = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=sampler,
                                 direction="maximize")
    for t in trials:
        if "fixed_params" in t.system_attrs:  # enqueued (the human prompts), in the same order
            human = {k: v for k, v in t.user_attrs.items() if k == "human"}
            shadow.enqueue_trial(t.system_attrs["fixed_params"], user_attrs=human)
    storage = shadow._storage
    active: deque[tuple[optuna.Trial, FrozenTrial]] = deque()
    told = i = 0
    while True:
        while i < len(asked) and _told_before(asked[i], i == len(asked) - 1, trials) == told:
            t = asked[i]
            s = shadow.ask()
            storage.set_trial_system_attr(s._trial_id, TOLD_BEFORE, told)
            try:
                design(s)
            except UserError:
                pass  # the stored trial failed the same way (its params say how far it got)
            if s.number != t.number or not _same_params(s.params, t):
                return None
            active.append((s, t))
            i += 1
        if not active or not active[0][1].state.is_finished():
            break
        s, t = active.popleft()
        for step, value in t.intermediate_values.items():
            storage.set_trial_intermediate_value(s._trial_id, step, value)
        for key, value in t.user_attrs.items():
            storage.set_trial_user_attr(s._trial_id, key, value)
        shadow.tell(s, t.value if t.state == TrialState.COMPLETE else None, state=t.state)
        told += 1
    if i < len(asked):
        return None  # stored trials the replay would not have asked
    return Frontier(shadow, [storage.get_trial(s._trial_id) for s, _ in active])


def _told_before(t: FrozenTrial, last: bool, trials: Sequence[FrozenTrial]) -> int | None:
    if TOLD_BEFORE in t.system_attrs:
        return t.system_attrs[TOLD_BEFORE]
    # killed between ask() and writing the attribute: nothing was told after it was asked
    return sum(s.state.is_finished() for s in trials) if last else None


def _same_params(params: dict[str, Any], stored: FrozenTrial) -> bool:
    """The replay's params agree with the stored ones (a killed ask may have stored fewer)."""
    if stored.state.is_finished() and set(params) != set(stored.params):
        return False
    return all(k in params and params[k] == v for k, v in stored.params.items())


def align(storage: optuna.storages.BaseStorage, study_id: int, frontier: Frontier,
          stored: Sequence[FrozenTrial]) -> None:
    """Make the stored in-flight trials match the replay's: params a killed ``ask()``
    never wrote, system attributes (a sampler's own, ``told_before``)."""
    by_number = {t.number: t for t in stored}
    for s in frontier.in_flight:
        t = by_number[s.number]
        for name, dist in s.distributions.items():
            if name not in t.params:
                storage.set_trial_param(t._trial_id, name, dist.to_internal_repr(s.params[name]), dist)
        for key, value in s.system_attrs.items():
            if t.system_attrs.get(key) != value:
                storage.set_trial_system_attr(t._trial_id, key, value)
    shadow = frontier.shadow
    have = storage.get_study_system_attrs(study_id)
    for key, value in shadow._storage.get_study_system_attrs(shadow._study_id).items():
        if key not in have:
            storage.set_study_system_attr(study_id, key, value)
