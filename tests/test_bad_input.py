"""Bad input never shows a traceback: one ``error:`` line, exit status 2, no files left behind.

Every case is a real command line run in a subprocess (``python -m autoprompt_search.cli``)
in a folder of prepared input files. Most cases fail before a model loads; the few that
need one use the tiny causal LM of :mod:`autoprompt_search.testing`, saved to a folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import autoprompt_search
from autoprompt_search.testing import tiny_causal_lm

PACKAGE_ROOT = str(Path(autoprompt_search.__file__).resolve().parents[1])

TASK = """name: mini
data: {train: d.tsv, dev: d.tsv, test: d.tsv}
fields: [sentence]
labels: [negative, positive]
verbalizer: {negative: [bad], positive: [great]}
prompts: ['{sentence} it was [P] .']
"""
ROWS = [("the movie was great", 1), ("a good film", 1), ("it was terrible", 0), ("a bad film", 0)]
SPACE = """kind: space
task: task.yaml
templates: ['{sentence} All in all, [P] .']
params:
  shots: {type: int, low: 0, high: 2}
"""
RESULT = {"format": "autoprompt-search/prompt-result", "task": "task.yaml",
          "template": "{sentence} it was [P] .", "prompt": "{sentence} it was [P] .", "model": "m",
          "strategy": "gradient", "seed": 0}


def _files() -> dict[str, str | bytes]:
    """The input files of the cases, by name (text, or bytes for non-UTF-8 files)."""
    rows = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in ROWS)
    long_rows = rows + f"{'a very long review ' * 2700}\t1\n"  # ~50,000 characters
    files: dict[str, str | bytes] = {
        "task.yaml": TASK, "d.tsv": rows, "long.tsv": long_rows, "empty.tsv": "",
        "header.tsv": "sentence\tlabel\n", "badlabel.tsv": "sentence\tlabel\nfine\t7\n",
        "nocolumn.tsv": "text\tlabel\nfine\t1\n", "bad.jsonl": '{"sentence": "x", "label": 1}\n{oops\n',
        "data.xlsx": "not a spreadsheet", "latin1.tsv": "sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"),
        "binary.yaml": bytes(range(256)) * 4,
        "latin1-task.yaml": (TASK + "description: 'caf\xe9'\n").encode("latin-1"),
        "malformed.yaml": "name: [mini\n",
        "list.yaml": "- name\n- fields\n",
        "empty.yaml": "",
        "unknown-key.yaml": TASK + "colour: red\n",
        "typo-key.yaml": TASK.replace("fields:", "feilds:"),
        "no-fields.yaml": TASK.replace("fields: [sentence]\n", ""),
        "one-label.yaml": TASK.replace("labels: [negative, positive]", "labels: [positive]"),
        "label-space.yaml": TASK + "label_space: words\n",
        "verb-label.yaml": TASK.replace("{negative: [bad],", "{negtive: [bad],"),
        "verb-missing.yaml": TASK.replace("{negative: [bad], positive: [great]}", "{negative: [bad]}"),
        "verb-empty.yaml": TASK.replace("positive: [great]", "positive: []"),
        "verb-list.yaml": TASK.replace("{negative: [bad], positive: [great]}", "[bad, great]"),
        "open-verb.yaml": TASK.replace("labels: [negative, positive]\n", "label_space: vocabulary\n"),
        "prompt-no-p.yaml": TASK.replace("it was [P] .", "it was ."),
        "prompt-field.yaml": TASK.replace("'{sentence} it was [P] .'", "'{review} it was [P] .'"),
        "prompt-two-p.yaml": TASK.replace("'{sentence} it was [P] .'", "'[P] {sentence} [P]'"),
        "prompt-entry.yaml": TASK.replace("['{sentence} it was [P] .']", "[{name: x}]"),
        "standard.yaml": TASK.replace("['{sentence} it was [P] .']", "[{name: it-was, template: '{sentence} it was [P] .'}]")
        + "standard: it-wass\n",
        "prompt-verb.yaml": TASK.replace("['{sentence} it was [P] .']",
                                         "[{template: '{sentence} [P] .', verbalizer: {neg: [bad]}}]"),
        "data-key.yaml": TASK.replace("test: d.tsv}", "test: d.tsv, valid: d.tsv}"),
        "missing-data.yaml": TASK.replace("test: d.tsv", "test: nope.tsv"),
        "empty-data.yaml": TASK.replace("test: d.tsv", "test: empty.tsv"),
        "header-data.yaml": TASK.replace("test: d.tsv", "test: header.tsv"),
        "label-data.yaml": TASK.replace("test: d.tsv", "test: badlabel.tsv"),
        "column-data.yaml": TASK.replace("test: d.tsv", "test: nocolumn.tsv"),
        "jsonl-data.yaml": TASK.replace("test: d.tsv", "test: bad.jsonl"),
        "format-data.yaml": TASK.replace("test: d.tsv", "test: data.xlsx"),
        "latin1.yaml": TASK.replace("test: d.tsv", "test: latin1.tsv"),
        "long.yaml": TASK.replace("test: d.tsv", "test: long.tsv"),
        "seeds.yaml": TASK.replace("test: d.tsv}", "test: d.tsv, seeds: [13, 21]}"),
        "space.yaml": SPACE,
        "space-key.yaml": SPACE + "colour: red\n",
        "space-bounds.yaml": SPACE.replace("low: 0, high: 2", "low: 3, high: 2"),
        "space-type.yaml": SPACE.replace("type: int", "type: integer"),
        "space-list.yaml": SPACE.replace("{type: int, low: 0, high: 2}", "[0, 1, 2]"),
        "space-param.yaml": SPACE.replace("shots:", "shot:"),
        "space-pool.yaml": SPACE + "triggers: {pool: frequnt}\n",
        "space-size.yaml": SPACE + "triggers: {size: 30000}\n",
        "space-words.yaml": SPACE + "triggers: {pool: words}\n",
        "space-demos.yaml": SPACE + "demos: {split: test}\n",
        "space-shots.yaml": SPACE + "demos: {pool_size: 1}\n",
        "space-verb.yaml": SPACE + "verbalizers: {v: {negative: [bad], positiv: [good]}}\n",
        "space-verb-task.yaml": SPACE + "verbalizers: {task: {negative: [bad], positive: [good]}}\n",
        "space-task.yaml": SPACE.replace("task: task.yaml", "task: mini-task"),
        "space-other.yaml": SPACE.replace("task: task.yaml", "task: sst-2"),
        "space-kind.yaml": SPACE.replace("kind: space", "kind: spaces"),
        "result.json": json.dumps(RESULT),
        "result-fields.json": json.dumps({k: v for k, v in RESULT.items() if k not in ("prompt", "model")}),
        "result-format.json": json.dumps({k: v for k, v in RESULT.items() if k != "format"}),
        "result-key.json": json.dumps({**RESULT, "score": 1}),
        "result-broken.json": '{"format": ',
        "not-a-file.txt": "a file where a folder is expected\n",
        "strategy.yaml": "iterations: many\n",
    }
    files["run/config.json"] = "{}"
    files["run/checkpoint.json"] = "{}"
    files["empty-run/.keep"] = ""
    return files


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root`` (but the model link): files with size and mtime, folders."""
    out: dict[str, tuple[int, int] | None] = {}
    for p in root.rglob("*"):
        if p.name != "tiny":
            out[str(p.relative_to(root))] = None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
    return out


def _write_inputs(folder: Path, model: Path) -> None:
    for name, content in _files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    (folder / "tiny").symlink_to(model, target_is_directory=True)


M = ["--model", "tiny"]  # the tiny causal LM saved in the work folder
EV = ["evaluate", "--task", "task.yaml"]
SEARCH = ["search", "--task", "task.yaml", *M]

# (case id, arguments, a piece of the message): each must fail with one clear error line
CASES = [
    # command-line usage
    ("unknown-command", ["serch", "--task", "sst-2"], "did you mean 'search'"),
    ("unknown-option", [*EV, "--limt", "3"], "no such option: --limt"),
    ("option-without-value", ["evaluate", "--task"], "'--task' requires an argument"),
    ("limit-not-a-number", [*EV, "--human", "--limit", "abc"], "'--limit'"),
    ("seed-not-a-number", ["search", "--seed", "abc"], "'--seed'"),
    ("limit-zero", [*EV, "--human", "--limit", "0"], "greater than or equal to 1"),
    ("batch-size-negative", [*EV, "--human", "--batch-size", "-4"], "'--batch-size'"),
    ("resamples-too-few", ["compare", "--resamples", "5"], "'--resamples'"),
    ("select-on-choice", ["compare", "--task", "task.yaml", "--select-on", "test"],
     "--select-on: 'test' is not one of dev, cv"),
    ("folds-one", ["compare", "--task", "task.yaml", "--select-on", "cv", "--folds", "1"],
     "--folds must be at least 2"),
    ("folds-without-cv", ["compare", "--task", "task.yaml", "--folds", "3"], "--folds goes with --select-on cv"),
    ("long-inputs-choice", [*EV, "--human", "--long-inputs", "cut"], "'--long-inputs'"),
    ("validate-without-files", ["validate"], "missing argument"),
    ("list-what", ["list", "things"], "'things' is not one of 'tasks', 'models', 'strategies'"),
    ("export-format", ["export", "run", "--format", "xml"], "unknown --format 'xml'"),
    ("export-answer-without-fill", ["export", "run", "--answer", "x"], "go with --fill"),
    # output paths
    ("out-is-a-file", [*SEARCH, "--out", "not-a-file.txt"], "not-a-file.txt is a file"),
    ("out-not-writable", [*SEARCH, "--out", "/proc/x"], "cannot write to /proc/x"),
    ("out-under-a-file", [*SEARCH, "--out", "not-a-file.txt/run"], "is a file, not a folder"),
    ("json-is-a-folder", [*EV, "--human", "--json", "run"], "run is a folder"),
    ("compare-out-is-a-file", ["compare", "--out", "d.tsv"], "d.tsv is a file"),
    ("labels-out-not-writable", ["search-labels", "--out", "/proc/x/labels.yaml"], "cannot write"),
    # task files (validate reads them for real)
    ("task-not-found", ["validate", "nope.yaml"], "file not found"),
    ("task-malformed", ["validate", "malformed.yaml"], "malformed YAML (line 2"),
    ("task-not-a-mapping", ["validate", "list.yaml"], "expected a mapping"),
    ("task-empty", ["validate", "empty.yaml"], "the file is empty"),
    ("task-binary", ["validate", "binary.yaml"], "not a text file"),
    ("task-binary-evaluate", ["evaluate", "--task", "binary.yaml", "--human"], "binary.yaml: not a text file"),
    ("task-latin1", ["validate", "latin1-task.yaml"], "is not UTF-8; re-save the file as UTF-8"),
    ("task-unknown-key", ["validate", "unknown-key.yaml"], "unknown key 'colour'"),
    ("task-typo-key", ["validate", "typo-key.yaml"], "did you mean 'fields'"),
    ("task-missing-key", ["validate", "no-fields.yaml"], "missing required key 'fields'"),
    ("task-one-label", ["validate", "one-label.yaml"], "at least two class names"),
    ("task-label-space", ["validate", "label-space.yaml"], "label_space must be"),
    ("task-data-key", ["validate", "data-key.yaml"], "unknown key 'valid'"),
    ("verbalizer-unknown-label", ["validate", "verb-label.yaml"], "verbalizer label 'negtive' (did you mean 'negative'"),
    ("verbalizer-missing-label", ["validate", "verb-missing.yaml"], "no label word for positive"),
    ("verbalizer-no-words", ["validate", "verb-empty.yaml"], "verbalizer label 'positive' needs at least one"),
    ("verbalizer-not-a-mapping", ["validate", "verb-list.yaml"], "must map each label"),
    ("verbalizer-open-vocabulary", ["validate", "open-verb.yaml"], "open-vocabulary task has no verbalizer"),
    ("prompt-verbalizer", ["validate", "prompt-verb.yaml"], "verbalizer label 'neg'"),
    ("template-no-p", ["validate", "prompt-no-p.yaml"], "has no [P]"),
    ("template-two-p", ["validate", "prompt-two-p.yaml"], "2 [P] slots"),
    ("template-unknown-field", ["validate", "prompt-field.yaml"], "uses {review}"),
    ("prompt-without-template", ["validate", "prompt-entry.yaml"], "has no 'template'"),
    ("task-standard", ["validate", "standard.yaml"], "standard 'it-wass' names no prompt of the task (did you mean 'it-was'"),
    ("unknown-task", ["evaluate", "--task", "sst2", "--human"], "did you mean 'sst-2'"),
    # data files
    ("data-not-found", ["validate", "--data", "missing-data.yaml"], "data file not found"),
    ("data-empty", ["validate", "--data", "empty-data.yaml"], "data file is empty"),
    ("data-header-only", ["validate", "--data", "header-data.yaml"], "has a header but no examples"),
    ("data-bad-label", ["validate", "--data", "label-data.yaml"], "label '7', which is not one of"),
    ("data-no-column", ["validate", "--data", "column-data.yaml"], "no column 'sentence'"),
    ("data-bad-jsonl", ["validate", "--data", "jsonl-data.yaml"], "bad.jsonl:2: not valid JSON"),
    ("data-format", ["validate", "--data", "format-data.yaml"], "unsupported data format '.xlsx'"),
    ("data-latin1", ["validate", "--data", "latin1.yaml"], "latin1.tsv: byte 18 (0xe9) is not UTF-8"),
    ("data-split-seed", ["validate", "--data", "seeds.yaml"], "has split seeds [13, 21]"),
    # search-space files
    ("space-unknown-key", ["validate", "space-key.yaml"], "unknown key 'colour'"),
    ("space-bounds", ["validate", "space-bounds.yaml"], "low (3) is above high (2)"),
    ("space-type", ["validate", "space-type.yaml"], "did you mean 'int'"),
    ("space-list", ["validate", "space-list.yaml"], "a list is not a distribution"),
    ("space-param", ["validate", "space-param.yaml"], "unknown key 'shot'"),
    ("space-pool", ["validate", "space-pool.yaml"], "unknown pool 'frequnt'"),
    ("space-pool-size", ["validate", "space-size.yaml"], "is too many"),
    ("space-words", ["validate", "space-words.yaml"], "needs a 'words' list"),
    ("space-demos-test", ["validate", "space-demos.yaml"], "the test split is never searched on"),
    ("space-shots", ["validate", "space-shots.yaml"], "raise pool_size or lower shots"),
    ("space-verbalizer", ["validate", "space-verb.yaml"], "verbalizer label 'positiv'"),
    ("space-verbalizer-task", ["validate", "space-verb-task.yaml"], "'task' is reserved"),
    ("space-unknown-task", ["validate", "space-task.yaml"], "unknown task 'mini-task'"),
    ("space-kind", ["validate", "space-kind.yaml"], "unknown YAML kind 'spaces'"),
    ("space-other-task", [*SEARCH, "--strategy", "optuna", "--space", "space-other.yaml", "--out", "new-run"],
     "is for task 'sst-2', but the search runs on 'mini'"),
    # result files
    ("result-not-found", [*EV, "--prompt-file", "nope.json"], "prompt file not found"),
    ("result-fields-missing", [*EV, "--prompt-file", "result-fields.json"], "the result has no prompt, model"),
    ("result-no-format", [*EV, "--prompt-file", "result-format.json"], "not an autoprompt-search result file"),
    ("result-unknown-key", [*EV, "--prompt-file", "result-key.json"], "unknown key 'score'"),
    ("result-not-json", [*EV, "--prompt-file", "result-broken.json"], "not valid JSON"),
    # search strategies and their settings
    ("unknown-strategy", ["search", "--strategy", "gradiant"], "did you mean 'gradient'"),
    ("strategy-option-type", [*SEARCH, "--iterations", "many"], "expected int, got 'many'"),
    ("strategy-option-unknown", [*SEARCH, "--iteratons", "3"], "unknown key 'iteratons'"),
    ("strategy-argument", [*SEARCH, "stray"], "unexpected argument 'stray'"),
    ("strategy-config-file", [*SEARCH, "--config", "strategy.yaml"], "expected int, got 'many'"),
    ("init-choice", [*SEARCH, "--init", "best"], "is not one of neutral, random, human"),
    ("template-without-trigger", [*SEARCH, "--template", "{sentence} it was [P] .", "--out", "new-run"],
     "has no [T] slot"),
    ("init-word-multi-token", [*SEARCH, "--template", "{sentence} [T] [T] it was [P] .", "--init-word",
                               "zyzzogeton", "--out", "new-run"], "choose a single-token word"),
    ("search-splits-test", [*SEARCH, "--strategy", "optuna", "--search-splits", "test"], "--search-splits: use train and/or dev"),
    ("auto-folds", [*SEARCH, "--strategy", "auto", "--folds", "1"], "--folds must be at least 2"),
    ("auto-ensemble", [*SEARCH, "--strategy", "auto", "--ensemble", "0"], "--ensemble must be at least 1"),
    ("auto-objective", [*SEARCH, "--strategy", "auto", "--objective", "best"], "'best' is not one of accuracy, ce, margin"),
    ("auto-flag-value", [*SEARCH, "--strategy", "auto", "--no-cv", "maybe"], "expected true or false, got 'maybe'"),
    ("auto-calibration", [*SEARCH, "--strategy", "auto", "--no-calibration", "--calibration", "pmi"],
     "--no-calibration contradicts --calibration pmi"),
    ("auto-trigger-template", [*SEARCH, "--strategy", "auto", "--template", "{sentence} [T] [P]", "--out",
                               "new-run"], "does not fill [T] slots"),
    ("auto-folds-data", [*SEARCH, "--strategy", "auto", "--folds", "5", "--out", "new-run"], "use fewer --folds"),
    ("nothing-to-evaluate", EV, "nothing to evaluate"),
    ("label-words-syntax", [*EV, "--human", "--label-words", "negative"], "write CLASS=word"),
    ("label-words-empty", [*EV, "--human", "--label-words", "negative="], "no label word after '='"),
    ("label-words-twice", [*EV, "--human", "--label-words", "negative=bad", "--label-words", "negative=awful"],
     "class 'negative' is given twice"),
    # models (offline), and mistakes only a model can reveal (the tiny causal LM)
    ("model-offline", [*EV, "--human", "--model", "no-org/no-such-model"], "not available offline"),
    ("model-folder", [*EV, "--human", "--model", "./empty-run"], "no config.json"),
    ("dtype", [*EV, "--human", *M, "--dtype", "float13"], "unknown dtype 'float13'"),
    ("resume-not-a-run", [*SEARCH, "--resume", "--out", "empty-run", "--iterations", "1"], "is not a run folder"),
    ("run-exists", [*SEARCH, "--out", "run", "--iterations", "1"], "already holds a run"),
    ("split", [*EV, "--human", *M, "--split", "valid"], "unknown split 'valid'"),
    ("scoring-choice", [*EV, "--human", "--scoring", "sideways"], "unknown scoring rule 'sideways'"),
    ("channel-pmi", [*EV, *M, "--prompt", "{sentence} it was [P] .", "--scoring", "channel",
                     "--calibration", "pmi"], "does not apply to --scoring channel"),
    ("channel-fields-around-p", [*EV, *M, "--prompt", "{sentence} [P] {sentence}", "--scoring", "channel"],
     "has [P] between its input fields"),
    ("data-latin1-evaluate", ["evaluate", "--task", "latin1.yaml", "--human", *M], "latin1.tsv: byte 18"),
    ("long-input-refused", ["evaluate", "--task", "long.yaml", "--human", *M, "--limit", "8",
                            "--long-inputs", "error"], "longer than the model's context of 512 tokens"),
]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "autoprompt_search.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    before: dict
    after: dict


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case started in the background, a few at a time, each in its own folder.

    Each subprocess spends most of its time importing, so running them side by side keeps
    the table fast; separate folders keep one case's files out of another's check. Each test
    waits only for its own case (so no single test waits for the whole table).
    """
    base = tmp_path_factory.mktemp("bad-input")
    model, tok = tiny_causal_lm()
    model.save_pretrained(base / "tiny-model")
    tok.save_pretrained(base / "tiny-model")

    def run(case: tuple) -> Outcome:
        folder = base / case[0]
        _write_inputs(folder, base / "tiny-model")
        before = _snapshot(folder)
        proc = run_cli(case[1], folder)
        return Outcome(proc, before, _snapshot(folder))

    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    yield {case[0]: pool.submit(run, case) for case in CASES}
    pool.shutdown(wait=True, cancel_futures=True)


def test_the_table_has_at_least_fifty_distinct_cases():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case, message", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_error_line(outcomes, case, message):
    result = outcomes[case].result()
    proc = result.proc
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING ")]
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert message.lower() in lines[0].lower(), lines[0]
    assert all(not ln.startswith("error:") for ln in lines[1:]), proc.stderr
    assert result.after == result.before, "the failed command left files behind or changed some"


def test_an_internal_error_is_reported_as_a_bug(tmp_path):
    """Not a user mistake: the traceback is shown, with a line saying it is a bug."""
    script = ("import autoprompt_search.cli as cli\n"
              "def boom(*a, **k):\n    raise ZeroDivisionError('boom')\n"
              "import autoprompt_search.analysis.export as ex\nex.export_prompts = boom\n"
              "cli.main(['export', 'run'])\n")
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ZeroDivisionError: boom" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("this is a bug in autoprompt-search")
