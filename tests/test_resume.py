"""Resume is the same as never stopping: real processes killed mid-search, then resumed.

The searches run in subprocesses through the real CLI (tests/cli_driver.py, which slows each
step down so the test can stop the process between checkpoints). Each process is killed with
SIGKILL (no clean-up runs) or interrupted with SIGINT (Ctrl-C: exit status 130, a message,
the checkpoint kept) once its checkpoint has passed a few steps; the run is then resumed with
``--resume`` and its result.json and log must equal those of an uninterrupted run. Also: a
checkpoint edited after it was written is refused with a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autoprompt_search.api import run_search
from autoprompt_search.core.errors import UserError
from autoprompt_search.testing import tiny_causal_lm

DRIVER = Path(__file__).with_name("cli_driver.py")
ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "{sentence} [T] [T] it was [P] ."
ROWS = [("the movie was great", 1), ("a wonderful story", 1), ("a good film", 1),
        ("it was fine and good", 1), ("what a great game", 1), ("the team won", 1),
        ("it was terrible", 0), ("a bad film", 0), ("not good , not great", 0),
        ("the market fell today", 0), ("it was bad", 0), ("a terrible story", 0)]
# strategy, its settings, and the checkpointed step after which the process is stopped
RUNS = {
    "gradient": ("gradient", ["--iterations", "10", "--k", "4", "--batch-size", "5",
                              "--init", "random"], 3),
    "soft": ("soft", ["--steps", "10", "--eval-every", "2", "--batch-size", "6",
                      "--init", "random", "--lr", "0.5"], 4),
    "pez": ("pez", ["--steps", "10", "--eval-every", "2", "--batch-size", "6",
                    "--init", "random", "--lr", "0.5"], 4),
    "auto": ("auto", ["--rounds", "2", "--folds", "2", "--edits", "3", "--demo-proposals", "2",
                      "--max-demos", "2", "--generate-max", "4", "--time-budget", "0"], 3),
}
NO_TEMPLATE = {"auto"}  # strategies that start from the task's prompts (no [T] template)
TIMING_KEYS = ("time", "second", "elapsed", "created")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny causal model folder and a toy task file."""
    folder = tmp_path_factory.mktemp("resume")
    model, tokenizer = tiny_causal_lm(seed=0)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in ROWS))
    raw = {"name": "toy", "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
           "fields": ["sentence"], "labels": ["negative", "positive"],
           "verbalizer": {"negative": ["bad"], "positive": ["great"]},
           "prompts": ["{sentence} it was [P] ."]}
    (folder / "toy.yaml").write_text(yaml.safe_dump(raw))
    return folder


def _argv(setup: Path, key: str, out: Path, resume: bool = False) -> list[str]:
    strategy, options, _ = RUNS[key]
    return ["search", "--strategy", strategy, "--task", str(setup / "toy.yaml"),
            "--model", str(setup / "model"),
            *([] if strategy in NO_TEMPLATE else ["--template", TEMPLATE]), "--out", str(out),
            "--seed", "1", *options, *(["--resume"] if resume else [])]


def _env(delay: float = 0.0) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STEP_DELAY": str(delay),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return env


def _start(commands: list[list[str]], delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DRIVER), json.dumps(commands)], env=_env(delay),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _checkpointed_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoint.json").read_text())["state"]["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _outcome(run: Path) -> tuple[dict, list]:
    result = json.loads((run / "result.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    kept = {k: result[k] for k in ("prompt", "trigger_ids", "scores", "task", "config")}
    kept["extra"] = result["extra"]
    return _clean(kept), _clean(log)


def test_killed_and_interrupted_runs_resume_like_uninterrupted_ones(setup, tmp_path):
    # the runs, stopped mid-search: SIGKILL for each strategy, SIGINT for gradient
    stops = {key: (key, signal.SIGKILL) for key in RUNS}
    stops["gradient-int"] = ("gradient", signal.SIGINT)
    procs = {name: _start([_argv(setup, key, tmp_path / name)], delay=0.2)
             for name, (key, _) in stops.items()}
    deadline = time.monotonic() + 180
    pending = dict(procs)
    while pending and time.monotonic() < deadline:
        for name, proc in list(pending.items()):
            key, sig = stops[name]
            assert proc.poll() is None, f"{name} ended before it was stopped: {proc.stderr.read()}"
            if _checkpointed_step(tmp_path / name) >= RUNS[key][2]:
                proc.send_signal(sig)
                del pending[name]
        time.sleep(0.05)
    assert not pending, f"no checkpoint past the stop step in time: {sorted(pending)}"
    for name, proc in procs.items():
        code, err = _finish(proc)
        run = tmp_path / name
        assert not (run / "result.json").exists()
        assert _checkpointed_step(run) >= RUNS[stops[name][0]][2]
        assert not list(run.glob("*.pt"))  # nothing pickled
        if stops[name][1] == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:
            assert code == 130, err
            assert "interrupted, resume with --resume" in err and "Traceback" not in err
    # one process: the uninterrupted runs, then every stopped run resumed
    resumed = _start([_argv(setup, key, tmp_path / f"{key}-full") for key in RUNS]
                     + [_argv(setup, key, tmp_path / name, resume=True)
                        for name, (key, _) in stops.items()])
    code, err = _finish(resumed)
    assert code == 0, err
    for name, (key, _) in stops.items():
        assert _outcome(tmp_path / name) == _outcome(tmp_path / f"{key}-full"), name


@pytest.fixture(scope="module")
def finished_runs(setup, tmp_path_factory, tiny_causal):
    """A short gradient and soft run on the toy task, each with a checkpoint."""
    folder = tmp_path_factory.mktemp("tamper")
    for strategy, options in (("gradient", {"iterations": 2, "k": 4, "batch_size": 5}),
                              ("soft", {"steps": 2, "eval_every": 1, "batch_size": 6})):
        run_search(strategy, task=str(setup / "toy.yaml"), model="tiny-causal", template=TEMPLATE,
                   out=folder / strategy, options=options, backend=tiny_causal, progress=False)
    return folder, tiny_causal


def _resume(run: Path, strategy: str, backend, setup: Path) -> None:
    options = ({"iterations": 3, "k": 4, "batch_size": 5} if strategy == "gradient"
               else {"steps": 3, "eval_every": 1, "batch_size": 6})
    run_search(strategy, task=str(setup / "toy.yaml"), model="tiny-causal", template=TEMPLATE,
               out=run, options=options, backend=backend, progress=False, resume=True)


@pytest.mark.parametrize("strategy", ["gradient", "soft"])
@pytest.mark.parametrize("edit", ["json-state", "json-tensor-name", "tensor-bytes", "tensor-file-gone"])
def test_a_tampered_checkpoint_is_refused(finished_runs, setup, tmp_path, strategy, edit):
    folder, backend = finished_runs
    run = tmp_path / strategy
    run.mkdir()
    for f in (folder / strategy).iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    doc = json.loads((run / "checkpoint.json").read_text())
    tensors = run / doc["tensors"]["file"]
    if edit == "json-state":
        doc["state"]["best_accuracy"] = 1.0
        (run / "checkpoint.json").write_text(json.dumps(doc))
        match = "modified"
    elif edit == "json-tensor-name":
        doc["tensors"]["file"] = "../elsewhere.safetensors"
        (run / "checkpoint.json").write_text(json.dumps(doc))
        match = "modified"
    elif edit == "tensor-bytes":
        raw = bytearray(tensors.read_bytes())
        raw[-1] ^= 0xFF  # the last byte of the last tensor's data
        tensors.write_bytes(bytes(raw))
        match = "SHA-256"
    else:
        tensors.unlink()
        match = "missing"
    with pytest.raises(UserError, match=match):
        _resume(run, strategy, backend, setup)
    # the untouched copy resumes
    _resume(folder / strategy, strategy, backend, setup)
