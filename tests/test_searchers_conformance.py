"""One conformance suite run for every registered search strategy (as Optuna does for samplers).

Each strategy, on a tiny masked and a tiny causal model, a toy task and a tiny budget, must:
return a PromptResult with provenance and save it; give the same result for the same seed;
explore differently for a different seed; end a run stopped mid-search (here in-process,
test_resume.py kills real processes) and resumed exactly like an uninterrupted run; and save
a result.json that reloads through ``evaluate --prompt-file`` and ``compare`` with the score
it reports, whether its task was a shipped name or a task file.
"""

from __future__ import annotations

import json

import pytest
import yaml

from autoprompt_search.analysis.compare import collect_prompts, compare_prompts
from autoprompt_search.api import evaluate_many, prompts_for, run_search
from autoprompt_search.core import tasks as tasks_module
from autoprompt_search.core.results import PromptResult
from autoprompt_search.core.runs import SearchInterrupted
from autoprompt_search.core.tasks import Task
from autoprompt_search.search import Searcher, strategies

TEMPLATE = "{sentence} [T] [T] it was [P] ."
BUDGETS = {
    "gradient": {"iterations": 4, "k": 4, "batch_size": 6, "init": "random"},
    "soft": {"steps": 4, "batch_size": 6, "eval_every": 2, "init": "random", "lr": 0.5},
    "pez": {"steps": 4, "batch_size": 6, "eval_every": 2, "init": "random", "lr": 0.5},
    "optuna": {"trials": 6, "startup_trials": 2, "search_examples": 8, "plots": False},
    "auto": {"rounds": 2, "folds": 2, "edits": 3, "demo_proposals": 2, "max_demos": 2,
             "generate_max": 4, "time_budget": 0},
}
# the score a strategy reports for its saved (hard) prompt on the dev split; None: the strategy
# reports no dev score of the saved prompt (optuna scores on a subset of train + dev)
SAVED_DEV_SCORE = {"gradient": "dev_accuracy", "pez": "dev_accuracy",
                   "soft": "projected_dev_accuracy", "optuna": None, "auto": "dev_accuracy"}
TIMING_KEYS = ("time", "second", "elapsed", "duration", "created", "datetime")


def test_every_registered_strategy_is_covered():
    assert set(strategies.names()) == set(BUDGETS) == set(SAVED_DEV_SCORE)


def on_base_loop(name: str) -> bool:
    return strategies.get(name).search is Searcher.search


@pytest.fixture(params=["causal", "masked"])
def backend(request, tiny_causal, tiny_masked):
    return tiny_causal if request.param == "causal" else tiny_masked


@pytest.fixture
def toy_file(toy_task, tmp_path):
    """The toy task as a task YAML file (next to its data files)."""
    raw = {"name": "toy", "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
           "fields": ["sentence"], "labels": ["negative", "positive"],
           "verbalizer": {"negative": ["bad"], "positive": ["great"]},
           "prompts": ["{sentence} it was [P] .", "{sentence} a [P] film ."]}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _space(tmp_path) -> str:
    raw = {"kind": "space", "task": "toy", "templates": ["{sentence} so it was [P] ."],
           "instructions": ["", "Sentiment:"],
           "params": {"shots": {"type": "int", "low": 0, "high": 1},
                      "trigger_slots": {"type": "int", "low": 0, "high": 1}},
           "demos": {"pool_size": 2}, "triggers": {"pool": "frequent", "size": 10}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _run(name, task, backend, out, seed, tmp_path, resume=False):
    options = dict(BUDGETS[name])
    template = TEMPLATE
    if name == "optuna":
        options["space"] = _space(tmp_path)
        template = None
    if name == "auto":  # starts from the task's human prompts (and fills no [T] slots)
        template = None
    return run_search(name, task=task, model=backend.name, template=template, out=out,
                      seed=seed, options=options, backend=backend, progress=False, resume=resume)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _log(folder) -> list[dict]:
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [_clean(json.loads(line)) for line in lines if line.strip()]


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_strategy_conformance(name, toy_task, backend, tmp_path):
    a = _run(name, toy_task, backend, tmp_path / "a", 0, tmp_path)
    # a result with provenance, saved in the run folder
    assert isinstance(a, PromptResult) and a.strategy == name and a.seed == 0
    assert a.model == backend.name and a.versions["autoprompt_search"]
    assert "[P]" in a.prompt and a.scores
    saved = PromptResult.load(tmp_path / "a")
    assert saved.prompt == a.prompt and saved.config == a.config
    assert (tmp_path / "a" / "best_prompt.txt").read_text().strip() == a.prompt
    assert json.loads((tmp_path / "a" / "config.json").read_text())["seed"] == 0
    # same seed -> same result and the same search history
    b = _run(name, toy_task, backend, tmp_path / "b", 0, tmp_path)
    assert (b.prompt, b.trigger_ids, b.scores) == (a.prompt, a.trigger_ids, a.scores)
    assert _log(tmp_path / "b") == _log(tmp_path / "a")
    # another seed -> the search explores differently
    c = _run(name, toy_task, backend, tmp_path / "c", 1, tmp_path)
    assert _log(tmp_path / "c") != _log(tmp_path / "a")
    assert c.seed == 1


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_resume_after_a_stop_equals_an_uninterrupted_run(name, toy_task, backend, tmp_path,
                                                         monkeypatch):
    if not on_base_loop(name):
        pytest.skip(f"'{name}' does not run on the base search loop yet")
    full = _run(name, toy_task, backend, tmp_path / "full", 0, tmp_path)
    cls = strategies.get(name)
    original = cls.step

    def stopped_in_step_4(self, ctx, state):
        if state.step == 3:  # (soft/pez: after step 3 was logged but not checkpointed)
            raise KeyboardInterrupt
        return original(self, ctx, state)

    monkeypatch.setattr(cls, "step", stopped_in_step_4)
    with pytest.raises(SearchInterrupted, match="interrupted, resume with --resume"):
        _run(name, toy_task, backend, tmp_path / "cut", 0, tmp_path)
    monkeypatch.setattr(cls, "step", original)
    assert not (tmp_path / "cut" / "result.json").exists()
    assert not list((tmp_path / "cut").glob("*.pt"))  # nothing pickled
    resumed = _run(name, toy_task, backend, tmp_path / "cut", 0, tmp_path, resume=True)
    assert (resumed.prompt, resumed.trigger_ids, resumed.scores) == \
        (full.prompt, full.trigger_ids, full.scores)
    assert _clean(resumed.extra) == _clean(full.extra)
    assert _log(tmp_path / "cut") == _log(tmp_path / "full")


def _saved_prompt_scores(result_dir, task_arg, backend, split="dev") -> tuple[float, float]:
    """The saved prompt's accuracy through the evaluate --prompt-file and compare paths."""
    specs = prompts_for(task_arg, None, result_dir / "result.json", False)
    evaluated = evaluate_many(specs, model=backend, split=split)[0]["accuracy"]
    task, entries = collect_prompts(task_arg, [result_dir], human=False)
    compared = compare_prompts(task, entries, model=backend, split=split, similarity=False,
                               resamples=10, progress=False).rows[0]["accuracy"]
    return evaluated, compared


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_result_reloads_with_its_score(name, toy_file, backend, tmp_path, monkeypatch):
    # the task as a file: recorded by absolute path, so it reloads from another directory
    run = tmp_path / "by-file"
    result = _run(name, Task.load(toy_file), backend, run, 0, tmp_path)
    assert result.task == str(toy_file.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for task_arg in (None, "../toy.yaml"):  # taken from the result, or given relative to here
        evaluated, compared = _saved_prompt_scores(run, task_arg or result.task, backend)
        assert evaluated == compared
        if SAVED_DEV_SCORE[name]:
            assert evaluated == pytest.approx(result.scores[SAVED_DEV_SCORE[name]])
    # the task by a shipped name: recorded by name
    monkeypatch.setattr(tasks_module, "available_tasks", lambda: {"toy": toy_file})
    run = tmp_path / "by-name"
    result = _run(name, Task.load("toy"), backend, run, 0, tmp_path)
    assert result.task == "toy"
    evaluated, compared = _saved_prompt_scores(run, "toy", backend)
    assert evaluated == compared
    if SAVED_DEV_SCORE[name]:
        assert evaluated == pytest.approx(result.scores[SAVED_DEV_SCORE[name]])


def test_a_result_that_names_its_task_file_by_bare_name_still_reloads(toy_file, tiny_causal,
                                                                        tmp_path, monkeypatch):
    """Results saved before task references were absolute paths named a task file's task by
    its name ('unknown task' on reload); the task file in their config is used instead."""
    run = tmp_path / "old"
    result = _run("gradient", Task.load(toy_file), tiny_causal, run, 0, tmp_path)
    data = json.loads((run / "result.json").read_text())
    data["task"] = "toy"  # as such results were saved
    (run / "result.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    evaluated, compared = _saved_prompt_scores(run, "toy.yaml", tiny_causal)
    assert evaluated == compared == pytest.approx(result.scores["dev_accuracy"])
