"""Checks on command-line values made before any work starts, and how errors are shown.

Output paths are checked when the command line is parsed: a folder option that names an
existing file, or a path that cannot be created or written, is a usage error before a
model loads or a file is written. Errors are printed as one ``error:`` line on stderr,
followed by where to look for help.
"""

from __future__ import annotations

import enum
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

PROG = "autoprompt-search"
BUG_LINE = f"this is a bug in {PROG}; please report it with the command line and the traceback above"
# files that show a run made progress worth keeping (a failed run without them is removed)
RUN_PROGRESS = ("checkpoint.json", "result.json", "study.journal")


def print_error(message: str, hint: str | None = None) -> None:
    """``error: message`` as one line on stderr (no markup, no wrapping), then the hint."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    if hint:
        sys.stderr.write(hint + "\n")


def print_warning(message: str) -> None:
    sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")


def help_hint(command_path: str | None = None) -> str:
    return f"see '{command_path or PROG} --help'"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(path: Path, folder: Path) -> None:
    """Create and remove an empty folder in ``folder`` (works for root too, unlike os.access)."""
    if not folder.is_dir():
        raise typer.BadParameter(f"cannot create {path}: {folder} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=folder))
    except OSError as exc:
        raise typer.BadParameter(f"cannot write to {path} ({folder}: {exc.strerror or exc})") from None


def out_dir(path: Path | None) -> Path | None:
    """An output folder option: a folder (or a path where one can be created) we may write in."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file; give a folder (created if missing)")
    _probe_writable(path, _nearest_existing(path))
    return path


def out_file(path: Path | None) -> Path | None:
    """An output file option: not a folder, and its folder exists or can be created, writable."""
    if path is None:
        return None
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; give a file name")
    _probe_writable(path, _nearest_existing(path.parent))
    return path


def out_path(path: Path | None) -> Path | None:
    """An output that is a file or a folder depending on the command: writable, either way."""
    if path is None:
        return None
    _probe_writable(path, path if path.is_dir() else _nearest_existing(path.parent))
    return path


def remove_unstarted_run(out: Path, existed: bool) -> None:
    """After a failed search: remove ``out`` if this call created it and it holds no progress."""
    if existed or not out.is_dir() or any((out / name).exists() for name in RUN_PROGRESS):
        return
    shutil.rmtree(out, ignore_errors=True)


def show_value(value: Any) -> str:
    """A default as it is typed on the command line (enums by value, lists comma-separated)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value) or "(none)"
    return str(value)
