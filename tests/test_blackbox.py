"""The 'optuna' black-box strategy, in-process (no Ray): export, seeds, resume, pruning, faults."""

from __future__ import annotations

import json
import signal

import optuna
import pytest
import yaml
from blackbox_helpers import cli_search, log_records, same_result, stop_after, tiny_dir, trials  # noqa: F401

from autoprompt_search.api import run_search, spec_from_result
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult
from autoprompt_search.core.runs import SearchInterrupted
from autoprompt_search.core.tasks import HumanPrompt, Task
from autoprompt_search.scoring.evaluation import evaluate_prompt
from autoprompt_search.search import blackbox, strategies
from autoprompt_search.search.workers import DesignEvaluator, InProcessPool, Outcome

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
    """One record per trial (the base loop's step-0 record, before any trial, left out)."""
    return log_records(run)


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
    _search(toy_task, tiny_causal, tmp_path / "c", seed=2, **opts)
    params = [[r["params"] for r in _log(tmp_path / x)] for x in "abc"]
    assert params[0] == params[1] and a.prompt == b.prompt and a.scores == b.scores
    assert params[0][1:] != params[2][1:]  # trial 0 is the enqueued human prompt in both


def test_resume_continues_the_study(toy_task, tiny_causal, space_file, tmp_path, caplog):
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
    # a study an older version left (an interrupted trial it failed, one still RUNNING) cannot be
    # replayed: its RUNNING trial is failed and re-queued, so it is re-run, not lost
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(run / "study.journal")))
    study = optuna.load_study(study_name="run", storage=storage)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    killed = study.ask()
    choices = study.trials[0].distributions["template"].choices  # the space's template choices
    assert "{sentence} a [P] film ." in choices  # text after [P] is in the space (issue 11)
    killed.suggest_categorical("template", list(choices))
    with caplog.at_level("WARNING"):
        result = _search(toy_task, tiny_causal, run, resume=True, space=space_file, trials=5, **FAST)
    assert "cannot be replayed" in caplog.text
    records = _log(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert len({r["trial"] for r in records}) == 5
    assert result.extra["trials_done"] == 5
    checkpoint = json.loads((run / "checkpoint.json").read_text())["state"]
    assert checkpoint["step"] == 5 and checkpoint["strategy"]["trials_done"] == 5
    states = [t.state.name for t in optuna.load_study(study_name="run", storage=storage).trials]
    assert states.count("FAIL") == 2 and states.count("RUNNING") == 0


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

    def make_pool(workers, *, backend, recipe, task, batch_size, address=None, per_actor=2, **_):
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


# --- determinism: resume and parallel results ----------------------------------------------
class _StopAfter(InProcessPool):
    """Stops the run (as Ctrl-C would) at its ``stop``-th poll."""

    def __init__(self, evaluator, stop):
        super().__init__(evaluator)
        self.polls, self.stop = 0, stop

    def poll(self):
        self.polls += 1
        if self.polls == self.stop:
            raise KeyboardInterrupt
        return super().poll()


class _AnyOrder(InProcessPool):
    """Several jobs in flight, handed back in a seeded random order (as parallel workers do)."""

    def __init__(self, evaluator, slots, seed):
        super().__init__(evaluator)
        self.slots, self.rng = slots, __import__("random").Random(seed)

    @property
    def free_slots(self):
        return self.slots - len(self._queue)

    def poll(self):
        out = []
        for _ in range(self.rng.randint(1, len(self._queue))):
            job = self._queue.pop(self.rng.randrange(len(self._queue)))
            out.append(Outcome(job, scores=self.evaluator.score(job.design, job.examples)))
        return out


def _patch_pool(monkeypatch, factory):
    def make_pool(workers, *, backend, recipe, task, batch_size, address=None, per_actor=2, **scoring):
        return factory(DesignEvaluator(backend, task, batch_size, **scoring))

    monkeypatch.setattr(blackbox, "make_pool", make_pool)


DETERMINISM = dict(trials=14, sampler="tpe", startup_trials=3, **{**FAST, "batch_size": 3})


@pytest.mark.parametrize("window,stop,every", [(1, 5, 1), (1, 23, 4), (3, 2, 1), (3, 17, 1),
                                              (3, 23, 5), (3, "ask", 1)])
def test_a_stopped_run_resumes_as_if_it_never_stopped(window, stop, every, toy_task, tiny_causal,
                                                      space_file, tmp_path, monkeypatch, caplog):
    """Stopped mid-trial (or mid-ask, with part of a trial's params stored), then resumed:
    the same trials in the same order with the same scores and result as an uninterrupted run.
    With a checkpoint every 4 or 5 trials, the trials told after the last one come from the
    journal."""
    _fake_scores(monkeypatch)  # so that the Wilcoxon pruner stops some trials
    opts = dict(space=space_file, trials_in_flight=window, eval_every=every, **DETERMINISM)
    whole = _search(toy_task, tiny_causal, tmp_path / "whole", **opts)
    run = tmp_path / "run"
    if stop == "ask":  # the 9th trial's second choice
        from autoprompt_search.search import blackbox_space

        calls = {"n": 0}
        real = blackbox_space.suggest

        def suggest(trial, name, dist):
            calls["n"] += trial.number == 8
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return real(trial, name, dist)

        monkeypatch.setattr(blackbox_space, "suggest", suggest)
    else:
        _patch_pool(monkeypatch, lambda ev: _StopAfter(ev, stop))
    with pytest.raises(SearchInterrupted):  # Ctrl-C: exit status 130 in the CLI
        _search(toy_task, tiny_causal, run, **opts)
    monkeypatch.undo()
    _fake_scores(monkeypatch)
    assert len(_log(run)) < 14  # (none finished yet when stopped at the 2nd poll)
    with caplog.at_level("WARNING"):
        resumed = _search(toy_task, tiny_causal, run, resume=True, **opts)
    assert "cannot be replayed" not in caplog.text
    assert trials(run) == trials(tmp_path / "whole")
    assert any(r["state"] == "PRUNED" for r in trials(run))
    same_result(resumed, whole)


def test_trials_do_not_depend_on_the_order_results_come_back(toy_task, tiny_causal, space_file,
                                                              tmp_path, monkeypatch):
    """With 3 trials in flight, results handed back in any order give the same trials."""
    opts = dict(space=space_file, trials_in_flight=3, **DETERMINISM)
    one = _search(toy_task, tiny_causal, tmp_path / "one", **opts)
    for seed in (1, 2):
        _patch_pool(monkeypatch, lambda ev, s=seed: _AnyOrder(ev, slots=4, seed=s))
        other = _search(toy_task, tiny_causal, tmp_path / f"any{seed}", **opts)
        assert trials(tmp_path / f"any{seed}") == trials(tmp_path / "one")
        same_result(other, one)
    # a window of 1 is another (still fixed) schedule: TPE sees other histories
    _search(toy_task, tiny_causal, tmp_path / "w1", **{**opts, "trials_in_flight": 1})
    assert [r["params"] for r in trials(tmp_path / "w1")] != [r["params"] for r in trials(tmp_path / "one")]


def test_a_killed_process_resumes_as_if_it_never_stopped(toy_task, space_file, tiny_dir, tmp_path):  # noqa: F811
    """The CLI in a real process: SIGKILL mid-run, resume, Ctrl-C (exit 130), resume to the end;
    the trials and the result are those of an uninterrupted run."""
    opts = dict(space=space_file, trials=20, sampler="tpe", startup_trials=4,
                **{**FAST, "batch_size": 2})
    whole = run_search("optuna", task=toy_task, model=str(tiny_dir), out=tmp_path / "whole", seed=0,
                       options=opts, progress=False)
    run = tmp_path / "run"
    args = ["--strategy", "optuna", "--task", toy_task.source, "--model", str(tiny_dir),
            "--out", str(run), "--seed", "0"]
    args += [a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    assert stop_after(cli_search(args, run), run, 4, signal.SIGKILL) == -signal.SIGKILL
    assert stop_after(cli_search([*args, "--resume"], run), run, 9, signal.SIGINT) == 130
    assert "interrupted" in (tmp_path / "run.stderr").read_text()
    assert len(trials(run)) < 20
    assert cli_search([*args, "--resume"], run).wait(timeout=240) == 0
    assert trials(run) == trials(tmp_path / "whole")
    same_result(PromptResult.load(run), whole)


def test_samplers_pruners_and_storages_are_declared_once_and_leave_no_global_state(monkeypatch):
    import os

    from autoprompt_search.search import blackbox_study as bs
    from autoprompt_search.search.workers import _env_defaults

    for names, registry in ((bs.SamplerName, bs.samplers), (bs.PrunerName, bs.pruners),
                            (bs.StorageKind, bs.storages)):
        assert registry.names() == sorted(m.value for m in names)
    config = blackbox.OptunaConfig(sampler="random", pruner="none")
    assert config.sampler is bs.SamplerName.random and config.pruner is bs.PrunerName.none
    assert isinstance(bs.samplers.get("nsga2")(config, 3), optuna.samplers.NSGAIISampler)
    assert bs.storage_kind("sqlite:///x.db") is bs.StorageKind.rdb
    with pytest.raises(UserError, match="--pruner 'wilcoxn': choose wilcoxon, none"):
        blackbox.OptunaConfig(pruner="wilcoxn")
    # Optuna's verbosity is lowered inside a search only
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        with bs.quiet_optuna():
            assert optuna.logging.get_verbosity() == optuna.logging.WARNING
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(before)
    # environment variables for Ray's processes: set inside the block only, never overwritten
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    monkeypatch.setenv("AUTOPROMPT_TEST_KEPT", "mine")
    with _env_defaults({"RAY_USAGE_STATS_ENABLED": "0", "AUTOPROMPT_TEST_KEPT": "theirs"}):
        assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
        assert os.environ["AUTOPROMPT_TEST_KEPT"] == "mine"
    assert "RAY_USAGE_STATS_ENABLED" not in os.environ and os.environ["AUTOPROMPT_TEST_KEPT"] == "mine"
