"""``--strategy auto``: end to end on tiny models, each part's switch, selection, halving, ensembles.

(The conformance suite, tests/test_searchers_conformance.py, also runs it: same seed -> same
result, stop + resume = uninterrupted, result.json reloads through evaluate and compare.)
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from autoprompt_search.analysis.compare import collect_prompts, compare_prompts
from autoprompt_search.api import evaluate_many, prompts_for, run_search
from autoprompt_search.core.results import PromptResult
from autoprompt_search.core.runs import SearchInterrupted
from autoprompt_search.core.templates import Template
from autoprompt_search.scoring.calibration import Calibration, estimate_calibration
from autoprompt_search.scoring.evaluation import evaluate_prompt
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.scoring.specs import spec_from_result
from autoprompt_search.search import strategies
from autoprompt_search.search.auto_candidates import (
    edit_template,
    generated_templates,
    phrase_pool,
    propose_demos,
)
from autoprompt_search.search.auto_select import (
    FIT_ONLY,
    Objective,
    Option,
    Scores,
    cross_validate,
    cv_summary,
    ensemble_weights,
    final_choice,
    nested_order,
    promote,
    rung_sizes,
)

SMALL = {"rounds": 2, "folds": 2, "edits": 3, "demo_proposals": 2, "max_demos": 2,
         "generate_max": 4, "time_budget": 0}


def _run(task, backend, out, seed=0, resume=False, **options):
    return run_search("auto", task=task, model=backend.name, out=out, seed=seed,
                      options={**SMALL, **options}, backend=backend, progress=False, resume=resume)


def _scored(folder) -> list[dict]:
    """Every candidate the log says was scored."""
    out = []
    for line in (folder / "log.jsonl").read_text().splitlines():
        out += json.loads(line).get("scored", [])
    return out


def _dev_scores(folder, task_arg, backend) -> tuple[float, float]:
    """The saved prompt's dev accuracy through evaluate --prompt-file and through compare."""
    specs = prompts_for(task_arg, None, folder / "result.json", False)
    evaluated = evaluate_many(specs, model=backend, split="dev")[0]["accuracy"]
    task, entries = collect_prompts(task_arg, [folder], human=False)
    compared = compare_prompts(task, entries, model=backend, split="dev", similarity=False,
                               resamples=10, progress=False).rows[0]["accuracy"]
    return evaluated, compared


@pytest.fixture
def toy_file(toy_task, tmp_path):
    import yaml

    raw = {"name": "toy", "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
           "fields": ["sentence"], "labels": ["negative", "positive"],
           "verbalizer": {"negative": ["bad"], "positive": ["great"]},
           "prompts": [{"template": "{sentence} it was [P] .", "name": "it-was"},
                       {"template": "{sentence} All in all, the film was [P] .", "name": "all-in-all",
                        "verbalizer": {"negative": ["terrible"], "positive": ["good"]}}]}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --- end to end ---------------------------------------------------------------------------
def test_auto_is_registered():
    assert "auto" in strategies.names()


def test_runs_end_to_end_and_the_prompt_reloads_with_its_score(toy_file, tiny_causal, tmp_path):
    result = _run(str(toy_file), tiny_causal, tmp_path / "run")
    assert result.strategy == "auto" and result.seed == 0 and result.versions["autoprompt_search"]
    for key in ("cv_score", "cv_mean", "cv_std", "dev_accuracy"):
        assert key in result.scores
    extra = result.extra
    assert extra["provenance"][-1]["id"] == extra["candidate"]
    assert extra["scorings"] > 0 and "seconds" in extra and extra["selection"].startswith("2-fold")
    saved = PromptResult.load(tmp_path / "run")
    assert saved.config["strategy"] == "auto" and saved.config["seed"] == 0
    # evaluate --prompt-file and compare score it as the search reported
    evaluated, compared = _dev_scores(tmp_path / "run", str(toy_file), tiny_causal)
    assert evaluated == compared == pytest.approx(result.scores["dev_accuracy"])
    # the stored calibration is what the engine's estimator gives for that prompt
    if result.calibration and result.calibration["mode"] in ("content-free", "pmi"):
        spec = spec_from_result(saved)
        scorer = PromptScorer(tiny_causal, spec.task, spec.template, spec.verbalizer, spec.fewshot)
        fresh = estimate_calibration(result.calibration["mode"], scorer)
        assert fresh.offsets == pytest.approx(result.calibration["offsets"], abs=1e-4)


@pytest.mark.parametrize("mode", ["content-free", "pmi"])
def test_a_calibration_mode_records_the_offsets_the_estimator_gives(toy_file, tiny_masked, tmp_path, mode):
    result = _run(str(toy_file), tiny_masked, tmp_path / "run", calibration=mode, rounds=1)
    assert result.calibration["mode"] == mode
    spec = spec_from_result(PromptResult.load(tmp_path / "run"))
    scorer = PromptScorer(tiny_masked, spec.task, spec.template, spec.verbalizer, spec.fewshot)
    fresh = estimate_calibration(mode, scorer)
    assert fresh.offsets == pytest.approx(result.calibration["offsets"], abs=1e-4)


def test_a_template_read_as_a_whole_sequence_keeps_its_own_label_words(toy_task, tiny_causal, tmp_path):
    # "{sentence} a [P] film ." has text after [P]: a causal LM reads one sequence per label word,
    # so the candidate is scored with its own words only (no screening of the word table)
    _run(toy_task, tiny_causal, tmp_path / "run", rounds=0)
    seq = [s for s in _scored(tmp_path / "run") if s["template"] == "{sentence} a [P] film ."]
    assert seq and all(p.startswith("own/") for s in seq for p in s["picks"])
    other = [p for s in _scored(tmp_path / "run") if s["template"] != "{sentence} a [P] film ."
             for p in s["picks"]]
    assert any(not p.startswith("own/") for p in other)


# --- each part's switch -------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["no_generate", "no_edit", "no_demos", "no_verbalizer",
                                  "no_calibration", "no_cv"])
def test_each_no_flag_switches_its_part_off(flag, toy_file, tiny_causal, tmp_path):
    on = _scored_parts(_run(str(toy_file), tiny_causal, tmp_path / "on"), tmp_path / "on")
    result = _run(str(toy_file), tiny_causal, tmp_path / "off", **{flag: True})
    off = _scored_parts(result, tmp_path / "off")
    part = {"no_generate": "generate", "no_edit": "edit", "no_demos": "demos"}.get(flag)
    if part is not None:
        assert part in on["parts"] and part not in off["parts"]
    if flag == "no_demos":
        assert not any(off["demos"]) and result.fewshot is None
    if flag == "no_verbalizer":  # every choice is the candidate's own verbalizer
        assert on["options"] - {"own"} and off["options"] == {"own"}
        assert result.extra["choice"]["verbalizer"] == "own"
    if flag == "no_calibration":
        assert on["modes"] - {"none"} and off["modes"] == {"none"}
        assert result.calibration is None
    if flag == "no_cv":  # one split: chosen on train, judged on dev
        assert on["folds"] == {2} and off["folds"] == {1}
        assert result.extra["selection"] == "dev (--no-cv)"
    assert result.extra["parts"][flag[3:]] is False


def _scored_parts(result, folder) -> dict[str, set]:
    scored = _scored(folder)
    picks = [p for s in scored for p in s["picks"]]
    return {"parts": {s["part"] for s in scored}, "demos": [tuple(s["demos"]) for s in scored],
            "options": {p.split("/")[0] for p in picks}, "modes": {p.split("/")[1] for p in picks},
            "folds": {len(s["picks"]) for s in scored}}


# --- selection ----------------------------------------------------------------------------
def test_the_final_choice_is_the_fold_mean_minus_the_spread_penalty():
    steady = [0.70, 0.70, 0.70, 0.70]  # mean 0.70, std 0
    lucky = [1.00, 0.50, 1.00, 0.50]  # mean 0.75, std 0.25: one dev fold would say 1.00
    assert cv_summary(steady, 0.5) == pytest.approx((0.70, 0.0, 0.70))
    assert cv_summary(lucky, 0.5) == pytest.approx((0.75, 0.25, 0.625))
    cands = [(0, cv_summary(lucky, 0.5)[2], 0.9), (1, cv_summary(steady, 0.5)[2], 0.1)]
    assert final_choice(cands) == 1  # the steady one, though the other has the best single fold
    no_penalty = [(0, cv_summary(lucky, 0.0)[2], 0.9), (1, cv_summary(steady, 0.0)[2], 0.1)]
    assert final_choice(no_penalty) == 0
    assert final_choice([(3, 0.5, 0.2), (1, 0.5, 0.3), (2, 0.5, 0.3)]) == 1  # ties: fitness, id


def _two_option_scores(folds: list[int]) -> Scores:
    """Four rows, two classes; verbalizer A (columns 0/1) is right on rows 0-1 only, B (2/3)
    on rows 2-3 only."""
    right, wrong = [0.0, -5.0], [-5.0, 0.0]
    gold = torch.tensor([0, 0, 0, 0])
    logp = torch.tensor([right + wrong, right + wrong, wrong + right, wrong + right])
    return Scores(logp, gold, torch.tensor(folds), [Option("A", ((0,), (1,))), Option("B", ((2,), (3,)))],
                  2, column_class=[0, 1, 0, 1])


def test_a_fold_chooses_its_verbalizer_on_its_training_part_only():
    # rows 0-1 train (fit only), rows 2-3 held out: A is chosen on the training part and is
    # wrong on the held-out rows, so the cross-validated accuracy is 0 although B would score 1
    cv = cross_validate(_two_option_scores([FIT_ONLY, FIT_ONLY, 0, 0]), [Calibration.NONE],
                        Objective.accuracy, 0.0, 0.5)
    assert cv.picks == ["A/none"] and cv.accuracy == [0.0]
    cv = cross_validate(_two_option_scores([0, 1, 0, 1]), [Calibration.NONE], Objective.accuracy, 0.0, 0.5)
    assert len(cv.accuracy) == 2 and cv.mean == pytest.approx(0.5)


def test_successive_halving_spends_fewer_scorings_than_scoring_everything(toy_file, tiny_causal, tmp_path):
    halving = _run(str(toy_file), tiny_causal, tmp_path / "h", rounds=1, rungs=3)
    full = _run(str(toy_file), tiny_causal, tmp_path / "f", rounds=1, rungs=1)
    assert halving.extra["rung_sizes"] == [8, 12, 24] and full.extra["rung_sizes"] == [24]
    assert halving.extra["candidates"] == full.extra["candidates"]
    counted = sum(json.loads(line).get("scorings", 0) > 0 for line in
                  (tmp_path / "h" / "log.jsonl").read_text().splitlines())
    assert counted and halving.extra["scorings"] < full.extra["scorings"]
    # every candidate of `full` is scored on all 24 rows but its demonstrations
    assert full.extra["scorings"] == sum(24 - len(s["demos"]) for s in _scored(tmp_path / "f"))


def test_rows_folds_and_rungs():
    gold = [0] * 10 + [1] * 10 + [2] * 5
    order, folds = nested_order(gold, 4, seed=1)
    assert sorted(order) == list(range(25))
    for n in (5, 10, 15):  # every prefix holds each class in proportion
        counts = torch.bincount(torch.tensor([gold[i] for i in order[:n]]), minlength=3)
        assert counts.tolist() == [2 * n // 5, 2 * n // 5, n // 5]
    per = torch.zeros(4, 3, dtype=torch.long)
    for i, f in enumerate(folds):
        per[f, gold[i]] += 1
    assert per[:, 0].tolist() == [3, 3, 2, 2] and per[:, 2].tolist() == [2, 1, 1, 1]
    assert nested_order(gold, 4, seed=1) == (order, folds)
    assert nested_order(gold, 4, seed=2)[0] != order
    assert rung_sizes(64, 3, 2, 16) == [16, 32, 64]
    assert rung_sizes(24, 3, 2, 10) == [10, 12, 24]
    assert rung_sizes(24, 1, 2, 10) == [24]
    assert promote([(0, 0.1), (1, 0.9), (2, 0.5), (3, 0.9)], 2) == [1, 3]


def test_ensemble_weights():
    w = ensemble_weights([0.9, 0.6, 0.5], 2)
    assert sum(w) == pytest.approx(1.0) and w[0] > w[1] > w[2] == 0.0
    assert ensemble_weights([0.5, 0.4], 2) == [0.5, 0.5]


# --- candidates -----------------------------------------------------------------------------
def test_generated_templates_and_edits_keep_the_slots():
    humans = ["{sentence} It was [P] .", "Review: {sentence} Sentiment: [P]"]
    made = generated_templates(["sentence"], humans, 20)
    assert ("{sentence} Answer: [P]", "cue 'Answer:'") in made
    assert all(t not in humans for t, _ in made) and len({t for t, _ in made}) == len(made)
    assert generated_templates(["sentence"], humans, 3) == made[:3]
    pool = phrase_pool(humans)
    assert "It was" in pool and "Sentiment:" in pool and "Answer:" in pool
    rng = random.Random(0)
    ops = set()
    for _ in range(200):
        out = edit_template(humans[1], pool, rng)
        if out is None:
            continue
        parsed = Template.parse(out[0], ["sentence"])
        assert parsed.field_names == ["sentence"] and out[0].count("[P]") == 1
        ops.add(out[1].split()[0])
    assert ops == {"delete", "swap", "insert", "replace"}


def test_demonstrations_are_class_balanced_and_edited():
    by_class = {0: [1, 2, 3], 1: [4, 5, 6]}
    rng = random.Random(0)
    for _ in range(50):
        demos, _ = propose_demos((), by_class, 2, rng)
        assert 1 <= len(demos) <= 2 and len(set(demos)) == len(demos)
        if len(demos) == 2:
            assert {d in by_class[0] for d in demos} == {True, False}
    seen = set()
    for _ in range(50):
        demos, what = propose_demos((1, 4), by_class, 3, rng)
        assert len(set(demos)) == len(demos) and 1 <= len(demos) <= 3
        seen.add(what.split()[-1])
    assert {"reordered", "replaced", "added", "dropped"} <= seen


# --- ensembles and resume -------------------------------------------------------------------
def test_an_ensemble_reloads_as_one_predictor_with_its_score(toy_file, tiny_masked, tmp_path):
    result = _run(str(toy_file), tiny_masked, tmp_path / "ens", ensemble=3)
    members = result.extra["ensemble"]["members"]
    assert len(members) == 3 and sum(m["weight"] for m in members) == pytest.approx(1.0)
    assert members[0]["template"] == result.template and "ensemble_cv_score" in result.scores
    evaluated, compared = _dev_scores(tmp_path / "ens", str(toy_file), tiny_masked)
    assert evaluated == compared == pytest.approx(result.scores["dev_accuracy"])
    # by hand: the weighted sum of the members' calibrated log-softmax scores
    spec = spec_from_result(PromptResult.load(tmp_path / "ens"))
    total = 0
    for member, weight in spec.ensemble:
        ev = evaluate_prompt(tiny_masked, member.task, member.template, "dev", verbalizer=member.verbalizer,
                             fewshot=member.fewshot, calibration=member.calibration)
        assert len(ev.gold) == 12
        total = total + weight * torch.log_softmax(torch.tensor(ev.scores), -1)
    gold = torch.tensor(ev.gold)
    assert float((total.argmax(-1) == gold).float().mean()) == pytest.approx(evaluated)


def test_an_ensemble_exports_its_members_with_their_weights(toy_file, tiny_masked, tmp_path):
    from autoprompt_search.analysis.export import export_prompts
    from autoprompt_search.core.errors import UserError

    result = _run(str(toy_file), tiny_masked, tmp_path / "ens", ensemble=2)
    members = result.extra["ensemble"]["members"]
    lines = export_prompts([tmp_path / "ens"], "txt", None).splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [m["prompt"] for m in members]
    assert all(f"weight {m['weight']:.6f}" in ln for ln, m in zip(lines, members))
    record = json.loads(export_prompts([tmp_path / "ens"], "json", None))
    assert record["extra"]["ensemble"]["members"] == members
    assert "weighted" in record["extra"]["export"]["rule"]
    with pytest.raises(UserError, match="is an ensemble of 2 prompts"):
        export_prompts([tmp_path / "ens"], "lm-eval", tmp_path / "lm")


def test_a_killed_run_resumes_to_the_same_prompt(toy_file, tiny_masked, tmp_path, monkeypatch):
    full = _run(str(toy_file), tiny_masked, tmp_path / "full", ensemble=2)
    from autoprompt_search.search.auto_plan import AutoPlan

    original = AutoPlan.step
    calls = {"n": 0}

    def stop_in_step_5(self, elapsed):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, elapsed)

    monkeypatch.setattr(AutoPlan, "step", stop_in_step_5)
    with pytest.raises(SearchInterrupted):
        _run(str(toy_file), tiny_masked, tmp_path / "cut", ensemble=2)
    monkeypatch.setattr(AutoPlan, "step", original)
    resumed = _run(str(toy_file), tiny_masked, tmp_path / "cut", resume=True, ensemble=2)
    assert (resumed.prompt, resumed.verbalizer, resumed.fewshot, resumed.scores, resumed.calibration) \
        == (full.prompt, full.verbalizer, full.fewshot, full.scores, full.calibration)
    assert resumed.extra["ensemble"] == full.extra["ensemble"]
    assert _scored(tmp_path / "cut") == _scored(tmp_path / "full")


def test_a_prompt_file_takes_its_demonstrations_from_the_split_seed_it_was_found_on(tmp_path):
    import yaml

    for seed in (1, 2):
        (tmp_path / f"train-{seed}.tsv").write_text(f"sentence\tlabel\nseed {seed} demo\t1\nother\t0\n")
    (tmp_path / "test.tsv").write_text("sentence\tlabel\nx\t1\n")
    raw = {"name": "seeded", "fields": ["sentence"], "labels": ["negative", "positive"],
           "verbalizer": {"negative": ["bad"], "positive": ["great"]},
           "data": {"train": "train-{seed}.tsv", "dev": "train-{seed}.tsv", "test": "test.tsv",
                    "seed": 1, "seeds": [1, 2]}}
    (tmp_path / "seeded.yaml").write_text(yaml.safe_dump(raw))
    result = PromptResult(task=str(tmp_path / "seeded.yaml"), template="{sentence} [P]",
                          prompt="{sentence} [P]", model="m", strategy="auto", seed=0,
                          fewshot={"instruction": "", "demo_ids": [0], "split": "train", "separator": "\n"},
                          config={"data_seed": 2})
    spec = spec_from_result(result)
    assert spec.fewshot.demos[0].fields["sentence"] == "seed 2 demo"
    assert spec_from_result(result, split_seed=1).fewshot.demos[0].fields["sentence"] == "seed 1 demo"


@pytest.mark.timeout(300)
def test_ray_workers_give_the_prompt_of_an_in_process_run(toy_file, tiny_causal, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    one = _run(str(toy_file), tiny_causal, tmp_path / "one", rounds=1)
    two = _run(str(toy_file), tiny_causal, tmp_path / "two", rounds=1, workers=2)
    assert (two.prompt, two.verbalizer, two.fewshot) == (one.prompt, one.verbalizer, one.fewshot)
    assert two.scores == pytest.approx(one.scores, abs=1e-6)
    assert [s["id"] for s in _scored(tmp_path / "two")] == [s["id"] for s in _scored(tmp_path / "one")]
