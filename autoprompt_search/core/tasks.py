"""Tasks: where the data is, its fields and labels, the verbalizer, the human prompts.

A task is a flat YAML file (see ``search_spaces/tasks/``). Shipped tasks are found
by name (``sst-2``, ``lama-P103``, ``bbc-news``); any other YAML file by path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .config import check_keys, load_yaml
from .data import Example, builtin_corpora, default_data_root, read_rows, rows_to_examples
from .errors import UserError, did_you_mean
from .files import read_text
from .resources import shipped_dir
from .templates import Template
from .verbalizer import Verbalizer

TASKS_DIR = shipped_dir() / "tasks"
SPLITS = ("train", "dev", "test")
TASK_KEYS = (
    "name", "description", "data", "fields", "label_field", "labels", "verbalizer",
    "prompts", "prompt_files", "label_space", "candidate_vocab", "kind", "standard",
)
DATA_KEYS = ("train", "dev", "test", "seed", "seeds", "builtin", "hub", "hub_config", "splits", "columns",
             "aliases")


@dataclass(frozen=True)
class HumanPrompt:
    """A hand-written prompt with where it comes from."""

    template: str
    name: str = ""
    source: str = ""
    verbalizer: dict[str, list[str]] | None = None  # checked by Verbalizer.parse


@dataclass
class Task:
    """A classification or fact-retrieval task."""

    name: str
    fields: list[str]
    labels: list[str] | None  # None: the label is a vocabulary token (LAMA)
    verbalizer: dict[str, list[str]]  # checked by Verbalizer.parse; empty for open vocabulary
    data: dict[str, Any]
    label_field: str = "label"
    description: str = ""
    prompts: list[HumanPrompt] = field(default_factory=list)
    standard: str | None = None  # name of the literature's standard prompt among ``prompts``
    candidate_vocab: str | None = None
    source: str = "<memory>"
    data_root: Path = field(default_factory=default_data_root)
    seed: int | None = None
    base_dir: Path = Path(".")  # relative data paths resolve against the task file's folder

    # --- construction ----------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, *, data_root: str | Path | None = None,
                  seed: int | None = None) -> Task:
        path = Path(path)
        raw = load_yaml(path)
        return cls.from_mapping(raw, source=str(path), base=path.parent, data_root=data_root,
                                seed=seed)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], *, source: str = "<memory>",
                     base: Path | None = None, data_root: str | Path | None = None,
                     seed: int | None = None) -> Task:
        check_keys(raw, TASK_KEYS, source)
        for key in ("name", "fields", "data"):
            if key not in raw:
                raise UserError(f"{source}: missing required key '{key}'")
        data = dict(raw["data"] or {})
        check_keys(data, DATA_KEYS, f"{source} (data)")
        if "hub" not in data and ({"splits", "columns"} & set(data)):
            raise UserError(f"{source}: data.splits and data.columns go with data.hub (a datasets "
                            "dataset); data files name their columns through data.aliases")
        fields = raw["fields"]
        if isinstance(fields, str):
            fields = [fields]
        open_labels = raw.get("label_space") == "vocabulary"
        if raw.get("label_space") not in (None, "classes", "vocabulary"):
            raise UserError(f"{source}: label_space must be 'classes' or 'vocabulary'")
        labels = None if open_labels else [str(x) for x in raw.get("labels") or []]
        if labels is not None and len(labels) < 2:
            raise UserError(f"{source}: 'labels' must list at least two class names")
        verbalizer = _parse_verbalizer(raw.get("verbalizer"), labels, source)
        prompts = [_parse_prompt(p, labels, source) for p in raw.get("prompts") or []]
        root = Path(data_root) if data_root is not None else default_data_root()
        for spec in raw.get("prompt_files") or []:
            prompts.extend(_prompts_from_file(spec, root, source))
        task = cls(
            name=str(raw["name"]), fields=list(fields), labels=labels, verbalizer=verbalizer,
            data=data, label_field=str(raw.get("label_field", "label")),
            description=str(raw.get("description", "")), prompts=prompts,
            standard=_parse_standard(raw.get("standard"), prompts, source),
            candidate_vocab=raw.get("candidate_vocab"), source=source, data_root=root,
            seed=seed, base_dir=base or Path("."),
        )
        for p in prompts:
            try:
                Template.parse(p.template, task.fields)
            except UserError as exc:
                raise UserError(f"{source}: {exc}") from None
        return task

    @classmethod
    def load(cls, name_or_path: str | Path, *, data_root: str | Path | None = None,
             seed: int | None = None) -> Task:
        """A shipped task by name, or a task YAML file by path."""
        path = Path(name_or_path)
        if path.suffix in {".yaml", ".yml"} or path.exists():
            return cls.from_yaml(path, data_root=data_root, seed=seed)
        shipped = available_tasks()
        if str(name_or_path) not in shipped:
            raise UserError(
                f"unknown task '{name_or_path}'{did_you_mean(str(name_or_path), shipped)}; "
                f"shipped tasks: {', '.join(shipped)} (or pass a path to a task YAML file)"
            )
        return cls.from_yaml(shipped[str(name_or_path)], data_root=data_root, seed=seed)

    # --- views -----------------------------------------------------------------
    @property
    def is_open_vocabulary(self) -> bool:
        return self.labels is None

    @property
    def data_seed(self) -> int:
        seed = self.seed if self.seed is not None else self.data.get("seed", 42)
        seeds = self.data.get("seeds")
        if seeds and seed not in seeds:
            raise UserError(
                f"task '{self.name}' has split seeds {seeds}; {seed} is not one of them"
            )
        return int(seed)

    def _path(self, pattern: str) -> Path:
        text = str(pattern).replace("{data_root}", str(self.data_root)).replace(
            "{seed}", str(self.data_seed)
        )
        path = Path(text).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @cached_property
    def _builtin_splits(self) -> dict[str, list[dict[str, Any]]]:
        return builtin_corpora.get(str(self.data["builtin"]))(self.data_seed)

    @cached_property
    def _hub(self):
        """The ``data.hub`` dataset, loaded on first use and kept for the task's lifetime."""
        from .sources import HubSource

        for key in ("splits", "columns"):
            if not isinstance(self.data.get(key) or {}, dict):
                raise UserError(f"{self.source}: data.{key} maps names to names, e.g. "
                                + ("{dev: validation}" if key == "splits" else "{sentence: text}"))
        return HubSource(str(self.data["hub"]), config=self.data.get("hub_config"),
                         splits=self.data.get("splits"), columns=self.data.get("columns"),
                         base_dir=self.base_dir)

    def examples(self, split: str) -> list[Example]:
        """The examples of ``split`` (train, dev or test), validated."""
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'{did_you_mean(split, SPLITS)}; "
                            f"use one of {', '.join(SPLITS)}")
        if "builtin" in self.data:
            rows, source = self._builtin_splits[split], f"built-in corpus {self.data['builtin']}"
        elif "hub" in self.data:
            rows, source = self._hub.rows(split), self._hub.source
        else:
            if split not in self.data:
                raise UserError(f"task '{self.name}' ({self.source}) has no '{split}' data file")
            path = self._path(self.data[split])
            rows, source = read_rows(path), str(path)
        rows = _apply_aliases(rows, self.data.get("aliases") or {})
        return rows_to_examples(rows, fields=self.fields, label_field=self.label_field,
                                labels=self.labels, source=source)

    def standard_index(self) -> tuple[int, bool] | None:
        """(index in ``prompts`` of the literature's standard prompt, True), or (0, False) --
        the first prompt -- when the task file names none (``standard:``); None without prompts."""
        if not self.prompts:
            return None
        if self.standard is not None:
            for i, p in enumerate(self.prompts):
                if p.name == self.standard:
                    return i, True
        return 0, False

    def prompt(self, name_or_template: str) -> HumanPrompt:
        for p in self.prompts:
            if name_or_template in (p.name, p.template):
                return p
        return HumanPrompt(name_or_template)

    def candidate_words(self) -> list[str] | None:
        """The restricted object vocabulary of an open-vocabulary task, if any."""
        if not self.candidate_vocab:
            return None
        path = self._path(self.candidate_vocab)
        if not path.is_file():
            raise UserError(f"candidate vocabulary not found: {path}")
        return [w.strip() for w in read_text(path).splitlines() if w.strip()]


def _apply_aliases(rows: list[dict[str, Any]], aliases: dict[str, Any]) -> list[dict[str, Any]]:
    """Rename alternative column names (``aliases: {text: [sentence]}``) to the field name."""
    if not rows or not aliases:
        return rows
    present = set(rows[0])
    renames = {}
    for name, alts in aliases.items():
        alts = [alts] if isinstance(alts, str) else list(alts)
        found = next((a for a in alts if a in present), None)
        if name not in present and found is not None:
            renames[found] = name
    if not renames:
        return rows
    return [{renames.get(k, k): v for k, v in row.items()} for row in rows]


def available_tasks() -> dict[str, Path]:
    """Shipped task names -> YAML paths."""
    return {p.stem: p for p in sorted(TASKS_DIR.rglob("*.yaml"))}


def _parse_verbalizer(raw: Any, labels: list[str] | None, source: str) -> dict[str, list[str]]:
    if labels is None:
        if raw:
            raise UserError(f"{source}: an open-vocabulary task has no verbalizer")
        return {}
    return Verbalizer.parse(raw, labels, source).to_dict()


def _parse_standard(raw: Any, prompts: list[HumanPrompt], source: str) -> str | None:
    """The ``standard:`` key: the name of one of the task's prompts (checked when the task has
    prompts; prompts read from files that are not there yet leave it unchecked)."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise UserError(f"{source}: 'standard' is the name of one of the task's prompts")
    names = [p.name for p in prompts if p.name]
    if prompts and raw not in names:
        raise UserError(f"{source}: standard '{raw}' names no prompt of the task"
                        f"{did_you_mean(raw, names)}; prompt names: {', '.join(dict.fromkeys(names))}")
    return raw


def _parse_prompt(raw: Any, labels: list[str] | None, source: str) -> HumanPrompt:
    if isinstance(raw, str):
        return HumanPrompt(raw, source="task file")
    if not isinstance(raw, dict):
        raise UserError(f"{source}: each prompt is a template string or a mapping")
    check_keys(raw, ("template", "name", "source", "verbalizer"), f"{source} (prompts)")
    if "template" not in raw:
        raise UserError(f"{source}: a prompt entry has no 'template'")
    verbalizer = raw.get("verbalizer")
    if verbalizer is not None:
        if labels is None:
            raise UserError(f"{source}: a prompt of an open-vocabulary task has no verbalizer")
        verbalizer = Verbalizer.parse(verbalizer, labels,
                                      f"{source} (prompt {raw['template']!r})").to_dict()
    return HumanPrompt(str(raw["template"]), str(raw.get("name", "")),
                       str(raw.get("source", "")), verbalizer)


def lama_template(template: str) -> str:
    """LAMA's ``[X] was born in [Y] .`` in our syntax: ``{sub_label} was born in [P] .``."""
    return template.replace("[X]", "{sub_label}").replace("[Y]", "[P]")


def _prompts_from_file(spec: Any, root: Path, source: str) -> list[HumanPrompt]:
    """Prompts from a JSONL file of ``{relation, template}`` records (LAMA, LPAQA, ...)."""
    if not isinstance(spec, dict):
        raise UserError(f"{source}: each prompt_files entry is a mapping with 'path'")
    check_keys(spec, ("path", "relation", "source"), f"{source} (prompt_files)")
    path = Path(str(spec["path"]).replace("{data_root}", str(root)))
    if not path.is_file():
        return []  # prompt files live with the data; a missing data root is reported on load
    out = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("template"), str):
            raise UserError(f"{path}:{n}: expected a JSON object with a 'template' string")
        if spec.get("relation") and rec.get("relation") != spec["relation"]:
            continue
        out.append(HumanPrompt(lama_template(rec["template"]), name=str(spec.get("source", "")),
                               source=str(spec.get("source", path.name))))
    return out
