"""The 'optuna' black-box strategy, in-process (no Ray): export, seeds, resume, pruning, faults."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from autoprompt_search.api import run_search, spec_from_result
from autoprompt_search.core.errors import UserError
from autoprompt_search.scoring.evaluation import evaluate_prompt
from autoprompt_search.core.results import PromptResult
from autoprompt_search.search import blackbox, strategies
from autoprompt_search.search.workers import DesignEvaluator, InProcessPool, Outcome
from autoprompt_search.core.tasks import HumanPrompt, Task

SPACE = {
    "kind": "space", "task": "toy",
    "templates": ["{sentence} so it was [P]"],
    "instructions": ["", "Sentiment:"],
    "verbalizers": {"good-bad": {"negative": ["bad"], "positive": ["good"]}},
    "params": {"shots": {"type": "int", "low": 0, "high": 1},
               "trigger_slots": {"type": "int", "low": 0, "high": 1},
               "trigger_position": {"type": "categorical", "choices": ["before_predict", "prefix"]}},
    "demos": {"split": "train", "pool_size": 2},
    "triggers": {"pool": "frequent", "size": 10},
}
FAST = {"search_splits": "dev", "search_examples": 12, "batch_size": 4, "plots": False}


@pytest.fixture
def toy_task(toy_task, tmp_path):
    """The shared toy task, saved as a YAML file so a result can name it and be reloaded."""
    from autoprompt_search.core.tasks import Task

    raw = {"name": "toy", "data": {s: str(tmp_path / f"{s}.tsv") for s in ("train", "dev", "test")},
           "fields": toy_task.fields, "labels": toy_task.labels, "verbalizer": toy_task.verbalizer,
           "prompts": [p.template for p in toy_task.prompts]}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(raw))
    return Task.from_yaml(tmp_path / "toy.yaml")


@pytest.fixture
def space_file(tmp_path, toy_task):
    path = tmp_path / "toy-space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return str(path)


def _search(toy_task, tiny_causal, out, seed=0, resume=False, **options):
    return run_search("optuna", task=toy_task, model="tiny-causal", out=out, seed=seed, resume=resume,
                      options=options, backend=tiny_causal, progress=False)


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_search_exports_a_result_that_evaluate_reproduces(toy_task, tiny_causal, space_file, tmp_path):
    run = tmp_path / "run"
    result = _search(toy_task, tiny_causal, run, space=space_file, trials=6, pruner="none",
                     **{**FAST, "plots": True})
    records = _log(run)
    assert [r["trial"] for r in records] == list(range(6))
    # the human prompts come first; text after [P] (issue 11) is scored on the whole sequence
    assert {r["human"] for r in records[:2]} == {"{sentence} it was [P] .", "{sentence} a [P] film ."}
    assert not any("a [P] film" in d for d in result.extra["left_out"])
    assert result.scores["search_accuracy"] == max(r["value"] for r in records)
    assert result.scores["search_accuracy"] >= result.scores["best_human_search_accuracy"]
    for name in ("result.json", "best_prompt.txt", "study.journal", "pool.json", "trials.json",
                 "optimization_history.png", "param_importances.png", "checkpoint.json"):
        assert (run / name).is_file(), name
    saved = PromptResult.load(run)
    assert saved.strategy == "optuna" and saved.seed == 0 and saved.config["trials"] == 6
    assert saved.versions["optuna"] == optuna.__version__
    # `evaluate --prompt-file` rebuilds the same design and gets the same score on the same examples
    spec = spec_from_result(saved)
    assert spec.task.source == str(tmp_path / "toy.yaml")
    ev = evaluate_prompt(tiny_causal, toy_task, spec.template, "dev", verbalizer=spec.verbalizer,
                         triggers=spec.triggers, fewshot=spec.fewshot)
    assert ev.metrics["n"] == 12
    assert ev.metrics["accuracy"] == pytest.approx(saved.scores["search_accuracy"])


def test_best_design_with_demos_and_triggers_round_trips(toy_task, tiny_causal, tmp_path):
    """Force a design with an instruction, a demonstration and a trigger; evaluate gives its score."""
    space = {**SPACE, "templates": [], "human_prompts": False, "instructions": ["Sentiment:"],
             "params": {"shots": 1, "trigger_slots": 1, "trigger_position": "prefix"}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**space, "templates": ["{sentence} so it was [P]"]}))
    result = _search(toy_task, tiny_causal, tmp_path / "run", space=str(path), trials=2, **FAST)
    assert result.fewshot["instruction"] == "Sentiment:" and len(result.fewshot["demo_ids"]) == 1
    assert result.fewshot["split"] == "train" and len(result.trigger_ids) == 1
    assert result.template.startswith("[T] ") and "[T]" not in result.prompt
    spec = spec_from_result(result)
    ev = evaluate_prompt(tiny_causal, toy_task, spec.template, "dev", verbalizer=spec.verbalizer,
                         triggers=spec.triggers, fewshot=spec.fewshot)
    assert ev.metrics["accuracy"] == pytest.approx(result.scores["search_accuracy"])


def test_same_seed_same_trials_other_seed_other_trials(toy_task, tiny_causal, space_file, tmp_path):
    opts = dict(space=space_file, trials=4, sampler="random", pruner="none", storage="memory",
                **{**FAST, "search_examples": 6})
    a = _search(toy_task, tiny_causal, tmp_path / "a", seed=1, **opts)
    b = _search(toy_task, tiny_causal, tmp_path / "b", seed=1, **opts)
    c = _search(toy_task, tiny_causal, tmp_path / "c", seed=2, **opts)
    params = [[r["params"] for r in _log(tmp_path / x)] for x in "abc"]
    assert params[0] == params[1] and a.prompt == b.prompt and a.scores == b.scores
    assert params[0][1:] != params[2][1:]  # trial 0 is the enqueued human prompt in both


def test_resume_continues_the_study(toy_task, tiny_causal, space_file, tmp_path):
    run = tmp_path / "run"
    _search(toy_task, tiny_causal, run, space=space_file, trials=3, **FAST)
    with pytest.raises(UserError, match="already holds a run"):
        _search(toy_task, tiny_causal, run, space=space_file, trials=3, **FAST)
    with pytest.raises(UserError, match="search_examples differ"):
        _search(toy_task, tiny_causal, run, resume=True, space=space_file, trials=5,
                **{**FAST, "search_examples": 6})
    # a task file that gained a human prompt changes the template choices: refused clearly
    changed = Task.from_yaml(toy_task.source)
    changed.prompts.append(HumanPrompt("{sentence} Verdict: [P]"))
    with pytest.raises(UserError, match="choices_hash differ"):
        _search(changed, tiny_causal, run, resume=True, space=space_file, trials=5, **FAST)
    # a run killed mid-trial leaves a RUNNING trial in the journal: it is re-run, not lost
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(run / "study.journal")))
    study = optuna.load_study(study_name="run", storage=storage)
    killed = study.ask()
    choices = study.trials[0].distributions["template"].choices  # the space's template choices
    assert "{sentence} a [P] film ." in choices  # text after [P] is in the space (issue 11)
    killed.suggest_categorical("template", list(choices))
    result = _search(toy_task, tiny_causal, run, resume=True, space=space_file, trials=5, **FAST)
    records = _log(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert len({r["trial"] for r in records}) == 5
    assert result.extra["trials_done"] == 5
    assert json.loads((run / "checkpoint.json").read_text())["state"]["trials_done"] == 5
    states = [t.state.name for t in optuna.load_study(study_name="run", storage=storage).trials]
    assert states.count("FAIL") == 1 and states.count("RUNNING") == 0


def test_two_coordinators_share_a_database_study(toy_task, tiny_causal, space_file, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    opts = dict(space=space_file, storage=url, study_name="shared", **{**FAST, "search_examples": 4})
    _search(toy_task, tiny_causal, tmp_path / "a", trials=3, **opts)
    result = _search(toy_task, tiny_causal, tmp_path / "b", trials=5, **opts)  # joins, no --resume
    study = optuna.load_study(study_name="shared", storage=url)
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    # each of the two human prompts enqueued once, by the first coordinator
    assert sum("human" in t.user_attrs for t in study.trials) == 2
    assert result.extra["trials_done"] == 5 and len(_log(tmp_path / "b")) == 5


def _fake_scores(monkeypatch):
    """Designs without instruction, demos or triggers score 1 on every example; others 0."""
    def score(self, design, examples):
        good = not design.instruction and not design.demos and not design.triggers
        return [1.0 if good else 0.0] * len(examples)

    monkeypatch.setattr(DesignEvaluator, "score", score)


def test_wilcoxon_pruner_stops_weak_designs_and_spares_human_prompts(
        toy_task, tiny_causal, space_file, tmp_path, monkeypatch):
    _fake_scores(monkeypatch)
    run = tmp_path / "run"
    result = _search(toy_task, tiny_causal, run, space=space_file, trials=12, sampler="random",
                     **{**FAST, "batch_size": 2})
    records = _log(run)
    assert len(records) == 12
    pruned = [r for r in records if r["state"] == "PRUNED"]
    assert pruned and all(r["examples"] < 12 and r["human"] is None for r in pruned)
    assert all(r["value"] is None and r["partial_accuracy"] == 0.0 for r in pruned)
    assert all(r["state"] == "COMPLETE" and r["examples"] == 12 for r in records if r["human"])
    assert result.scores["search_accuracy"] == 1.0 and result.extra["pruned"] == len(pruned)


class _FlakyPool(InProcessPool):
    """Loses every third job, as if its worker died mid-job."""

    def __init__(self, evaluator):
        super().__init__(evaluator)
        self.calls = 0
        self.lost = 0

    def poll(self):
        self.calls += 1
        if self.calls % 3 == 0 and self._queue:
            job = self._queue.pop(0)
            job.attempts += 1
            self.lost += 1
            return [Outcome(job, lost=True)]
        return super().poll()


def test_lost_jobs_are_requeued_and_counted_once(toy_task, tiny_causal, space_file, tmp_path,
                                                 monkeypatch):
    _fake_scores(monkeypatch)
    pools = []

    def make_pool(workers, *, backend, recipe, task, batch_size, address=None, per_actor=2):
        pools.append(_FlakyPool(DesignEvaluator(backend, task, batch_size)))
        return pools[0]

    monkeypatch.setattr(blackbox, "make_pool", make_pool)
    run = tmp_path / "run"
    _search(toy_task, tiny_causal, run, space=space_file, trials=6, pruner="none", **FAST)
    records = _log(run)
    assert pools[0].lost > 0
    assert len(records) == 6 and all(r["state"] == "COMPLETE" and r["examples"] == 12 for r in records)
    assert all(r["value"] in (0.0, 1.0) for r in records)  # no chunk counted twice or missing


def test_bad_settings_are_user_errors(toy_task, tiny_causal, space_file, tmp_path):
    with pytest.raises(UserError, match="sampler"):
        strategies.get("optuna").from_options({"sampler": "tpx"})
    with pytest.raises(UserError, match="did you mean 'trials'"):
        strategies.get("optuna").from_options({"trails": 3})
    with pytest.raises(UserError, match="never searched on"):
        strategies.get("optuna").from_options({"search-splits": "train,test"})
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SPACE, "task": "sst-2"}))
    with pytest.raises(UserError, match="pass --task sst-2"):
        _search(toy_task, tiny_causal, tmp_path / "r1", space=str(other))
    with pytest.raises(UserError, match="--storage"):
        _search(toy_task, tiny_causal, tmp_path / "r2", space=space_file, storage="mongo")


def test_cli_lists_the_strategy_options():
    from typer.testing import CliRunner

    from autoprompt_search.cli import app

    out = CliRunner().invoke(app, ["search", "--strategy", "optuna", "--show-options"],
                             terminal_width=200)
    assert out.exit_code == 0
    for option in ("--trials", "--workers", "--ray-address", "--sampler", "--storage", "--space"):
        assert option in out.output


def test_masked_lm_search_keeps_predict_first_templates(toy_task, tiny_masked, tmp_path):
    """A masked LM reads [P] anywhere, so a human prompt with text after [P] stays in the space."""
    space = {**SPACE, "templates": ["[P] : {sentence}"], "verbalizers": {}}
    path = tmp_path / "masked.yaml"
    path.write_text(yaml.safe_dump(space))
    result = run_search("optuna", task=toy_task, model="tiny-masked", out=tmp_path / "run", seed=0,
                        options={"space": str(path), "trials": 4, **FAST}, backend=tiny_masked,
                        progress=False)
    records = _log(tmp_path / "run")
    assert [r["human"] for r in records[:2]] == ["{sentence} it was [P] .", "{sentence} a [P] film ."]
    assert result.extra["left_out"] == [] and len(records) == 4


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_every_sampler_runs_and_is_recorded(sampler, toy_task, tiny_causal, space_file, tmp_path):
    result = _search(toy_task, tiny_causal, tmp_path / "run", space=space_file, trials=3,
                     sampler=sampler, storage="memory", population=2, startup_trials=1,
                     **{**FAST, "search_examples": 4})
    assert result.config["sampler"] == sampler and len(_log(tmp_path / "run")) == 3
