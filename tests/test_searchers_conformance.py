"""One conformance suite run for every registered search strategy (as Optuna does for samplers).

Each strategy, on a tiny causal model and a toy task with a tiny budget, must:
return a PromptResult with provenance and save it; give the same result for the same seed;
and explore differently for a different seed.
"""

from __future__ import annotations

import json

import pytest
import yaml

from autoprompt_search.api import run_search
from autoprompt_search.core.results import PromptResult
from autoprompt_search.search import strategies

TEMPLATE = "{sentence} [T] [T] it was [P] ."
BUDGETS = {
    "gradient": {"iterations": 3, "k": 4, "batch_size": 6, "init": "random"},
    "soft": {"steps": 4, "batch_size": 6, "eval_every": 2, "init": "random", "lr": 0.5},
    "pez": {"steps": 4, "batch_size": 6, "eval_every": 2, "init": "random", "lr": 0.5},
    "optuna": {"trials": 6, "startup_trials": 2, "search_examples": 8, "plots": False,
               "storage": "memory"},
}
TIMING_KEYS = ("time", "second", "elapsed", "duration", "created", "datetime")


def test_every_registered_strategy_is_covered():
    assert set(strategies.names()) == set(BUDGETS)


def _space(toy_task, tmp_path) -> str:
    raw = {"kind": "space", "task": "toy", "templates": ["{sentence} so it was [P] ."],
           "instructions": ["", "Sentiment:"],
           "params": {"shots": {"type": "int", "low": 0, "high": 1},
                      "trigger_slots": {"type": "int", "low": 0, "high": 1}},
           "demos": {"pool_size": 2}, "triggers": {"pool": "frequent", "size": 10}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _run(name, toy_task, tiny_causal, out, seed, tmp_path):
    options = dict(BUDGETS[name])
    template = TEMPLATE
    if name == "optuna":
        options["space"] = _space(toy_task, tmp_path)
        template = None
    return run_search(name, task=toy_task, model="tiny-causal", template=template, out=out,
                      seed=seed, options=options, backend=tiny_causal, progress=False)


def _log(folder) -> list[dict]:
    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if not any(t in k for t in TIMING_KEYS)}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj

    lines = (folder / "log.jsonl").read_text().splitlines()
    return [clean(json.loads(line)) for line in lines if line.strip()]


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_strategy_conformance(name, toy_task, tiny_causal, tmp_path):
    a = _run(name, toy_task, tiny_causal, tmp_path / "a", 0, tmp_path)
    # a result with provenance, saved in the run folder
    assert isinstance(a, PromptResult) and a.strategy == name and a.seed == 0
    assert a.model == "tiny-causal" and a.versions["autoprompt_search"]
    assert "[P]" in a.prompt and a.scores
    saved = PromptResult.load(tmp_path / "a")
    assert saved.prompt == a.prompt and saved.config == a.config
    assert (tmp_path / "a" / "best_prompt.txt").read_text().strip() == a.prompt
    assert json.loads((tmp_path / "a" / "config.json").read_text())["seed"] == 0
    # same seed -> same result and the same search history
    b = _run(name, toy_task, tiny_causal, tmp_path / "b", 0, tmp_path)
    assert (b.prompt, b.trigger_ids, b.scores) == (a.prompt, a.trigger_ids, a.scores)
    assert _log(tmp_path / "b") == _log(tmp_path / "a")
    # another seed -> the search explores differently
    c = _run(name, toy_task, tiny_causal, tmp_path / "c", 1, tmp_path)
    assert _log(tmp_path / "c") != _log(tmp_path / "a")
    assert c.seed == 1
