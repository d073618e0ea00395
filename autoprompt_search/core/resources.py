"""Where the shipped task and search-space files are.

A source checkout (and the editable install ``make install`` makes) reads them from
the repository's ``search_spaces/`` folder, so edits there take effect at once; an
installed wheel carries the same files as ``autoprompt_search/search_spaces``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # the autoprompt_search package


def shipped_dir() -> Path:
    """The folder of shipped search spaces (``tasks/`` holds the task files)."""
    checkout = _PACKAGE.parent / "search_spaces"
    if checkout.is_dir():
        return checkout
    return _PACKAGE / "search_spaces"
