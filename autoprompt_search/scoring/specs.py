"""A prompt to evaluate -- :class:`PromptSpec` -- and how a saved result becomes one.

Lives in the scoring layer so that analysis (compare, export) and the top-level API
share it without importing upwards; ``autoprompt_search.api.PromptSpec`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UserError
from ..core.results import PromptResult
from ..core.tasks import Task

if TYPE_CHECKING:  # torch loads on first use, so bad input is reported without waiting for it
    from ..models.encoding import FewShot
    from .calibration import Calibration, CalibrationRecord


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
    calibration: CalibrationRecord | None = None  # stored offsets the prompt is scored with
    scoring: str = "direct"  # the scoring rule (ScoringRule) its scores are read with
    # an ensemble (``--strategy auto --ensemble K``): its member prompts with their weights,
    # scored as one predictor (the weighted sum of calibrated class log-probabilities)
    ensemble: list[tuple[PromptSpec, float]] = field(default_factory=list)


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
    """A saved result as something to evaluate (the template with its trigger ids). Without
    ``split_seed``, the split seed the result was found on (its demonstrations are that split's
    examples), as ``compare`` and ``export`` read it."""
    if split_seed is None:
        split_seed = (result.config or {}).get("data_seed")
    return result_spec(result, result_task(result, data_root, split_seed))


def result_spec(result: PromptResult, task: Task) -> PromptSpec:
    """A saved result as something to evaluate on ``task`` (an ensemble with its members)."""
    spec = _spec(task, result.template, result.prompt, result.verbalizer, result.trigger_ids,
                 result.fewshot, result.model, result.calibration, result.scoring)
    members = (result.extra or {}).get("ensemble") or {}
    for m in members.get("members", []):
        spec.ensemble.append((_spec(task, m["template"], m["prompt"], m.get("verbalizer"),
                                    m.get("trigger_ids", []), m.get("fewshot"), result.model,
                                    m.get("calibration"), result.scoring), float(m["weight"])))
    return spec


def _spec(task: Task, template: str, prompt: str, verbalizer, trigger_ids, fewshot_record,
          model, calibration_record, scoring: str = "direct") -> PromptSpec:
    from ..models.encoding import FewShot
    from .calibration import CalibrationRecord

    fewshot = None
    if fewshot_record:
        split = fewshot_record.get("split", "train")
        by_id = {ex.id: ex for ex in task.examples(split)}
        fewshot = FewShot(fewshot_record.get("instruction", ""),
                          tuple(by_id[i] for i in fewshot_record.get("demo_ids", [])),
                          fewshot_record.get("separator", "\n"))
    calibration = CalibrationRecord.from_json(calibration_record)
    if trigger_ids and "[T]" in template:
        return PromptSpec(task, template, prompt, verbalizer or None, list(trigger_ids), fewshot,
                          model, calibration, scoring)
    return PromptSpec(task, prompt, prompt, verbalizer or None, [], fewshot, model, calibration,
                      scoring)


def spec_calibration(spec: PromptSpec, calibration: Calibration | str | None,
                     scoring: str | None = None) -> Calibration | CalibrationRecord | None:
    """How ``spec`` is calibrated: its stored record (a prompt found with calibration keeps its
    offsets everywhere after), else the ``calibration`` mode asked for (estimated per prompt).
    Asking for another mode than a prompt's stored one is an error, and so is another scoring
    rule than the one its stored offsets were estimated under (``scoring``: the rule asked
    for, None for the prompt's own)."""
    from .calibration import Calibration

    mode = None if calibration is None else Calibration.parse(calibration)
    record = spec.calibration if spec.calibration is not None and spec.calibration.active else None
    if record is None:
        return mode
    if mode is not None and mode is not record.mode:
        raise UserError(f"prompt {spec.name or spec.template!r} was found with calibration "
                        f"{record.mode.value} and is scored with its stored offsets; drop "
                        f"--calibration or pass --calibration {record.mode.value}")
    check_stored_rule(spec, scoring)
    return record


def check_stored_rule(spec: PromptSpec, scoring: str | None) -> None:
    """A user error if ``spec`` has stored calibration offsets and ``scoring`` (None: its own
    rule) is another rule than the one they were estimated under (``CalibrationRecord.scoring``)."""
    record = spec.calibration
    if record is None or not record.active or scoring is None or scoring == record.scoring:
        return
    raise UserError(f"prompt {spec.name or spec.template!r} was found with --scoring "
                    f"{record.scoring} and its stored calibration offsets ({record.mode.value}) "
                    f"were estimated under that rule; drop --scoring or pass --scoring {record.scoring}")
