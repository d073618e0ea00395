"""Helpers shared by the black-box tests: run the CLI in a real process, stop it mid-run,
and compare two runs' trials and results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoprompt_search.core.results import PromptResult
from autoprompt_search.testing import tiny_causal_lm

ROOT = Path(__file__).resolve().parent.parent
RECORD_KEYS = ("step", "trial", "state", "value", "partial_accuracy", "examples", "human", "error",
               "params")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny causal LM saved as a model folder (so a CLI process can load it with --model)."""
    folder = tmp_path_factory.mktemp("tinymodel")
    model, tokenizer = tiny_causal_lm(seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def log_records(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return [r for r in records if "trial" in r]  # (the base loop's step 0 is before any trial)


def trials(run: Path) -> list[dict]:
    """The log of a run without its timings."""
    return [{k: r[k] for k in RECORD_KEYS} for r in log_records(run)]


def same_result(a: PromptResult, b: PromptResult) -> None:
    assert (a.prompt, a.template, a.trigger_ids, a.fewshot, a.scores) == \
           (b.prompt, b.template, b.trigger_ids, b.fewshot, b.scores)
    assert (a.extra["trial"], a.extra["params"]) == (b.extra["trial"], b.extra["params"])


def cli_search(args: list[str], out: Path) -> subprocess.Popen:
    """``autoprompt-search search ARGS`` in a new process (its own session, like a shell job)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
        "PYTHONPATH")])), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    # Ctrl-C acts as in a terminal even if the test runner was started with SIGINT ignored
    # (a background job of a non-interactive shell), which a child would inherit
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from autoprompt_search.cli import main; sys.argv[0] = 'autoprompt-search'; main()")
    with open(out.parent / f"{out.name}.stderr", "a") as stderr:  # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-c", code, "search", *args], env=env,
                                cwd=out.parent, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)


def stop_after(proc: subprocess.Popen, run: Path, records: int, sig: int, timeout: float = 240) -> int:
    """Send ``sig`` once the run has logged ``records`` trials; return the exit status.

    SIGKILL goes to the whole process group (the coordinator and any Ray processes it
    started, as a crash of the machine would); SIGINT to the coordinator only (Ctrl-C)."""
    deadline = time.time() + timeout
    while len(log_records(run)) < records:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {records} trials; see "
                        f"{run}.stderr")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {records} trials within {timeout} s")
        time.sleep(0.005)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(sig)
    return proc.wait(timeout=120)
