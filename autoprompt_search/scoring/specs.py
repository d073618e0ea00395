"""A prompt to evaluate -- :class:`PromptSpec` -- and how a saved result becomes one.

Lives in the scoring layer so that analysis (compare, export) and the top-level API
share it without importing upwards; ``autoprompt_search.api.PromptSpec`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.results import PromptResult
from ..core.tasks import Task
from ..models.encoding import FewShot


@dataclass
class PromptSpec:
    """A prompt to evaluate: template, optional trigger ids, verbalizer and few-shot framing."""

    task: Task
    template: str
    name: str = ""
    verbalizer: dict[str, list[str]] | None = None
    triggers: list[int] = field(default_factory=list)
    fewshot: FewShot | None = None
    model: str | None = None  # the model the triggers were found for
    scoring: str = "direct"  # the scoring rule (ScoringRule) its scores are read with


def load_task(task: str | Path, data_root=None, split_seed=None) -> Task:
    return Task.load(task, data_root=data_root, seed=split_seed)


def result_task(result: PromptResult, data_root=None, split_seed=None) -> Task:
    """The task a result was found for: its task reference (a shipped name or a task file's
    absolute path); for results saved before references were absolute, whose task was a file
    recorded by its bare name, the task file its config records."""
    try:
        return load_task(result.task, data_root, split_seed)
    except UserError:
        source = Path(str(result.config.get("task_source", "")))
        if source.suffix in (".yaml", ".yml") and source.is_file():
            return load_task(source, data_root, split_seed)
        raise


def spec_from_result(result: PromptResult, data_root=None, split_seed=None) -> PromptSpec:
    """A saved result as something to evaluate (the template with its trigger ids)."""
    task = result_task(result, data_root, split_seed)
    fewshot = None
    if result.fewshot:
        split = result.fewshot.get("split", "train")
        by_id = {ex.id: ex for ex in task.examples(split)}
        fewshot = FewShot(result.fewshot.get("instruction", ""),
                          tuple(by_id[i] for i in result.fewshot.get("demo_ids", [])),
                          result.fewshot.get("separator", "\n"))
    if result.trigger_ids and "[T]" in result.template:
        return PromptSpec(task, result.template, result.prompt, result.verbalizer or None,
                          list(result.trigger_ids), fewshot, result.model, result.scoring)
    return PromptSpec(task, result.prompt, result.prompt, result.verbalizer or None, [], fewshot,
                      result.model, result.scoring)
