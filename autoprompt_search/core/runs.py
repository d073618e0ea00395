"""Run folders: resolved config, checkpoints, an iteration log, and the result.

A run folder holds ``config.json`` (the resolved config), ``checkpoint.json``
(state after the last completed step, written atomically), ``log.jsonl`` (one record
per step) and, at the end, ``result.json`` and ``best_prompt.txt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import to_jsonable
from .errors import UserError
from .results import PromptResult, provenance, write_json

# settings that may change on --resume (budgets, progress display, workers)
RESUMABLE_CHANGES = {"iterations", "time_budget", "trials", "steps", "workers", "progress",
                     "ray_address", "patience", "trials_in_flight"}


class RunDir:
    """One search run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    checkpoint_path = property(lambda self: self.path / "checkpoint.json")
    log_path = property(lambda self: self.path / "log.jsonl")
    result_path = property(lambda self: self.path / "result.json")

    def start(self, config: dict[str, Any], resume: bool) -> dict[str, Any] | None:
        """Prepare the folder; return the checkpoint state when resuming, else None."""
        config = to_jsonable(config)
        if resume:
            if not self.config_path.is_file():
                raise UserError(f"--resume: {self.path} is not a run folder (no config.json)")
            old = json.loads(self.config_path.read_text())
            changed = sorted(k for k in set(old) | set(config)
                             if old.get(k) != config.get(k) and k not in RESUMABLE_CHANGES
                             and k != "versions")
            if changed:
                raise UserError(
                    f"--resume: the settings {', '.join(changed)} differ from the run in {self.path}; "
                    "resume with the same settings or start a new run with another --out"
                )
            write_json(self.config_path, {**config, "versions": provenance()})
            return self.load_checkpoint()
        if self.checkpoint_path.exists() or self.result_path.exists():
            raise UserError(
                f"{self.path} already holds a run; pass --resume to continue it, or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, {**config, "versions": provenance()})
        self.log_path.write_text("")
        return None

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.is_file():
            return None
        return json.loads(self.checkpoint_path.read_text())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        write_json(self.checkpoint_path, state)

    def log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(to_jsonable(record), ensure_ascii=False) + "\n")
            f.flush()

    def truncate_log(self, steps: int, key: str = "step") -> None:
        """Drop log records past ``steps`` (written after the last checkpoint of a killed run)."""
        if not self.log_path.is_file():
            return
        keep = [line for line in self.log_path.read_text().splitlines()
                if line.strip() and json.loads(line).get(key, 0) <= steps]
        self.log_path.write_text("".join(line + "\n" for line in keep))

    def history(self) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def save_result(self, result: PromptResult) -> Path:
        return result.save(self.path)
