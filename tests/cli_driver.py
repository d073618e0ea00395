"""Run autoprompt-search CLI commands in one process, optionally slowing every search step.

A helper for test_resume.py, which kills this process mid-search: ``python cli_driver.py
'[["search", ...], ["search", ..., "--resume"]]'`` runs each command line through the real
``main`` in turn and exits with the first non-zero status. With ``STEP_DELAY=seconds`` in the
environment every search step sleeps that long first (the results do not change), so that a
test can stop the process between checkpoints of a search on a tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from autoprompt_search.cli import main
from autoprompt_search.search import strategies


def slow_down(delay: float) -> None:
    for name in strategies.names():
        cls = strategies.get(name)
        step = cls.step

        def slow_step(self, ctx, state, _step=step):
            time.sleep(delay)
            return _step(self, ctx, state)

        cls.step = slow_step


if __name__ == "__main__":
    # Ctrl-C as in a terminal, even when the test runner started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if float(os.environ.get("STEP_DELAY", "0")) > 0:
        slow_down(float(os.environ["STEP_DELAY"]))
    for argv in json.loads(sys.argv[1]):
        sys.argv = ["autoprompt-search", *argv]
        try:
            main()
        except SystemExit as exc:
            if exc.code:
                raise
