"""A search space bound to one task and model: the choices a trial draws from.

:func:`bind_space` resolves a :class:`~autoprompt_search.core.spaces.SearchSpace`
against the task and the model (choices the model cannot read are left out, with the
reason), builds or reloads the trigger pool, and :func:`pick_examples` draws the
demonstration pool and the fixed search examples. :meth:`BoundSpace.design` turns a
trial's choices into a :class:`~autoprompt_search.search.workers.Design`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import optuna.distributions as od

from ..core.data import Example
from ..core.errors import UserError
from ..core.results import write_json
from ..core.spaces import TASK_VERBALIZER, SearchSpace, insert_triggers
from ..core.tasks import Task
from ..core.templates import Template
from ..models import LMBackend
from ..scoring.scorer import PromptScorer
from ..scoring.sequence import ScoringRule, scoring_rule
from .pools import TriggerPool, build_pool
from .workers import Design

log = logging.getLogger(__name__)

Getter = Callable[[str, od.BaseDistribution], Any]


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
    rule: str = ScoringRule.DIRECT.value  # the scoring rule of every design

    def design(self, get: Getter) -> Design:
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
        triggers: tuple[int, ...] = ()
        if n_slots:  # a space without [T] slots has an empty pool (no distribution to draw from)
            pool = od.CategoricalDistribution(list(self.pool.token_ids))
            triggers = tuple(int(get(f"trigger_{i}", pool)) for i in range(n_slots))
        return Design(template, self.verbalizers[verb_name], triggers, instruction,
                      tuple(by_id[i] for i in demo_ids), self.space.demos.separator, self.rule)

    def suggest(self, trial: optuna.Trial) -> Design:
        """The design of a trial, drawing each choice from the trial's sampler."""
        return self.design(lambda name, dist: suggest(trial, name, dist))

    def rebuild(self, params: dict[str, Any]) -> Design:
        """The design of a trial whose choices are known (a stored trial)."""
        return self.design(lambda name, dist: params[name])

    def human_params(self, template: str) -> dict[str, Any]:
        """Params that reproduce a human prompt as written (no instruction, demos, triggers)."""
        params: dict[str, Any] = {"template": template, "verbalizer": TASK_VERBALIZER,
                                  "instruction": "" if "" in self.instructions else self.instructions[0]}
        for name in ("shots", "trigger_slots"):
            dist = self.space.param(name)
            if isinstance(dist, od.BaseDistribution):
                params[name] = dist.low
        return params


def _choose(get: Getter, name: str, choices: list) -> Any:
    return choices[0] if len(choices) == 1 else get(name, od.CategoricalDistribution(choices))


def _draw(get: Getter, name: str, value: Any) -> Any:
    return get(name, value) if isinstance(value, od.BaseDistribution) else value


def suggest(trial: optuna.Trial, name: str, dist: od.BaseDistribution) -> Any:
    """``trial.suggest_*`` for a distribution given as an object."""
    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def pick_examples(task: Task, space: SearchSpace, splits: Sequence[str], count: int,
                  seed: int) -> tuple[list[Example], list[Example]]:
    """(demonstration pool, search examples): disjoint, seeded, never from test."""
    rng = random.Random(seed)
    split = space.demos.split
    candidates = task.examples(split)
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
    for s in splits:
        search += [ex for ex in task.examples(s) if not (s == split and ex.id in taken)]
    rng.shuffle(search)
    search = search[:count]
    if len(search) < 2:
        raise UserError("fewer than 2 search examples left after the demonstration pool; "
                        "use more data or a smaller demos.pool_size")
    return demo_pool, search


def bind_space(backend: LMBackend, task: Task, space: SearchSpace, demo_pool: list[Example],
               search: list[Example], pool_file: Path | None,
               rule: ScoringRule | str = ScoringRule.DIRECT) -> BoundSpace:
    """Resolve the space's choices for this model and scoring ``rule`` (a choice the rule
    cannot read is left out); build (or reload) the trigger pool."""
    rule = scoring_rule(rule)
    dropped: list[str] = []
    verbalizers = {}
    probe = space.template_choices(task)
    for name, verb in space.verbalizer_choices(task).items():
        try:
            _try_scorer(backend, task, probe, verb, rule)
            verbalizers[name] = verb
        except UserError as exc:
            dropped.append(f"verbalizer {name}: {exc}")
    if TASK_VERBALIZER not in verbalizers:
        raise UserError(f"the task's own verbalizer cannot be scored by this model: {dropped}")
    templates = []
    for t in probe:
        try:
            PromptScorer(backend, task, t, task.verbalizer, rule=rule).engine()  # the rule reads it
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
        pool = build_pool(backend, task, space, search, templates, list(verbalizers.values()))
    else:
        pool = TriggerPool((), (), "none")
    if pool_file is not None:
        write_json(pool_file, pool.to_dict())
    return BoundSpace(space, templates, verbalizers, space.instructions, demo_pool, pool, dropped,
                      rule.value)


def _try_scorer(backend: LMBackend, task: Task, templates: Sequence[str],
                verbalizer: dict[str, list[str]], rule: ScoringRule) -> None:
    errors = []
    for t in templates:
        try:
            PromptScorer(backend, task, t, verbalizer, rule=rule).engine()
            return
        except UserError as exc:
            errors.append(exc)
    raise errors[-1]
