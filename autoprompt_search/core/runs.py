"""Run folders: resolved config, checkpoints, an iteration log, and the result.

A run folder holds ``config.json`` (the resolved config), ``log.jsonl`` (one record
per step), a checkpoint after the last completed checkpointed step, and, at the
end, ``result.json`` and ``best_prompt.txt``.

A checkpoint is one format for every strategy: ``checkpoint.json`` (JSON state) plus
``checkpoint-<hash>.safetensors`` (its tensors; nothing is unpickled). The JSON names
the tensor file and records the SHA-256 of its bytes and a digest of the JSON state, so
a checkpoint edited by hand (or half-copied) is refused instead of resumed from. The
tensor file is written first under a name of its own, then the JSON is replaced
atomically, then older tensor files are removed: a process killed at any point leaves
a consistent checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import to_jsonable
from .errors import UserError
from .results import PromptResult, provenance, write_json

CHECKPOINT_FORMAT = "autoprompt-search/checkpoint"
CHECKPOINT_VERSION = 1
CONTEXT_KEYS_IGNORED_ON_RESUME = ("versions", "device")  # a run may go on on another device


class SearchInterrupted(UserError):
    """The user stopped a search (Ctrl-C); its last checkpoint is kept for ``--resume``."""

    exit_code = 130


def state_digest(state: Any) -> str:
    """SHA-256 of a JSON state in canonical form (sorted keys, no spaces)."""
    text = json.dumps(to_jsonable(state), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RunDir:
    """One search run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    checkpoint_path = property(lambda self: self.path / "checkpoint.json")
    log_path = property(lambda self: self.path / "log.jsonl")
    result_path = property(lambda self: self.path / "result.json")

    def start(self, config: dict[str, Any], resume: bool,
              resumable: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """Prepare the folder; when resuming, return the checkpoint (:meth:`load_state`).

        On resume every setting must equal the recorded one except those in ``resumable``
        (budgets, display and worker settings, as each config declares per field)."""
        config = to_jsonable(config)
        allowed = set(resumable) | set(CONTEXT_KEYS_IGNORED_ON_RESUME)
        if resume:
            if not self.config_path.is_file():
                raise UserError(f"--resume: {self.path} is not a run folder (no config.json)")
            old = json.loads(self.config_path.read_text())
            changed = sorted(k for k in set(old) | set(config)
                             if old.get(k) != config.get(k) and k not in allowed)
            if changed:
                raise UserError(
                    f"--resume: the settings {', '.join(changed)} differ from the run in {self.path}; "
                    "resume with the same settings or start a new run with another --out"
                )
            write_json(self.config_path, {**config, "versions": provenance()})
            loaded = self.load_state()
            if loaded is None:  # killed before its first checkpoint: start the log afresh
                self.log_path.write_text("")
            return loaded
        if self.checkpoint_path.exists() or self.result_path.exists():
            raise UserError(
                f"{self.path} already holds a run; pass --resume to continue it, or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, {**config, "versions": provenance()})
        self.log_path.write_text("")
        return None

    # --- checkpoints ------------------------------------------------------------------------
    def load_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """(JSON state, tensors) of the last checkpoint, verified; None if there is none."""
        if not self.checkpoint_path.is_file():
            return None
        where = f"--resume: the checkpoint in {self.path}"
        try:
            doc = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{where} is not valid JSON ({exc.msg}); start a new run") from None
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{where} is not an autoprompt-search checkpoint (format "
                            f"'{CHECKPOINT_FORMAT}'); it was written by another version or edited")
        if doc.get("version") != CHECKPOINT_VERSION:
            raise UserError(f"{where} has format version {doc.get('version')!r}; this version "
                            f"reads version {CHECKPOINT_VERSION}")
        state, info = doc.get("state"), doc.get("tensors") or {}
        if not isinstance(state, dict) or not isinstance(info, dict) or \
                state_digest({"state": state, "tensors": info}) != doc.get("digest"):
            raise UserError(f"{where} was modified after it was written (its state does not "
                            "match its digest); refusing to resume from it")
        tensors: dict[str, torch.Tensor] = {}
        if info:
            file = self.path / str(info.get("file", ""))
            if Path(str(info.get("file", ""))).name != info.get("file") or not file.is_file():
                raise UserError(f"{where} names a tensor file {info.get('file')!r} that is missing")
            raw = file.read_bytes()
            if hashlib.sha256(raw).hexdigest() != info.get("sha256"):
                raise UserError(f"{where}: {file.name} was modified after it was written (SHA-256 "
                                "mismatch); refusing to resume from it")
            try:
                tensors = load_file(str(file))
            except (SafetensorError, OSError) as exc:
                raise UserError(f"{where}: {file.name} is not a readable safetensors file "
                                f"({exc})") from None
        return state, tensors

    def save_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Save a checkpoint: tensors (safetensors) first, then the JSON that names them."""
        state = to_jsonable(state)
        info: dict[str, str] = {}
        if tensors:
            tmp = self._tmp_name(".safetensors")
            try:
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
                raw = tmp.read_bytes()
                sha = hashlib.sha256(raw).hexdigest()
                name = f"checkpoint-{sha[:16]}.safetensors"
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, self.path / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            info = {"file": name, "sha256": sha}
        doc = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "state": state,
               "tensors": info, "digest": state_digest({"state": state, "tensors": info})}
        write_json(self.checkpoint_path, doc)
        for old in self.path.glob("checkpoint-*.safetensors"):
            if old.name != info.get("file"):
                old.unlink(missing_ok=True)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """A JSON-only checkpoint (no tensors)."""
        self.save_state(state, {})

    def _tmp_name(self, suffix: str) -> Path:
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=suffix, dir=self.path)
        os.close(fd)
        return Path(tmp)

    # --- the log --------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(to_jsonable(record), ensure_ascii=False) + "\n")
            f.flush()

    def truncate_log(self, steps: int, key: str = "step") -> None:
        """Drop log records past ``steps`` (written after the last checkpoint of a killed run)."""
        if not self.log_path.is_file():
            return
        keep = []
        for line in self.log_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if record.get(key, 0) <= steps:
                keep.append(line)
        self.log_path.write_text("".join(line + "\n" for line in keep))

    def history(self) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def save_result(self, result: PromptResult) -> Path:
        return result.save(self.path)
