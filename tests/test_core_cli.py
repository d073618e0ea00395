"""The CLI: evaluate end to end on tiny local models, and one clear message per user mistake."""

from __future__ import annotations

import json
import sys

import pytest

from autoprompt_search.cli import main
from autoprompt_search.testing import tiny_causal_lm, tiny_masked_lm


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["autoprompt-search", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Tiny causal and masked models saved as ordinary local model folders."""
    dirs = {}
    for kind, make in (("causal", tiny_causal_lm), ("masked", tiny_masked_lm)):
        folder = tmp_path_factory.mktemp(kind)
        model, tok = make()
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        dirs[kind] = str(folder)
    return dirs


@pytest.fixture
def task_file(tmp_path):
    (tmp_path / "d.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in [
            ("the movie was great", 1), ("a good film", 1), ("it was terrible", 0), ("a bad film", 0)]))
    path = tmp_path / "task.yaml"
    path.write_text(
        "name: mini\ndata: {train: d.tsv, dev: d.tsv, test: d.tsv}\nfields: [sentence]\n"
        "labels: [negative, positive]\nverbalizer: {negative: [bad], positive: [great]}\n"
        "prompts: ['{sentence} it was [P] .', '{sentence} a [P] film .']\n")
    return path


def test_evaluate_prints_metrics_and_writes_json(monkeypatch, capsys, model_dirs, task_file, tmp_path):
    out_json = tmp_path / "out.json"
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "--task", str(task_file), "--human",
                             "--model", model_dirs["causal"], "--json", str(out_json))
    assert code == 0, err
    assert "accuracy" in out and "{sentence} it was [P] ." in out
    data = json.loads(out_json.read_text())
    done, film = data["results"]
    assert done["n"] == 4 and 0 <= done["accuracy"] <= 1
    assert set(done["per_class_accuracy"]) == {"negative", "positive"}
    # text after [P] (issue 11): a causal LM scores it on the whole sequence, nothing is skipped
    assert film["prompt"] == "{sentence} a [P] film ." and film["n"] == 4 and "skipped" not in film
    assert done["scoring"] == film["scoring"] == "direct"


def test_evaluate_masked_model(monkeypatch, capsys, model_dirs, task_file):
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "--task", str(task_file), "--prompt",
                             "{sentence} it was [P] .", "--model", model_dirs["masked"])
    assert code == 0, err
    assert "macro-F1" in out


def _error_case(tmp_path, task_file, name):
    """(extra CLI args, expected message) for each user mistake."""
    text = task_file.read_text()
    bad = tmp_path / "bad.yaml"
    cases = {
        "malformed-yaml": ("name: [x\n", [], "malformed YAML"),
        "unknown-key": (text + "colour: red\n", [], "unknown key 'colour'"),
        "missing-data": (text.replace("test: d.tsv", "test: nope.tsv"), [], "data file not found"),
        "empty-data": (text.replace("test: d.tsv", "test: empty.tsv"), [], "data file is empty"),
        "label-outside": (text.replace("test: d.tsv", "test: badlabel.tsv"), [], "not one of the task's labels"),
        "no-p": (text, ["--prompt", "{sentence} it was ."], "has no [P]"),
        "two-p": (text, ["--prompt", "[P] {sentence} [P]"], "2 [P] slots"),
        "unknown-field": (text, ["--prompt", "{review} it was [P]"], "uses {review}"),
        "unknown-scoring": (text, ["--prompt", "{sentence} it was [P]", "--scoring", "sideways"],
                            "unknown scoring rule 'sideways'"),
        "channel-masked": (text, ["--prompt", "{sentence} it was [P] .", "--scoring", "channel",
                                  "--masked"], "channel scoring needs a causal LM"),
        "multi-token-masked": (text, ["--prompt", "{sentence} it was [P] .", "--label-words",
                                      "negative=filmed", "--label-words", "positive=great", "--masked"],
                               "splits into 2 tokens"),
        "unknown-model": (text, ["--prompt", "{sentence} it was [P] .", "--model", "no-org/no-such-model"],
                          "not available offline"),
    }
    (tmp_path / "empty.tsv").write_text("")
    (tmp_path / "badlabel.tsv").write_text("sentence\tlabel\nx\t5\n")
    content, args, message = cases[name]
    bad.write_text(content)
    return bad, args, message


ERRORS = ["malformed-yaml", "unknown-key", "missing-data", "empty-data", "label-outside", "no-p", "two-p",
          "unknown-field", "unknown-scoring", "channel-masked", "multi-token-masked", "unknown-model"]


@pytest.mark.parametrize("name", ERRORS)
def test_user_mistakes_give_one_clear_message(monkeypatch, capsys, model_dirs, task_file, tmp_path, name):
    (tmp_path / "d.tsv").write_text(task_file.parent.joinpath("d.tsv").read_text())
    bad, args, message = _error_case(tmp_path, task_file, name)
    model = model_dirs["causal"]
    if "--masked" in args:
        args = [a for a in args if a != "--masked"]
        model = model_dirs["masked"]
    if "--model" not in args:
        args = [*args, "--model", model]
    if "--prompt" not in args:
        args = [*args, "--human"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "--task", str(bad), *args)
    assert code == 2
    flat = " ".join(err.split())
    assert flat.startswith("error:") and message in flat, flat
    assert "Traceback" not in err + out


def test_unknown_task_and_split(monkeypatch, capsys, model_dirs):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--task", "sst2", "--human")
    assert code == 2 and "did you mean 'sst-2'" in " ".join(err.split())


def test_unknown_strategy_option_is_rejected(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "search", "--strategy", "no-such-strategy")
    assert code == 2 and "unknown search strategy" in " ".join(err.split())


def test_validate_and_list(monkeypatch, capsys, task_file):
    code, out, _ = run_cli(monkeypatch, capsys, "validate", str(task_file))
    assert code == 0 and "ok" in out
    code, out, _ = run_cli(monkeypatch, capsys, "list", "tasks")
    assert code == 0 and "sst-2" in out and "bbc-news" in out


def test_version_and_completion(monkeypatch, capsys):
    from autoprompt_search import __version__

    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"autoprompt-search {__version__}"
    code, out, _ = run_cli(monkeypatch, capsys, "--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out


def test_show_options_prints_enum_defaults_as_values(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "search", "--strategy", "soft", "--show-options")
    assert code == 0
    assert "<Init." not in out and "<Optim." not in out
    row = next(line for line in out.splitlines() if "--init " in line)
    assert "│ human" in row or "│ vocab" in row or "│ random" in row, row


def test_usage_errors_name_the_command(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--limit", "abc")
    lines = err.strip().splitlines()
    assert code == 2 and lines[0].startswith("error: Invalid value for '--limit'")
    assert lines[1] == "see 'autoprompt-search evaluate --help'" and len(lines) == 2


def test_ctrl_c_exits_130_with_a_resume_hint(monkeypatch, capsys):
    from autoprompt_search.core import tasks

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks, "available_tasks", interrupted)
    code, _, err = run_cli(monkeypatch, capsys, "list", "tasks")
    assert code == 130 and "interrupted; resume a search with --resume" in err
    assert "Traceback" not in err


def test_long_example_is_truncated_with_a_warning(monkeypatch, capsys, model_dirs, task_file):
    long_rows = task_file.parent / "long.tsv"
    long_rows.write_text((task_file.parent / "d.tsv").read_text() + f"{'a very long review ' * 2700}\t1\n")
    long_task = task_file.parent / "long.yaml"
    long_task.write_text(task_file.read_text().replace("test: d.tsv", "test: long.tsv"))
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "--task", str(long_task), "--prompt",
                             "{sentence} it was [P] .", "--model", model_dirs["causal"])
    assert code == 0, err
    assert "(n=5)" in out
    flat = " ".join(err.split())
    assert "warning: 1 example did not fit in the model's context of 512 tokens; its text was cut by" in flat
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--task", str(long_task), "--prompt",
                           "{sentence} it was [P] .", "--model", model_dirs["causal"],
                           "--long-inputs", "error")
    assert code == 2 and "example 5 is" in err and "longer than the model's context" in err


def test_facts_with_multi_token_objects_are_counted(monkeypatch, capsys, model_dirs, tmp_path):
    from autoprompt_search.testing import tiny_causal_lm

    _, tok = tiny_causal_lm()
    single = next(w for w in ("the", "a", "in", "of", "e") if len(tok(" " + w)["input_ids"]) == 1)
    rows = [("x", single), ("y", single), ("z", "xylophonequartz"), ("w", "zyzzogeton")]
    (tmp_path / "facts.jsonl").write_text("".join(
        json.dumps({"sub_label": s, "obj_label": o}) + "\n" for s, o in rows))
    task = tmp_path / "facts.yaml"
    task.write_text("name: facts\ndata: {test: facts.jsonl}\nfields: [sub_label]\n"
                    "label_field: obj_label\nlabel_space: vocabulary\n")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--task", str(task), "--prompt",
                           "{sub_label} is [P] .", "--model", model_dirs["causal"])
    assert code == 0, err
    assert "warning: 2 of 4 facts were left out" in " ".join(err.split())
