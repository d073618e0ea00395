"""Found prompts as artifacts: ``result.json`` and ``best_prompt.txt``, written atomically.

Every saved artifact records the config, the seed, the model and the package version.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import check_keys, to_jsonable
from .errors import UserError
from .files import read_text

if TYPE_CHECKING:
    from .tasks import Task

RESULT_FORMAT = "autoprompt-search/prompt-result"


def atomic_write(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def provenance() -> dict[str, str]:
    """Package and library versions for saved artifacts."""
    from .. import __version__

    versions = {"autoprompt_search": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "optuna", "ray"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    return versions


def task_reference(task: Task) -> str:
    """How a result names its task so that it reloads from any working directory: the
    shipped task's name, else the task file's absolute path (a task built in memory, with
    no file, by its name)."""
    from .tasks import available_tasks

    source = Path(task.source)
    shipped = available_tasks().get(task.name)
    if shipped is not None and source.is_file() and source.resolve() == shipped.resolve():
        return task.name
    if source.suffix in (".yaml", ".yml") and source.is_file():
        return str(source.resolve())
    return task.name


@dataclass
class PromptResult:
    """A prompt found (or written) for a task, with its scores and provenance."""

    task: str
    template: str  # with [T] slots, as searched
    prompt: str  # the template with triggers filled in as text
    model: str
    strategy: str
    seed: int | None
    verbalizer: dict[str, list[str]] = field(default_factory=dict)
    trigger_ids: list[int] = field(default_factory=list)
    trigger_tokens: list[str] = field(default_factory=list)
    fewshot: dict[str, Any] | None = None
    scoring: str = "direct"  # the scoring rule the scores were read with (direct, channel)
    scores: dict[str, float] = field(default_factory=dict)
    # the calibration the scores were found and reported with: mode, offsets per class (log
    # space) and what they were estimated from (scoring.calibration.CalibrationRecord.to_json)
    calibration: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=provenance)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format: str = RESULT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    def save(self, folder: str | Path) -> Path:
        """Write ``result.json`` and ``best_prompt.txt`` into ``folder``."""
        folder = Path(folder)
        write_json(folder / "result.json", self.to_dict())
        atomic_write(folder / "best_prompt.txt", self.prompt + "\n")
        return folder / "result.json"

    def is_for(self, task: Task) -> bool:
        """Whether this result was found for ``task`` (by reference, file or name)."""
        return self.task in (task.name, task_reference(task)) or (
            Path(self.task).suffix in (".yaml", ".yml") and Path(self.task).is_file()
            and Path(task.source).is_file()
            and Path(self.task).resolve() == Path(task.source).resolve())

    @classmethod
    def load(cls, path: str | Path) -> PromptResult:
        """Read a ``result.json`` (or a run folder containing one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "result.json"
        if not path.is_file():
            raise UserError(f"prompt file not found: {path}")
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise UserError(f"{path}: not an autoprompt-search result file (no format '{RESULT_FORMAT}')")
        check_keys(data, cls.__dataclass_fields__, str(path))
        missing = [f.name for f in fields(cls) if f.name not in data
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise UserError(f"{path}: the result has no {', '.join(missing)}; it is incomplete "
                            "(save results with search or export --format json)")
        return cls(**data)
