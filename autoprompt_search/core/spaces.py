"""Black-box search spaces: data-only YAML describing the prompt designs to try.

A space file (``kind: space``) lists the choices a black-box search makes for one
task: templates (the task's human prompts plus variants), instructions, verbalizer
sets, few-shot demonstrations (how many, which, in what order) and trigger slots
filled from a candidate pool built by the tool. Numeric dimensions are Optuna
distributions with inclusive bounds::

    kind: space
    task: sst-2
    human_prompts: true              # the task's human prompts are template choices
    templates: ["{sentence} Overall, the film was [P] ."]
    instructions: ["", "Is this movie review positive or negative?"]
    verbalizers:                     # named sets; 'task' (the task's own) is always a choice
      good-bad: {negative: [bad], positive: [good]}
    params:
      shots: {type: int, low: 0, high: 4}           # low and high are both possible
      trigger_slots: {type: int, low: 0, high: 3}
      trigger_position: {type: categorical, choices: [before_predict, after_input, prefix]}
    demos: {split: train, pool_size: 8, per_class: true, separator: "\\n"}
    triggers: {pool: frequent, size: 200}

Unknown keys are errors that name the key and the file. ``load_space`` only reads
and checks the file; :meth:`SearchSpace.bind` resolves it against a task.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna.distributions as od

from .config import check_keys, load_yaml
from .errors import UserError, did_you_mean
from .resources import shipped_dir
from .tasks import Task
from .templates import Template
from .verbalizer import Verbalizer

SPACES_DIR = shipped_dir()
SPACE_KEYS = ("kind", "name", "description", "task", "human_prompts", "templates", "instructions",
              "verbalizers", "params", "demos", "triggers")
DEMO_KEYS = ("split", "pool_size", "per_class", "separator")
TRIGGER_KEYS = ("pool", "size", "words", "path", "min_chars", "template")
TRIGGER_POSITIONS = ("before_predict", "after_input", "prefix")


class PoolSource(str, enum.Enum):
    """Where a black-box trigger pool comes from (the builders are registered under these
    names in ``search/pools.py``)."""

    frequent = "frequent"
    label_search = "label_search"
    gradient = "gradient"
    words = "words"
    file = "file"


POOL_SOURCES = tuple(p.value for p in PoolSource)
MAX_POOL_SIZE = 2000  # TPE's ask() costs 300-770 ms per slot at 30k choices, ~14 ms at 1k
TASK_VERBALIZER = "task"

# param name -> (allowed distribution types, default value)
PARAMS: dict[str, tuple[tuple[str, ...], Any]] = {
    "shots": (("int",), 0),
    "trigger_slots": (("int",), 0),
    "trigger_position": (("categorical",), "before_predict"),
}


def parse_distribution(raw: Any, where: str) -> od.BaseDistribution | Any:
    """A YAML distribution as an Optuna distribution (inclusive bounds), or a fixed value.

    ``{type: int, low: 0, high: 4, step: 1, log: false}``, ``{type: float, low: 0.1,
    high: 1.0, step: null, log: false}`` and ``{type: categorical, choices: [...]}``;
    any scalar is a fixed value.
    """
    if not isinstance(raw, dict):
        if isinstance(raw, list):
            raise UserError(f"{where}: a list is not a distribution; write "
                            "{type: categorical, choices: [...]}")
        return raw
    kind = raw.get("type")
    if kind == "categorical":
        check_keys(raw, ("type", "choices"), where)
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: 'choices' must be a non-empty list")
        if any(c is not None and not isinstance(c, (bool, int, float, str)) for c in choices):
            raise UserError(f"{where}: categorical choices must be numbers, text, true/false or null")
        if len(set(map(repr, choices))) != len(choices):
            raise UserError(f"{where}: categorical choices repeat a value")
        return od.CategoricalDistribution(choices)
    if kind in ("int", "float"):
        check_keys(raw, ("type", "low", "high", "step", "log"), where)
        for key in ("low", "high"):
            if key not in raw:
                raise UserError(f"{where}: a {kind} distribution needs '{key}' (inclusive)")
        num = int if kind == "int" else float
        try:
            low, high = num(raw["low"]), num(raw["high"])
            step = raw.get("step")
            step = None if step is None else num(step)
        except (TypeError, ValueError):
            raise UserError(f"{where}: low, high and step must be numbers") from None
        if kind == "int" and any(isinstance(raw.get(k), float) and raw[k] != int(raw[k])
                                 for k in ("low", "high", "step") if raw.get(k) is not None):
            raise UserError(f"{where}: an int distribution needs whole numbers")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise UserError(f"{where}: 'log' must be true or false")
        if low > high:
            raise UserError(f"{where}: low ({low}) is above high ({high}); both bounds are inclusive")
        if step is not None:
            if step <= 0:
                raise UserError(f"{where}: step must be positive")
            if log:
                raise UserError(f"{where}: 'step' and 'log: true' cannot be combined")
            span = (high - low) / step
            if abs(span - round(span)) > 1e-9:
                raise UserError(f"{where}: high - low ({high - low}) is not a multiple of step "
                                f"({step}), so high could never be drawn")
        if log and low <= 0:
            raise UserError(f"{where}: 'log: true' needs low > 0")
        if kind == "int":
            return od.IntDistribution(low, high, log=log, step=step or 1)
        return od.FloatDistribution(low, high, log=log, step=step)
    raise UserError(f"{where}: 'type' must be int, float or categorical"
                    f"{did_you_mean(str(kind), ('int', 'float', 'categorical'))}")


def _dist_type(value: Any) -> str:
    if isinstance(value, od.IntDistribution):
        return "int"
    if isinstance(value, od.FloatDistribution):
        return "float"
    if isinstance(value, od.CategoricalDistribution):
        return "categorical"
    return "fixed"


def dist_values(value: Any) -> list[Any]:
    """Every value a (small) distribution or fixed value can take."""
    if isinstance(value, od.CategoricalDistribution):
        return list(value.choices)
    if isinstance(value, od.IntDistribution):
        return list(range(value.low, value.high + 1, value.step))
    return [value]


@dataclass(frozen=True)
class DemoSpec:
    split: str = "train"
    pool_size: int = 8
    per_class: bool = True  # round-robin over classes, so every class has demonstrations
    separator: str = "\n"


@dataclass(frozen=True)
class TriggerSpec:
    pool: str = "frequent"
    size: int = 200
    words: tuple[str, ...] = ()
    path: str | None = None
    min_chars: int = 3
    template: str | None = None  # template used by label_search / gradient pools


@dataclass
class SearchSpace:
    """A parsed space file (not yet bound to a model)."""

    task: str | None
    name: str = "space"
    description: str = ""
    human_prompts: bool = True
    templates: list[str] = field(default_factory=list)
    instructions: list[str] = field(default_factory=lambda: [""])
    verbalizers: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    demos: DemoSpec = field(default_factory=DemoSpec)
    triggers: TriggerSpec = field(default_factory=TriggerSpec)
    source: str = "<memory>"

    # --- derived views -----------------------------------------------------------
    def param(self, name: str) -> Any:
        return self.params.get(name, PARAMS[name][1])

    @property
    def max_shots(self) -> int:
        return max(dist_values(self.param("shots")))

    @property
    def max_trigger_slots(self) -> int:
        return max(dist_values(self.param("trigger_slots")))

    def template_choices(self, task: Task) -> list[str]:
        """Template sources: the task's human prompts (if asked for) then the space's own."""
        out = [p.template for p in task.prompts] if self.human_prompts else []
        for t in self.templates:
            if t not in out:
                out.append(t)
        return out

    def verbalizer_choices(self, task: Task) -> dict[str, dict[str, list[str]]]:
        return {TASK_VERBALIZER: task.verbalizer, **self.verbalizers}

    @property
    def task_is_file(self) -> bool:
        """Whether ``task`` names a task file (resolved against the space file) or a shipped task."""
        return self.task is not None and _is_task_path(self.task)

    def load_task(self, data_root: str | Path | None = None) -> Task:
        """The task the space is written for (a shipped name or a task file)."""
        if self.task is None:
            raise UserError(f"{self.source}: the space names no task; pass the task to check it on")
        return Task.load(self.task, data_root=data_root)

    def is_for(self, task: Task) -> bool:
        """Whether ``task`` is the space's task: the same name, or the same task file."""
        if self.task is None or self.task == task.name:
            return True
        return self.task_is_file and Path(self.task).resolve() == Path(task.source).resolve()

    def check_task(self, task: Task) -> None:
        """Check the task, templates, verbalizers and demo settings against ``task``."""
        if not self.is_for(task):
            hint = f"--task {self.task}"
            raise UserError(f"the space {self.source} is for task '{self.task}', but the search runs "
                            f"on '{task.name}' ({task.source}); pass {hint}")
        if task.is_open_vocabulary:
            raise UserError(f"{self.source}: black-box spaces need a classification task; "
                            f"'{task.name}' is open-vocabulary")
        if not self.template_choices(task):
            raise UserError(f"{self.source}: no templates: list some under 'templates' or set "
                            "human_prompts: true for a task with human prompts")
        for t in self.template_choices(task):
            Template.parse(t, task.fields)
        for name, verb in self.verbalizers.items():
            Verbalizer(verb).check_labels(task.labels, f"{self.source} (verbalizers.{name})")
        if self.max_shots > self.demos.pool_size:
            raise UserError(f"{self.source}: shots go up to {self.max_shots} but demos.pool_size "
                            f"is {self.demos.pool_size}; raise pool_size or lower shots")


def _str_list(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise UserError(f"{where}: expected a list of strings")
    if len(set(raw)) != len(raw):
        raise UserError(f"{where}: a choice is listed twice")
    return list(raw)


def _verbalizers(raw: Any, where: str) -> dict[str, dict[str, list[str]]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of names to verbalizers")
    out = {}
    for name, verb in raw.items():
        if str(name) == TASK_VERBALIZER:
            raise UserError(f"{where}: '{TASK_VERBALIZER}' is reserved for the task's own verbalizer")
        out[str(name)] = Verbalizer.parse(verb, where=f"{where}.{name}").to_dict()
    return out


def _is_task_path(task: str) -> bool:
    return Path(task).suffix in (".yaml", ".yml") or "/" in task


def _resolve_task(raw: Any, source: str) -> str | None:
    """The space's ``task``: a shipped name as written, a task file relative to the space file."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise UserError(f"{source}: 'task' is a shipped task name or a task YAML file")
    if _is_task_path(raw) and source != "<memory>":
        path = Path(raw).expanduser()
        return str(path if path.is_absolute() else Path(source).parent / path)
    return raw


def _positive_int(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise UserError(f"{where}: expected a positive whole number, got {raw!r}")
    return raw


def space_from_mapping(raw: dict[str, Any], source: str = "<memory>") -> SearchSpace:
    """Check and parse a space mapping (as read from YAML)."""
    check_keys(raw, SPACE_KEYS, source)
    if raw.get("kind", "space") != "space":
        raise UserError(f"{source}: kind is {raw.get('kind')!r}; a search space has kind: space")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise UserError(f"{source}: 'params' must be a mapping")
    check_keys(params_raw, PARAMS, f"{source} (params)")
    params = {}
    for name, value in params_raw.items():
        where = f"{source} (params.{name})"
        dist = parse_distribution(value, where)
        allowed, _ = PARAMS[name]
        kind = _dist_type(dist)
        if kind != "fixed" and kind not in allowed:
            raise UserError(f"{where}: expected a {' or '.join(allowed)} distribution, got {kind}")
        values = dist_values(dist)
        if name in ("shots", "trigger_slots") and any(
                isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise UserError(f"{where}: values must be whole numbers >= 0")
        if name == "trigger_position":
            for v in values:
                if v not in TRIGGER_POSITIONS:
                    raise UserError(f"{where}: {v!r} is not a trigger position"
                                    f"{did_you_mean(str(v), TRIGGER_POSITIONS)}; "
                                    f"use {', '.join(TRIGGER_POSITIONS)}")
        params[name] = dist
    demos_raw = raw.get("demos") or {}
    if not isinstance(demos_raw, dict):
        raise UserError(f"{source}: 'demos' must be a mapping")
    check_keys(demos_raw, DEMO_KEYS, f"{source} (demos)")
    demos = DemoSpec(
        split=str(demos_raw.get("split", "train")),
        pool_size=_positive_int(demos_raw.get("pool_size", 8), f"{source} (demos.pool_size)"),
        per_class=bool(demos_raw.get("per_class", True)),
        separator=str(demos_raw.get("separator", "\n")),
    )
    if demos.split not in ("train", "dev"):
        raise UserError(f"{source} (demos.split): demonstrations come from train or dev, not "
                        f"{demos.split!r} (the test split is never searched on)")
    trig_raw = raw.get("triggers") or {}
    if not isinstance(trig_raw, dict):
        raise UserError(f"{source}: 'triggers' must be a mapping")
    check_keys(trig_raw, TRIGGER_KEYS, f"{source} (triggers)")
    pool = str(trig_raw.get("pool", "frequent"))
    if pool not in POOL_SOURCES:
        raise UserError(f"{source} (triggers.pool): unknown pool '{pool}'"
                        f"{did_you_mean(pool, POOL_SOURCES)}; use {', '.join(POOL_SOURCES)}")
    size = _positive_int(trig_raw.get("size", 200), f"{source} (triggers.size)")
    if size > MAX_POOL_SIZE:
        raise UserError(f"{source} (triggers.size): {size} candidates per slot is too many; at most "
                        f"{MAX_POOL_SIZE} (TPE's ask() costs 300-770 ms per slot at 30k choices "
                        "against ~14 ms at 1k)")
    words = tuple(_str_list(trig_raw.get("words"), f"{source} (triggers.words)"))
    if pool == "words" and not words:
        raise UserError(f"{source} (triggers): pool 'words' needs a 'words' list")
    if pool == "file" and not trig_raw.get("path"):
        raise UserError(f"{source} (triggers): pool 'file' needs a 'path'")
    path = trig_raw.get("path")
    if path is not None and source != "<memory>" and not Path(str(path)).is_absolute():
        path = str(Path(source).parent / str(path))
    triggers = TriggerSpec(pool=pool, size=size, words=words, path=path,
                           min_chars=_positive_int(trig_raw.get("min_chars", 3),
                                                   f"{source} (triggers.min_chars)"),
                           template=trig_raw.get("template"))
    human = raw.get("human_prompts", True)
    if not isinstance(human, bool):
        raise UserError(f"{source}: 'human_prompts' must be true or false")
    instructions = _str_list(raw.get("instructions"), f"{source} (instructions)") or [""]
    return SearchSpace(
        task=_resolve_task(raw.get("task"), source),
        name=str(raw.get("name", Path(source).stem)), description=str(raw.get("description", "")),
        human_prompts=human, templates=_str_list(raw.get("templates"), f"{source} (templates)"),
        instructions=instructions, verbalizers=_verbalizers(raw.get("verbalizers"),
                                                            f"{source} (verbalizers)"),
        params=params, demos=demos, triggers=triggers, source=source,
    )


def load_space(path: str | Path) -> SearchSpace:
    """Read a space YAML file (a path, or the name of a shipped space such as ``sst-2``)."""
    p = Path(path)
    if not p.exists() and p.suffix not in (".yaml", ".yml") and (SPACES_DIR / f"{p}.yaml").is_file():
        p = SPACES_DIR / f"{p}.yaml"
    return space_from_mapping(load_yaml(p), source=str(p))


def default_space(task: Task) -> SearchSpace:
    """The shipped space for ``task`` if there is one, else the task's human prompts only."""
    shipped = SPACES_DIR / f"{task.name}.yaml"
    if shipped.is_file():
        return load_space(shipped)
    return SearchSpace(task=task.name, source=f"<human prompts of {task.name}>")


def available_spaces() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SPACES_DIR.glob("*.yaml"))}


# --- trigger slots in a template ------------------------------------------------------
_FIELD_RE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def insert_triggers(template: str, n: int, position: str) -> str:
    """``template`` with ``n`` extra ``[T]`` slots at ``position`` (on the template source)."""
    if n == 0:
        return template
    slots = " ".join(["[T]"] * n)
    if position == "prefix":
        return f"{slots} {template}"
    if position == "before_predict":
        i = template.index("[P]")
        head = template[:i].rstrip()
        return f"{head} {slots} {template[i:]}" if head else f"{slots} {template[i:]}"
    if position == "after_input":
        fields = list(_FIELD_RE.finditer(template[: template.index("[P]")]))
        if not fields:  # no input field before [P]: fall back to the start
            return f"{slots} {template}"
        end = fields[-1].end()
        return f"{template[:end]} {slots}{template[end:]}"
    raise UserError(f"unknown trigger position {position!r}; use {', '.join(TRIGGER_POSITIONS)}")


def validate_space(path: Path, raw: dict, data: bool, data_root: Path | None) -> str:
    """``validate`` for space files: keys, distributions, and the templates against the task."""
    space = space_from_mapping(raw, source=str(path))
    summary = (f"space '{space.name}': {len(space.templates)} templates"
               f"{' + human prompts' if space.human_prompts else ''}, "
               f"{len(space.instructions)} instructions, {len(space.verbalizers) + 1} verbalizers, "
               f"trigger pool {space.triggers.pool} ({space.triggers.size})")
    if space.task is not None:
        task = space.load_task(data_root)
        space.check_task(task)
        summary += f", task '{task.name}' ({len(space.template_choices(task))} template choices)"
        if data:
            pool = task.examples(space.demos.split)
            if len(pool) < space.demos.pool_size:
                raise UserError(f"{path}: demos.pool_size {space.demos.pool_size} is more than the "
                                f"{len(pool)} examples of the {space.demos.split} split")
    return summary
