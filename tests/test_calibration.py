"""Calibrated class scores: the modes on hand-made scores, the estimators on tiny models, the
record's JSON round trip and its reload through evaluate --prompt-file, and the CLI options."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from compare_fixtures import make_found, tiny_dir, tiny_loaded, toy_yaml  # noqa: F401

from autoprompt_search.api import evaluate_many, prompts_for
from autoprompt_search.cli import main
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult
from autoprompt_search.scoring import calibration as cal
from autoprompt_search.scoring.calibration import (
    Calibration,
    CalibrationRecord,
    apply_offsets,
    estimate_calibration,
    prior_offsets,
)
from autoprompt_search.scoring.evaluation import evaluate_prompt, evaluation_from_scores
from autoprompt_search.scoring.scorer import PromptScorer

LOG2 = math.log(2.0)


# --- hand-made class scores --------------------------------------------------------------
def test_a_model_that_prefers_class_1_by_log_2_is_corrected():
    # class 1 gets log 2 more than it should: examples 0 and 1 are class 0 by a margin < log 2
    scores = torch.tensor([[-0.5, -0.5 + LOG2 - 0.3], [-1.0, -1.0 + LOG2 - 0.1],
                           [-1.0, -1.0 + LOG2 + 0.4]])
    assert scores.argmax(-1).tolist() == [1, 1, 1]
    offsets = torch.tensor([0.0, LOG2])
    fixed = apply_offsets(scores, offsets)
    assert fixed.argmax(-1).tolist() == [0, 0, 1]
    assert torch.allclose(fixed[:, 1] - fixed[:, 0], scores[:, 1] - scores[:, 0] - LOG2)


def test_prior_offsets_are_the_log_of_the_normalised_mean_distribution():
    # rows p = (1/3, 2/3) and (2/3, 1/3) given as unnormalised log-probs: the mean is uniform
    rows = torch.log(torch.tensor([[0.1, 0.2], [0.4, 0.2]]))
    assert torch.allclose(prior_offsets(rows), torch.log(torch.tensor([0.5, 0.5])))
    # a prior of (0.2, 0.8): every row identical
    rows = torch.log(torch.tensor([[0.02, 0.08], [0.2, 0.8]]))
    off = prior_offsets(rows)
    assert torch.allclose(off.exp(), torch.tensor([0.2, 0.8]), atol=1e-6)
    # dividing it out makes the two classes tie
    fixed = apply_offsets(torch.log(torch.tensor([[0.2, 0.8]])), off)
    assert fixed[0, 0] == pytest.approx(float(fixed[0, 1]), abs=1e-6)


def test_evaluation_from_scores_applies_a_record_to_predictions_metrics_and_loss():
    scores = torch.tensor([[-0.5, -0.2], [-0.3, -0.4], [-2.0, -0.1]])
    record = CalibrationRecord(Calibration.CONTENT_FREE, [0.0, LOG2], ["neg", "pos"], "by hand")
    plain = evaluation_from_scores("p", "dev", scores, [0, 0, 1], ["neg", "pos"])
    calibrated = evaluation_from_scores("p", "dev", scores, [0, 0, 1], ["neg", "pos"], record)
    assert plain.predictions == [1, 0, 1] and calibrated.predictions == [0, 0, 1]
    assert calibrated.metrics["accuracy"] == 1.0 and plain.metrics["accuracy"] == pytest.approx(2 / 3)
    shifted = scores - torch.tensor([0.0, LOG2])
    want = float(torch.nn.functional.cross_entropy(shifted, torch.tensor([0, 0, 1])))
    assert calibrated.loss == pytest.approx(want)
    assert calibrated.calibration is record and plain.calibration is None


def test_calibration_modes_parse_and_bad_ones_name_the_choices():
    assert [m.value for m in Calibration] == ["none", "content-free", "train-prior", "pmi"]
    assert Calibration.parse("pmi") is Calibration.PMI
    with pytest.raises(UserError, match=r"none\|content-free\|train-prior\|pmi"):
        Calibration.parse("contentfree")


def test_record_json_round_trip_and_decision_rule():
    record = CalibrationRecord(Calibration.TRAIN_PRIOR, [-1.2, -0.35], ["negative", "positive"],
                               "mean over 4 training inputs", [], 4)
    data = json.loads(json.dumps(record.to_json()))
    back = CalibrationRecord.from_json(data)
    assert back == record
    assert "argmax_c log p(c|x) - offset_c" in data["rule"]
    assert "negative -1.200000" in data["rule"] and "positive -0.350000" in data["rule"]
    assert CalibrationRecord.from_json(None) is None
    with pytest.raises(UserError, match="2 offsets for 1 classes"):
        CalibrationRecord("pmi", [0.0, 1.0], ["a"])


# --- estimators on tiny models ---------------------------------------------------------------
def _scorer(backend, task, template="{sentence} it was [P] ."):
    return PromptScorer(backend, task, template)


def test_content_free_fills_every_field_with_the_content_free_inputs(tiny_backend, toy_task,
                                                                     monkeypatch):
    scorer = _scorer(tiny_backend, toy_task)
    seen = []
    real = cal._class_logprobs

    def spy(s, examples, triggers):
        seen.extend(ex.fields for ex in examples)
        return real(s, examples, triggers)

    monkeypatch.setattr(cal, "_class_logprobs", spy)
    record = estimate_calibration("content-free", scorer)
    mask = tiny_backend.tokenizer.mask_token or "[MASK]"
    assert seen == [{"sentence": "N/A"}, {"sentence": ""}, {"sentence": mask}]
    assert record.inputs == ["N/A", "", mask] and record.n == 3
    # the offsets are the log mean class distribution of exactly those prompts
    from autoprompt_search.core.data import Example

    examples = [Example({"sentence": t}, 0) for t in ["N/A", "", mask]]
    want = torch.softmax(scorer.class_logprobs(examples), -1).mean(0).log()
    assert torch.allclose(torch.tensor(record.offsets), want, atol=1e-5)
    assert sum(math.exp(o) for o in record.offsets) == pytest.approx(1.0, abs=1e-5)


def test_train_prior_averages_over_the_training_inputs(tiny_causal, toy_task):
    scorer = _scorer(tiny_causal, toy_task)
    record = estimate_calibration("train-prior", scorer)
    train = toy_task.examples("train")
    want = torch.softmax(scorer.class_logprobs(train), -1).mean(0).log()
    assert record.n == len(train)
    assert torch.allclose(torch.tensor(record.offsets), want, atol=1e-5)
    # labels are unused: the same inputs with other labels give the same offsets
    from dataclasses import replace

    flipped = [replace(ex, label=1 - ex.label) for ex in train]
    again = estimate_calibration("train-prior", scorer, train=flipped)
    assert again.offsets == pytest.approx(record.offsets)


def test_pmi_scores_the_label_words_after_the_premise(tiny_causal, toy_task):
    scorer = _scorer(tiny_causal, toy_task)
    record = estimate_calibration("pmi", scorer)
    assert record.inputs == ["Answer:"]
    premised = PromptScorer(tiny_causal, toy_task, "Answer: [P]")
    from autoprompt_search.core.data import Example

    want = torch.log_softmax(premised.class_logprobs([Example({}, 0)])[0], -1)
    assert torch.allclose(torch.tensor(record.offsets), want, atol=1e-5)
    other = estimate_calibration("pmi", scorer, premise="Sentiment:")
    assert other.inputs == ["Sentiment:"] and other.offsets != pytest.approx(record.offsets)


def test_calibrated_evaluation_equals_offsets_applied_by_hand(tiny_causal, toy_task):
    plain = evaluate_prompt(tiny_causal, toy_task, "{sentence} it was [P] .", "test")
    ev = evaluate_prompt(tiny_causal, toy_task, "{sentence} it was [P] .", "test",
                         calibration="content-free")
    offsets = torch.tensor(ev.calibration.offsets)
    want = apply_offsets(torch.tensor(plain.scores), offsets).argmax(-1).tolist()
    assert ev.predictions == want
    assert ev.calibration.mode is Calibration.CONTENT_FREE


def test_open_vocabulary_tasks_refuse_calibration(tiny_causal, toy_task):
    scorer = _scorer(tiny_causal, toy_task)
    scorer.label_words = None  # as for an open-vocabulary task
    with pytest.raises(UserError, match="classification tasks"):
        estimate_calibration("pmi", scorer)


# --- the record in result.json and its reload -----------------------------------------------------
def _calibrated_run(backend, task_path, folder, mode="content-free"):
    result = make_found(backend, task_path, folder)
    spec = prompts_for(str(task_path), None, folder, False)[0]
    scorer = PromptScorer(backend, spec.task, spec.template, spec.verbalizer)
    record = estimate_calibration(mode, scorer, spec.triggers)
    result.calibration = record.to_json()
    result.save(folder)
    return result, record


def test_prompt_file_reloads_with_the_stored_offsets(tmp_path, tiny_loaded, toy_yaml, monkeypatch):  # noqa: F811
    _, record = _calibrated_run(tiny_loaded, toy_yaml, tmp_path / "run")
    loaded = PromptResult.load(tmp_path / "run")
    assert CalibrationRecord.from_json(loaded.calibration) == record
    spec = prompts_for(str(toy_yaml), None, tmp_path / "run", False)[0]
    direct = evaluate_prompt(tiny_loaded, spec.task, spec.template, "test", triggers=spec.triggers,
                             calibration=record)

    def no_estimate(*a, **k):
        raise AssertionError("a stored calibration must not be re-estimated")

    monkeypatch.setattr(cal, "estimate_calibration", no_estimate)
    again = evaluate_prompt(tiny_loaded, spec.task, spec.template, "test", triggers=spec.triggers,
                            calibration=spec.calibration)
    assert again.predictions == direct.predictions  # example by example
    row = evaluate_many([spec], model=tiny_loaded, split="test")[0]
    assert row["accuracy"] == direct.metrics["accuracy"]
    assert row["calibration"]["offsets"] == record.offsets
    with pytest.raises(UserError, match="found with calibration content-free"):
        evaluate_many([spec], model=tiny_loaded, split="test", calibration="pmi")


def test_compare_scores_found_prompts_with_their_stored_calibration(tmp_path, tiny_loaded, toy_yaml):  # noqa: F811
    from autoprompt_search.analysis.compare import collect_prompts, compare_prompts

    _, record = _calibrated_run(tiny_loaded, toy_yaml, tmp_path / "run")
    task, entries = collect_prompts(str(toy_yaml), [tmp_path / "run"], True, [])
    comp = compare_prompts(task, entries, model=tiny_loaded, similarity=False, progress=False,
                           resamples=100)
    found = next(r for r in comp.rows if r["kind"] == "found")
    assert found["calibration"]["offsets"] == record.offsets
    # human prompts follow the found prompts' mode, estimated for each prompt
    humans = [r for r in comp.rows if r["kind"] == "human"]
    assert humans and all(r["calibration"]["mode"] == "content-free" for r in humans)
    assert comp.settings["calibration"] == "content-free"


def test_export_states_the_decision_rule(tmp_path, tiny_loaded, toy_yaml):  # noqa: F811
    from autoprompt_search.analysis.export import export_prompts

    _, record = _calibrated_run(tiny_loaded, toy_yaml, tmp_path / "run", mode="pmi")
    text = export_prompts([tmp_path / "run"], "txt", None)
    template, words, rule = text.rstrip("\n").split("\t")
    assert rule.startswith("predict argmax_c log p(c|x) - offset_c")
    assert f"negative {record.offsets[0]:.6f}" in rule
    out = tmp_path / "p.json"
    export_prompts([tmp_path / "run"], "json", out)
    data = json.loads(out.read_text())
    assert data["calibration"]["offsets"] == record.offsets
    assert data["extra"]["export"]["rule"] == rule
    spec = prompts_for(str(toy_yaml), None, out, False)[0]
    assert spec.calibration == record
    import yaml

    (path,) = export_prompts([tmp_path / "run"], "lm-eval", tmp_path / "lm-eval")
    meta = yaml.safe_load(path.read_text())["metadata"]
    assert meta["calibration"]["offsets"] == record.offsets
    assert meta["decision_rule"].startswith(rule)


def test_export_calibration_estimates_for_results_without_one(tmp_path, tiny_dir, tiny_loaded, toy_yaml):  # noqa: F811
    from autoprompt_search.analysis.export import export_prompts

    make_found(tiny_loaded, toy_yaml, tmp_path / "run")
    data = json.loads(export_prompts([tmp_path / "run"], "jsonl", None,
                                     calibration="train-prior").splitlines()[0])
    spec = prompts_for(str(toy_yaml), None, tmp_path / "run", False)[0]
    want = estimate_calibration("train-prior", PromptScorer(tiny_loaded, spec.task, spec.template),
                                spec.triggers)
    assert data["calibration"]["mode"] == "train-prior"
    assert data["calibration"]["offsets"] == pytest.approx(want.offsets, abs=1e-5)


# --- the CLI ----------------------------------------------------------------------------------
def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["autoprompt-search", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_evaluate_prompt_file_gives_the_same_score_per_example(monkeypatch, capsys, tmp_path,
                                                                    tiny_dir, tiny_loaded, toy_yaml):  # noqa: F811
    _calibrated_run(tiny_loaded, toy_yaml, tmp_path / "run")
    spec = prompts_for(str(toy_yaml), None, tmp_path / "run", False)[0]
    want = evaluate_prompt(tiny_loaded, spec.task, spec.template, "test", triggers=spec.triggers,
                           calibration=spec.calibration)
    out_json = tmp_path / "ev.json"
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "--prompt-file", str(tmp_path / "run"),
                             "--model", str(tiny_dir), "--json", str(out_json))
    assert code == 0, err
    row = json.loads(out_json.read_text())["results"][0]
    assert row["accuracy"] == want.metrics["accuracy"]
    assert row["calibration"]["offsets"] == spec.calibration.offsets


@pytest.mark.parametrize("mode", ["none", "content-free", "train-prior", "pmi"])
def test_cli_evaluate_accepts_each_mode(monkeypatch, capsys, tmp_path, tiny_dir, toy_yaml, mode):  # noqa: F811
    out_json = tmp_path / "ev.json"
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--task", str(toy_yaml), "--prompt",
                           "{sentence} it was [P] .", "--model", str(tiny_dir),
                           "--calibration", mode, "--json", str(out_json))
    assert code == 0, err
    row = json.loads(out_json.read_text())["results"][0]
    assert (row["calibration"] is None) == (mode == "none")
    if mode != "none":
        assert row["calibration"]["mode"] == mode


def test_cli_compare_and_export_accept_the_option(monkeypatch, capsys, tmp_path,  # noqa: F811
                                                   tiny_dir, tiny_loaded, toy_yaml):  # noqa: F811
    make_found(tiny_loaded, toy_yaml, tmp_path / "run")
    code, _, err = run_cli(monkeypatch, capsys, "compare", str(tmp_path / "run"), "--model",
                           str(tiny_dir), "--no-similarity", "--resamples", "100",
                           "--calibration", "pmi", "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert all(r["calibration"]["mode"] == "pmi" for r in rows)
    code, out, err = run_cli(monkeypatch, capsys, "export", str(tmp_path / "run"),
                             "--calibration", "content-free")
    assert code == 0, err
    assert "calibration content-free" in out.split("\t")[2]


@pytest.mark.parametrize("command", ["evaluate", "compare", "export", "search", "project"])
def test_cli_bad_calibration_is_one_error_line(monkeypatch, capsys, tmp_path, toy_yaml, command):  # noqa: F811
    args = {"evaluate": ["evaluate", "--task", str(toy_yaml), "--prompt", "{sentence} [P] ."],
            "compare": ["compare", "--task", str(toy_yaml)],
            "export": ["export", str(tmp_path)],
            "search": ["search", "--task", str(toy_yaml), "--out", str(tmp_path / "s")],
            "project": ["project", str(tmp_path)]}[command]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--calibration", "bogus")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "bogus" in lines[0]
    assert "Traceback" not in err


# --- search ------------------------------------------------------------------------------------
def _gradient(backend, task, out, **options):
    from autoprompt_search.api import run_search

    opts = {"iterations": 4, "k": 8, "position": "cycle", **options}
    return run_search("gradient", task=task, model=backend.name,
                      template="{sentence} [T] [T] [P] .", out=out, seed=1, backend=backend,
                      options=opts, progress=False)


@pytest.mark.parametrize("mode", ["content-free", "pmi"])
def test_gradient_search_selects_calibrated_scores_and_stores_the_offsets(tiny_causal, toy_task,
                                                                          tmp_path, mode):
    result = _gradient(tiny_causal, toy_task, tmp_path / "run", calibration=mode)
    record = CalibrationRecord.from_json(result.calibration)
    assert record.mode.value == mode
    # the stored offsets are the best triggers' own, and they reproduce the dev score
    scorer = PromptScorer(tiny_causal, toy_task, result.template)
    assert record.offsets == pytest.approx(
        estimate_calibration(mode, scorer, result.trigger_ids).offsets, abs=1e-5)
    dev = evaluate_prompt(tiny_causal, toy_task, result.template, "dev",
                          triggers=result.trigger_ids, calibration=record)
    assert dev.metrics["accuracy"] == pytest.approx(result.scores["dev_accuracy"])
    assert dev.loss == pytest.approx(result.scores["dev_loss"], abs=1e-4)
    saved = PromptResult.load(tmp_path / "run")
    assert saved.calibration == result.calibration and saved.config["calibration"] == mode


def test_calibrated_gradient_search_resumes_to_the_same_result(tiny_causal, toy_task, tmp_path):
    from autoprompt_search.api import run_search

    full = _gradient(tiny_causal, toy_task, tmp_path / "full", calibration="train-prior",
                     batch_size=5, position="random")
    _gradient(tiny_causal, toy_task, tmp_path / "cut", calibration="train-prior", batch_size=5,
              position="random", iterations=2)
    (tmp_path / "cut" / "result.json").unlink()
    resumed = run_search("gradient", task=toy_task, model="tiny-causal",
                         template="{sentence} [T] [T] [P] .", out=tmp_path / "cut", seed=1,
                         resume=True, backend=tiny_causal, progress=False,
                         options={"iterations": 4, "k": 8, "position": "random", "batch_size": 5,
                                  "calibration": "train-prior"})
    assert resumed.trigger_ids == full.trigger_ids and resumed.scores == full.scores
    assert resumed.calibration == full.calibration


def test_cli_search_accepts_the_option(monkeypatch, capsys, tmp_path, tiny_dir, toy_yaml):  # noqa: F811
    code, _, err = run_cli(monkeypatch, capsys, "search", "--task", str(toy_yaml), "--model",
                           str(tiny_dir), "--template", "{sentence} [T] [P] .", "--out",
                           str(tmp_path / "s"), "--calibration", "content-free",
                           "--iterations", "2", "--k", "4")
    assert code == 0, err
    saved = PromptResult.load(tmp_path / "s")
    assert saved.calibration["mode"] == "content-free"


@pytest.mark.parametrize("strategy", ["soft", "pez"])
def test_continuous_searches_store_the_projected_prompts_offsets(tiny_causal, toy_task, tmp_path,
                                                                 strategy):
    from autoprompt_search.api import run_search

    opts = {"steps": 4, "eval_every": 2, "batch_size": 4, "calibration": "content-free"}
    result = run_search(strategy, task=toy_task, model="tiny-causal",
                        template="{sentence} [T] [T] [P] .", out=tmp_path / strategy, seed=0,
                        options=opts, backend=tiny_causal, progress=False)
    record = CalibrationRecord.from_json(result.calibration)
    assert record.mode is Calibration.CONTENT_FREE
    # the record is the saved hard prompt's own: re-estimating for its trigger ids agrees
    scorer = PromptScorer(tiny_causal, toy_task, result.template)
    assert record.offsets == pytest.approx(
        estimate_calibration("content-free", scorer, result.trigger_ids).offsets, abs=1e-4)
    key = "projected_dev_accuracy" if strategy == "soft" else "dev_accuracy"
    dev = evaluate_prompt(tiny_causal, toy_task, result.template, "dev",
                          triggers=result.trigger_ids, calibration=record)
    assert dev.metrics["accuracy"] == pytest.approx(result.scores[key])
    if strategy == "soft":  # `project` scores the soft prompt with the mode it was trained with
        from autoprompt_search.scoring.softprompt import SoftPrompt, project_soft_prompt

        report = project_soft_prompt(SoftPrompt.load(tmp_path / strategy), tiny_causal,
                                     task=toy_task, split="dev")
        assert report["evaluation"]["calibration"] == "content-free"
        assert report["evaluation"]["projected"]["accuracy"] == pytest.approx(
            result.scores["projected_dev_accuracy"])
        assert report["evaluation"]["soft"]["accuracy"] == pytest.approx(
            result.scores["dev_accuracy"])


def test_blackbox_trials_are_scored_calibrated_and_the_result_reproduces(tiny_causal, tmp_path,
                                                                         toy_yaml):  # noqa: F811
    import yaml
    from test_blackbox import FAST, SPACE

    from autoprompt_search.api import load_task, run_search

    task = load_task(str(toy_yaml))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    result = run_search("optuna", task=task, model="tiny-causal", out=tmp_path / "run", seed=0,
                        backend=tiny_causal, progress=False,
                        options={**FAST, "space": str(space), "trials": 4, "pruner": "none",
                                 "calibration": "content-free"})
    record = CalibrationRecord.from_json(result.calibration)
    assert record.mode is Calibration.CONTENT_FREE
    spec = prompts_for(str(toy_yaml), None, tmp_path / "run", False)[0]
    ev = evaluate_prompt(tiny_causal, spec.task, spec.template, "dev", verbalizer=spec.verbalizer,
                         triggers=spec.triggers, fewshot=spec.fewshot, calibration=spec.calibration)
    assert ev.metrics["n"] == 12
    assert ev.metrics["accuracy"] == pytest.approx(result.scores["search_accuracy"])
    # the worker's estimate is the one estimator's: re-estimating gives the stored offsets
    scorer = PromptScorer(tiny_causal, spec.task, spec.template, spec.verbalizer, spec.fewshot)
    assert record.offsets == pytest.approx(
        estimate_calibration("content-free", scorer, spec.triggers).offsets, abs=1e-5)


def test_an_uncalibrated_runs_config_is_unchanged(tiny_causal, toy_task, tmp_path):
    _gradient(tiny_causal, toy_task, tmp_path / "run", iterations=1)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "calibration" not in config and "premise" not in config
    assert PromptResult.load(tmp_path / "run").calibration is None
