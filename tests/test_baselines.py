"""compare's human baselines (issue 11): the literature's standard prompt, the prompt a user would
pick (dev or cross-validation), the spread, the oracle; p-values against the selected prompt.

The task is built so the answers are known: human prompts A and B share a template and B's label
words are A's swapped, so B is right exactly where A is wrong. The dev split holds examples A gets
right and the test split examples A gets wrong: A wins on dev, B on test (the oracle), and the
standard prompt C is neither.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from compare_fixtures import tiny_dir, tiny_loaded  # noqa: F401
from typer.testing import CliRunner

from autoprompt_search.analysis.baselines import (
    first_best,
    parse_selection,
    selection_label,
    stratified_folds,
)
from autoprompt_search.analysis.compare import collect_prompts, compare_prompts
from autoprompt_search.analysis.report import print_table, summary_lines, table_rows, write_reports
from autoprompt_search.analysis.stats import paired_bootstrap, spread
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.tasks import Task
from autoprompt_search.scoring.evaluation import evaluate_prompt

WORDS = ["great", "bad", "fine", "terrible", "good", "awful", "nice", "poor", "superb", "dull",
         "lovely", "boring", "wonderful", "weak", "brilliant", "flat"]
POOL = [(f"the {a} film was {b}", i % 2) for i, (a, b) in
        enumerate((a, b) for a in WORDS[:8] for b in WORDS[8:])]
A, B, C = "{sentence} it was [P] .", "{sentence} it was [P] .", "{sentence} so it is [P]"
VERB = {"negative": ["bad"], "positive": ["great"]}
SWAPPED = {"negative": ["great"], "positive": ["bad"]}
TYPED = "{sentence} what a story , [P]"


def _write(folder, name, splits, prompts, standard="C"):
    for split, rows in splits.items():
        (folder / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    raw = {"name": name, "fields": ["sentence"], "labels": ["negative", "positive"],
           "data": {s: f"{s}.tsv" for s in splits}, "verbalizer": VERB, "prompts": prompts}
    if standard is not None:
        raw["standard"] = standard
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return folder / f"{name}.yaml"


PROMPTS = [{"name": "A", "template": A, "source": "a paraphrase"},
           {"name": "B", "template": B, "verbalizer": SWAPPED, "source": "swapped label words"},
           {"name": "C", "template": C, "source": "the literature"}]


@pytest.fixture(scope="module")
def known(tmp_path_factory, tiny_loaded):  # noqa: F811
    """(task file, A's right pool examples, A's wrong ones): A's correctness on a pool, measured once."""
    folder = tmp_path_factory.mktemp("baselines")
    pool_task = Task.from_yaml(_write(folder, "pool", {"test": POOL}, PROMPTS))
    a = evaluate_prompt(tiny_loaded, pool_task, A, "test", verbalizer=VERB)
    b = evaluate_prompt(tiny_loaded, pool_task, B, "test", verbalizer=SWAPPED)
    c = evaluate_prompt(tiny_loaded, pool_task, C, "test", verbalizer=VERB)
    assert list(b.correct) == [not x for x in a.correct]  # B is right exactly where A is wrong
    right = [ex for ex, ok in zip(POOL, a.correct) if ok]
    wrong = [ex for ex, ok in zip(POOL, a.correct) if not ok]
    both_wrong = [ex for ex, ok_a, ok_c in zip(POOL, a.correct, c.correct) if not ok_a and not ok_c]
    assert len(right) >= 4 and len(both_wrong) >= 8, (len(right), len(both_wrong))
    # dev: A right (A wins on dev); test: A wrong (B wins on test); train: A and C wrong (B wins
    # on train + dev: 8 of 12 against at most 4 of 12 for A and C)
    path = _write(folder, "toy", {"train": both_wrong[:8], "dev": right[:4], "test": wrong}, PROMPTS)
    return path, right, wrong


def _compare(path, model, **kw):
    task, entries = collect_prompts(str(path), [], True, [TYPED])
    return task, compare_prompts(task, entries, model=model, resamples=200, similarity=False,
                                 progress=False, **kw)


def _test_acc(model, task, template, verbalizer, **kw):
    return evaluate_prompt(model, task, template, "test", verbalizer=verbalizer, **kw)


def test_each_baseline_is_the_right_prompt_and_number(known, tiny_loaded):  # noqa: F811
    path, _, wrong = known
    task, comp = _compare(path, tiny_loaded)
    base = comp.baselines
    assert base["select_on"] == "dev" and [b["calibration"] for b in base["variants"]] == ["none"]
    block = base["variants"][0]
    acc = {"A": 0.0, "B": 1.0,  # by construction
           "C": _test_acc(tiny_loaded, task, C, VERB).metrics["accuracy"]}
    # (a) the literature's prompt named in the task file, with its test score
    assert block["standard"]["name"] == "C" and block["standard"]["literature"] is True
    assert block["standard"]["accuracy"] == pytest.approx(acc["C"])
    # (b) best on dev: A (right on every dev example), scored on test
    sel = block["selected"]
    assert sel["name"] == "A" and sel["label"] == "dev-selected" and sel["selection_accuracy"] == 1.0
    assert sel["selection_n"] == 4 and sel["scores"]["B"] == 0.0
    assert sel["accuracy"] == pytest.approx(acc["A"])
    # (c) mean, std and range of the human prompts' test scores
    expected = spread([acc["A"], acc["B"], acc["C"]])
    got = block["spread"]["accuracy"]
    assert got["mean"] == pytest.approx(expected.mean) and got["std"] == pytest.approx(expected.std)
    assert (got["min"], got["max"]) == (expected.min, expected.max) == (0.0, 1.0)
    # (d) the oracle: best on test, labelled as such
    assert block["oracle"] == {"name": "B", "label": "oracle (selected on test)", "accuracy": 1.0,
                               "macro_f1": block["oracle"]["macro_f1"], "n": len(wrong)}
    assert comp.best_human == "B"


def test_p_values_are_against_the_dev_selected_prompt(known, tiny_loaded):  # noqa: F811
    path, _, _ = known
    _, comp = _compare(path, tiny_loaded)
    assert comp.reference == {"name": "A", "label": "dev-selected", "calibration": "none"}
    rows = {r["name"]: r for r in comp.rows}
    typed = rows["typed-1"]
    against_a = paired_bootstrap(typed["correct"], rows["A"]["correct"], resamples=200, seed=0)
    against_b = paired_bootstrap(typed["correct"], rows["B"]["correct"], resamples=200, seed=0)
    assert typed["vs_selected"] == against_a.to_dict()
    assert typed["vs_oracle"] == against_b.to_dict()
    assert typed["vs_selected"]["delta"] == pytest.approx(typed["accuracy"] - 0.0)
    assert rows["A"]["vs_selected"] is None and rows["B"]["vs_oracle"] is None
    assert rows["B"]["vs_selected"]["delta"] == 1.0  # the oracle beats the selected prompt
    # the output says what the p-values are against
    header, _ = table_rows(comp)
    assert "p vs dev-selected human prompt 'A'" in header and "p vs oracle" in header
    assert any("p vs dev-selected human prompt 'A'" in line for line in summary_lines(comp))


def test_cross_validation_selects_on_train_plus_dev(known, tiny_loaded):  # noqa: F811
    """On train + dev (8 examples A gets wrong, 4 it gets right) B wins; dev alone picks A."""
    path, right, wrong = known
    task, comp = _compare(path, tiny_loaded, select_on="cv", folds=3, seed=5)
    sel = comp.baselines["variants"][0]["selected"]
    assert sel["name"] == "B" and sel["label"] == "cv-selected" and sel["folds"] == 3
    assert comp.baselines["fold_seed"] == 5 and comp.reference["name"] == "B"
    # the selection score is the mean held-out accuracy over the seeded stratified folds
    pooled = task.examples("train") + task.examples("dev")
    folds = stratified_folds([ex.label for ex in pooled], 3, 5)
    a_right = {s for s, _ in right}
    b_correct = np.array([ex.fields["sentence"] not in a_right for ex in pooled], dtype=float)
    assert sel["selection_accuracy"] == pytest.approx(np.mean([b_correct[f].mean() for f in folds]))
    assert sel["selection_n"] == len(pooled) == 12
    assert sel["accuracy"] == 1.0


def test_baselines_with_and_without_calibration(known, tiny_loaded):  # noqa: F811
    path, _, _ = known
    task, comp = _compare(path, tiny_loaded, calibration="content-free")
    none, cf = comp.baselines["variants"]
    assert (none["calibration"], cf["calibration"]) == ("none", "content-free")
    assert comp.reference["calibration"] == "content-free"
    for block, mode in ((none, None), (cf, "content-free")):
        accs = {name: _test_acc(tiny_loaded, task, t, v, calibration=mode).metrics["accuracy"]
                for name, t, v in (("A", A, VERB), ("B", B, SWAPPED), ("C", C, VERB))}
        dev = {name: evaluate_prompt(tiny_loaded, task, t, "dev", verbalizer=v,
                                     calibration=mode).metrics["accuracy"]
               for name, t, v in (("A", A, VERB), ("B", B, SWAPPED), ("C", C, VERB))}
        names = ["A", "B", "C"]
        chosen = names[first_best([dev[n] for n in names])]
        assert block["selected"]["name"] == chosen
        assert block["selected"]["accuracy"] == pytest.approx(accs[chosen])
        assert block["standard"]["accuracy"] == pytest.approx(accs["C"])
        assert block["spread"]["accuracy"]["mean"] == pytest.approx(np.mean(list(accs.values())))
        oracle = names[first_best([accs[n] for n in names])]
        assert block["oracle"]["name"] == oracle
    # the rows are the calibrated scores; the p-values are against the calibrated selection
    rows = {r["name"]: r for r in comp.rows}
    assert rows["C"]["calibration"]["mode"] == "content-free"
    ref = rows[cf["selected"]["name"]]
    expected = paired_bootstrap(rows["typed-1"]["correct"], ref["correct"], resamples=200, seed=0)
    assert rows["typed-1"]["vs_selected"] == expected.to_dict()


def test_without_a_literature_prompt_the_first_stands_in_and_says_so(known, tmp_path, tiny_loaded):  # noqa: F811
    path, right, wrong = known
    raw = yaml.safe_load(path.read_text())
    del raw["standard"]
    raw["data"] = {s: str(path.parent / f"{s}.tsv") for s in ("train", "dev", "test")}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(raw))
    _, comp = _compare(tmp_path / "plain.yaml", tiny_loaded)
    std = comp.baselines["variants"][0]["standard"]
    assert std["name"] == "A" and std["literature"] is False and std["accuracy"] == 0.0
    assert "names no literature prompt" in std["note"]
    assert any("names no literature prompt" in line and "(A)" in line for line in summary_lines(comp))


def test_reports_and_json_carry_the_baselines(known, tiny_loaded, tiny_dir, tmp_path):  # noqa: F811
    from autoprompt_search.cli import app
    from autoprompt_search.cli.commands import load_all

    path, _, _ = known
    load_all()
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", "--task", str(path), "--model", str(tiny_dir),
                                   "--resamples", "200", "--no-similarity", "--out", str(out),
                                   "--select-on", "cv", "--folds", "2"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "compare.json").read_text())
    assert data["baselines"]["select_on"] == "cv" and data["baselines"]["folds"] == 2
    block = data["baselines"]["variants"][0]
    assert {"standard", "selected", "spread", "oracle"} <= set(block)
    md = (out / "report.md").read_text()
    assert "## Human baselines" in md and "oracle (selected on test)" in md
    assert f"p vs cv-selected human prompt '{block['selected']['name']}'" in md
    assert "Human baselines" in (out / "report.html").read_text()
    assert "human baselines" in res.output  # the terminal shows the block
    _, comp = _compare(path, tiny_loaded)
    again = write_reports(comp, tmp_path / "rep")
    assert json.loads(again["json"].read_text())["baselines"]["reference"]["name"] == "A"


def test_the_terminal_shows_every_baseline_row(known, tiny_loaded):  # noqa: F811
    """Cells are plain text: '[min–max]' is not taken for rich markup and dropped."""
    from rich.console import Console

    path, _, _ = known
    _, comp = _compare(path, tiny_loaded)
    console = Console(record=True, width=400)
    print_table(comp, console)
    text = console.export_text()
    for piece in ("standard", "dev-selected", "human prompts: mean ± std [min–max]",
                  "oracle (selected on test)", "p vs dev-selected human prompt 'A'"):
        assert piece in text, piece


def test_folds_are_stratified_seeded_and_cover_every_example():
    labels = [0] * 7 + [1] * 5
    folds = stratified_folds(labels, 3, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(12))
    assert sorted(len(f) for f in folds) == [4, 4, 4]
    for f in folds:  # each class spread over the folds: 7 -> 3/2/2, 5 -> 2/2/1
        assert sum(labels[i] == 0 for i in f) in (2, 3) and sum(labels[i] == 1 for i in f) in (1, 2)
    assert stratified_folds(labels, 3, seed=1) == folds and stratified_folds(labels, 3, seed=2) != folds
    with pytest.raises(UserError, match="at least 2 folds"):
        stratified_folds(labels, 1, seed=0)
    with pytest.raises(UserError, match="13 folds need at least 13 examples"):
        stratified_folds(labels, 13, seed=0)


def test_ties_go_to_the_task_files_order_and_choices_are_checked():
    assert first_best([0.5, 0.7, 0.7, 0.1]) == 1 and first_best([0.2]) == 0
    assert parse_selection("dev", None) == (parse_selection("dev", None)[0], None)
    assert parse_selection("cv", None)[1] == 4 and parse_selection("cv", 3)[1] == 3
    assert selection_label("cv") == "cv-selected"
    with pytest.raises(UserError, match="--select-on: 'test' is not one of dev, cv"):
        parse_selection("test", None)
    with pytest.raises(UserError, match="--folds must be at least 2"):
        parse_selection("cv", 1)
    with pytest.raises(UserError, match="--folds goes with --select-on cv"):
        parse_selection("dev", 3)


def test_the_task_file_names_its_standard_prompt(tmp_path):
    path = _write(tmp_path, "t", {"test": POOL[:4]}, PROMPTS, standard="C")
    task = Task.from_yaml(path)
    assert task.standard == "C" and task.standard_index() == (2, True)
    with pytest.raises(UserError, match="standard 'c' names no prompt of the task"):
        Task.from_yaml(_write(tmp_path, "t2", {"test": POOL[:4]}, PROMPTS, standard="c"))
    assert Task.from_yaml(_write(tmp_path, "t3", {"test": POOL[:4]}, PROMPTS, standard=None)
                          ).standard_index() == (0, False)


def test_shipped_tasks_name_the_literatures_prompt():
    expected = {"sst-2": "{sentence} It was [P] .", "sst-5": "{sentence} It was [P] .",
                "agnews": "[P] News: {text}"}
    for name, template in expected.items():
        task = Task.load(name)
        i, literature = task.standard_index()
        assert literature and task.prompts[i].template == template
    for name in ("trec", "bbc-news"):  # no literature prompt among theirs: the first stands in
        assert Task.load(name).standard_index() == (0, False)
