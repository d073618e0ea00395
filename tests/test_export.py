"""export: text/JSON/JSONL prompts that load back and score the same, and filled prompts."""

from __future__ import annotations

import json

import pytest
from compare_fixtures import make_found, tiny_dir, tiny_loaded, toy_yaml  # noqa: F401
from typer.testing import CliRunner

from autoprompt_search.analysis.export import export_prompts, fill_prompts, write_filled
from autoprompt_search.api import evaluate_many, prompts_for
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult


def _accuracy(specs, backend):
    return evaluate_many(specs, model=backend, split="test")[0]["accuracy"]


@pytest.fixture
def run(tmp_path, tiny_loaded, toy_yaml):  # noqa: F811
    make_found(tiny_loaded, toy_yaml, tmp_path / "run-a")
    return tmp_path / "run-a"


def test_json_export_loads_back_with_the_same_score(tmp_path, run, tiny_loaded, toy_yaml):  # noqa: F811
    out = tmp_path / "prompt.json"
    export_prompts([run], "json", out)
    record = json.loads(out.read_text())
    assert record["extra"]["export"]["source"].endswith("result.json")
    original = prompts_for(str(toy_yaml), None, run, False)
    exported = prompts_for(str(toy_yaml), None, out, False)
    assert exported[0].triggers == original[0].triggers
    assert _accuracy(exported, tiny_loaded) == _accuracy(original, tiny_loaded)


def test_text_export_is_the_plain_prompt_and_scores_the_same(run, tiny_loaded, toy_yaml):  # noqa: F811
    text = export_prompts([run], "txt", None)
    template, words = text.rstrip("\n").split("\t")
    assert template == "{sentence} movie story it was [P] ."
    assert words == "negative=bad positive=great"
    verbalizer = {k: v.split(",") for k, v in (w.split("=") for w in words.split())}
    typed = prompts_for(str(toy_yaml), template, None, False, verbalizer=verbalizer)
    assert typed[0].triggers == []  # scored from its text alone
    original = prompts_for(str(toy_yaml), None, run, False)
    assert _accuracy(typed, tiny_loaded) == _accuracy(original, tiny_loaded)


def test_jsonl_and_several_runs(tmp_path, run, tiny_loaded, toy_yaml):  # noqa: F811
    make_found(tiny_loaded, toy_yaml, tmp_path / "run-b", words=(" film", " game"))
    lines = export_prompts([run, tmp_path / "run-b"], "jsonl", None).splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):
        (tmp_path / f"line{i}.json").write_text(line)
        assert PromptResult.load(tmp_path / f"line{i}.json").strategy == "handmade"
    with pytest.raises(UserError, match="--out FOLDER"):
        export_prompts([run, tmp_path / "run-b"], "json", None)
    written = export_prompts([tmp_path], "json", tmp_path / "exported")  # a folder of runs
    assert sorted(p.name for p in written) == ["run-a.json", "run-b.json"]
    with pytest.raises(UserError, match="no such run folder"):
        export_prompts([tmp_path / "missing"], "txt", None)
    with pytest.raises(UserError, match="unknown export format"):
        export_prompts([run], "csv", None)


def test_fill_writes_each_example_into_the_prompt(tmp_path, run):
    data = tmp_path / "new.tsv"
    data.write_text("sentence\tother\nI loved it\tx\nboring\ty\n")
    records = fill_prompts([run], data)
    assert [r["text"] for r in records] == ["I loved it movie story it was",
                                            "boring movie story it was"]
    assert [r["row"] for r in records] == [0, 1]
    masked = fill_prompts([run], data, answer="[MASK]")
    assert masked[0]["text"] == "I loved it movie story it was [MASK] ."
    assert write_filled(masked, "txt", None).splitlines()[1] == "boring movie story it was [MASK] ."
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nhello\t1\n")
    with pytest.raises(UserError, match="no column sentence"):
        fill_prompts([run], bad)


def test_cli_export_then_evaluate_prompt_file(tmp_path, run, tiny_dir, toy_yaml):  # noqa: F811
    from autoprompt_search.cli import app
    from autoprompt_search.cli.commands import load_all

    load_all()
    runner = CliRunner()
    out = tmp_path / "p.json"
    res = runner.invoke(app, ["export", str(run), "--format", "json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    scores = []
    for source in (run, out):
        js = tmp_path / f"eval-{source.name}.json"
        res = runner.invoke(app, ["evaluate", "--task", str(toy_yaml), "--prompt-file", str(source),
                                  "--model", str(tiny_dir), "--json", str(js)])
        assert res.exit_code == 0, res.output
        scores.append(json.loads(js.read_text())["results"][0]["accuracy"])
    assert scores[0] == scores[1]
    res = runner.invoke(app, ["export", str(run), "--fill", str(toy_yaml.parent / "test.tsv"),
                              "--format", "jsonl", "--limit", "3"])
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["row"] for line in res.output.splitlines()] == [0, 1, 2]
