"""``validate``: check task and search-space YAML files for real (load, parse, resolve)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import load_yaml
from .registry import Registry
from .spaces import validate_space
from .tasks import Task
from .templates import Template

# a YAML file's top-level ``kind`` -> its validator (returns a one-line summary)
validators: Registry[Callable[[Path, dict, bool, Path | None], str]] = Registry("YAML kind")
validators.register("space")(validate_space)


@validators.register("task")
def validate_task(path: Path, raw: dict, data: bool, data_root: Path | None) -> str:
    task = Task.from_yaml(path, data_root=data_root)
    for p in task.prompts:
        Template.parse(p.template, task.fields)
    summary = f"task '{task.name}', {len(task.prompts)} human prompts"
    if data:
        sizes = {split: len(task.examples(split)) for split in ("train", "dev", "test")
                 if split in task.data or "builtin" in task.data}
        summary += ", " + ", ".join(f"{k} {v}" for k, v in sizes.items())
    return summary


def validate_file(path: str | Path, data: bool = False, data_root: Path | None = None) -> str:
    path = Path(path)
    raw = load_yaml(path)
    kind = raw.get("kind", "task")
    if kind == "task":
        raw = {k: v for k, v in raw.items() if k != "kind"}
    return validators.get(str(kind))(path, raw, data, data_root)
