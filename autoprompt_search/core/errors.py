"""The one exception type for user mistakes.

Anything a user can fix (bad YAML, unknown key, missing file, a model that is not
available offline, ...) raises :class:`UserError`. The CLI prints its message and
exits non-zero without a traceback; library users can catch it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input, with a message that says how to fix it."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
