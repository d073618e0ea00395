"""Task YAML loading, data files and their errors."""

from pathlib import Path

import pytest

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.tasks import Task, available_tasks
from autoprompt_search.core.validate import validate_file


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


TASK = """
name: mini
data: {train: train.tsv, dev: train.tsv, test: train.tsv}
fields: [sentence]
labels: [negative, positive]
verbalizer: {negative: [bad], positive: [good, great]}
prompts: ["{sentence} It was [P] ."]
"""


def test_load_task_from_yaml(tmp_path):
    write(tmp_path, "train.tsv", "sentence\tlabel\na fine film\t1\nawful\t0\n")
    task = Task.from_yaml(write(tmp_path, "t.yaml", TASK))
    ex = task.examples("train")
    assert [e.label for e in ex] == [1, 0]
    assert ex[0].fields["sentence"] == "a fine film"
    assert task.verbalizer["positive"] == ["good", "great"]


def test_label_names_in_data_are_accepted(tmp_path):
    write(tmp_path, "train.tsv", "sentence\tlabel\nx\tpositive\ny\tnegative\n")
    task = Task.from_yaml(write(tmp_path, "t.yaml", TASK))
    assert [e.label for e in task.examples("train")] == [1, 0]


def test_jsonl_and_csv(tmp_path):
    write(tmp_path, "d.jsonl", '{"sentence": "a", "label": 0}\n{"sentence": "b", "label": 1}\n')
    write(tmp_path, "d.csv", 'sentence,label\n"a, b",1\n')
    y = TASK.replace("train: train.tsv, dev: train.tsv, test: train.tsv", "train: d.jsonl, test: d.csv")
    task = Task.from_yaml(write(tmp_path, "t.yaml", y))
    assert len(task.examples("train")) == 2
    assert task.examples("test")[0].fields["sentence"] == "a, b"
    with pytest.raises(UserError, match="no 'dev' data file"):
        task.examples("dev")


@pytest.mark.parametrize("text,message", [
    ("name: x\nfields: [a\n", "malformed YAML"),
    (TASK + "colour: blue\n", "unknown key 'colour'"),
    (TASK.replace("fields:", "feilds:"), "unknown key 'feilds' \\(did you mean 'fields'\\?\\)"),
    (TASK.replace("{negative: [bad], positive: [good, great]}", "{negative: [bad]}"),
     "no label word for positive"),
    (TASK.replace("{negative: [bad],", "{negtive: [bad],"), "verbalizer label 'negtive'"),
    (TASK.replace('"{sentence} It was [P] ."', '"{sentence} It was ."'), "has no \\[P\\]"),
    (TASK.replace('"{sentence} It was [P] ."', '"{text} It was [P] ."'), "uses \\{text\\}"),
    ("", "the file is empty"),
])
def test_bad_task_files(tmp_path, text, message):
    path = write(tmp_path, "t.yaml", text)
    with pytest.raises(UserError, match=message) as err:
        Task.from_yaml(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("data,message", [
    (None, "data file not found"),
    ("", "data file is empty"),
    ("sentence\tlabel\n", "no examples"),
    ("sentence\tlabel\nx\t7\n", "label '7', which is not one of the task's labels"),
    ("text\tlabel\nx\t1\n", "no column 'sentence'"),
])
def test_bad_data_files(tmp_path, data, message):
    if data is not None:
        write(tmp_path, "train.tsv", data)
    task = Task.from_yaml(write(tmp_path, "t.yaml", TASK))
    with pytest.raises(UserError, match=message):
        task.examples("train")


def test_unknown_task_suggests_a_name():
    with pytest.raises(UserError, match="did you mean 'sst-2'"):
        Task.load("sst2")


def test_every_shipped_task_file_validates():
    names = available_tasks()
    assert {"sst-2", "sst-5", "agnews", "trec", "bbc-news", "lama-P103"} <= set(names)
    for path in names.values():
        assert "task" in validate_file(path)


def test_shipped_tasks_read_the_shared_suite(data_root):
    sizes = {"sst-2": 1821, "sst-5": 2210, "agnews": 7600, "trec": 500}
    for name, n_test in sizes.items():
        task = Task.load(name, data_root=data_root, seed=13)
        assert len(task.examples("train")) == 16 * len(task.labels)
        assert len(task.examples("test")) == n_test
    with pytest.raises(UserError, match="split seeds"):
        Task.load("sst-2", data_root=data_root, seed=7).examples("train")


def test_lama_task_has_human_prompts_from_both_files(data_root):
    task = Task.load("lama-P103", data_root=data_root)
    sources = {p.source for p in task.prompts}
    assert sources == {"LAMA", "LPAQA"}
    assert all("{sub_label}" in p.template and "[P]" in p.template for p in task.prompts)
    ex = task.examples("test")[0]
    assert ex.extra["label_text"] and ex.label == -1


def test_builtin_demo_corpus_needs_no_data_folder(tmp_path):
    task = Task.load("bbc-news", data_root=tmp_path / "nowhere")
    train, test = task.examples("train"), task.examples("test")
    assert len(train) == 16 * 5 and len(test) == 40 * 5
    assert {e.label for e in test} == set(range(5))
    assert not {e.fields["text"] for e in train} & {e.fields["text"] for e in test}


def test_wheel_ships_every_task_and_space_file(tmp_path):
    """A non-editable install finds the shipped files inside the package."""
    import subprocess
    import sys
    import zipfile

    from autoprompt_search.core.resources import shipped_dir

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(root)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(shipped_dir()).as_posix() for p in shipped_dir().rglob("*.yaml"))
    assert len(shipped) > 20
    missing = [f for f in shipped if f"autoprompt_search/search_spaces/{f}" not in names]
    assert not missing


# --- the one Verbalizer type ---------------------------------------------------------

def test_verbalizer_from_yaml_and_from_args_are_the_same_type():
    from autoprompt_search.core.verbalizer import Verbalizer

    from_yaml = Verbalizer.parse({"negative": "bad", "positive": [" good ", "great"]},
                                 ["negative", "positive"])
    from_args = Verbalizer.from_args(["negative=bad", "positive=good, great"])
    assert from_yaml == from_args == {"negative": ["bad"], "positive": ["good", "great"]}
    assert isinstance(from_args, Verbalizer) and from_args["positive"] == ["good", "great"]
    assert Verbalizer.from_args([]) is None


def test_verbalizer_json_round_trip(tmp_path):
    import json

    from autoprompt_search.core.verbalizer import Verbalizer

    write(tmp_path, "train.tsv", "sentence\tlabel\nx\t1\n")
    task = Task.from_yaml(write(tmp_path, "t.yaml", TASK))
    assert type(task.verbalizer) is dict  # what JSON and yaml.safe_dump take as they are
    text = json.dumps(task.verbalizer)
    again = Verbalizer.parse(json.loads(text), task.labels)
    assert again == task.verbalizer and again.to_dict() == {"negative": ["bad"],
                                                           "positive": ["good", "great"]}
    assert type(again.to_dict()) is dict


@pytest.mark.parametrize("items, message", [
    (["negative"], "write CLASS=word"),
    (["=bad"], "write CLASS=word"),
    (["negative="], "no label word after '='"),
    (["negative=bad", "negative=awful"], "given twice"),
    (["negative=bad", "positiv=good"], "verbalizer label 'positiv' \\(did you mean 'positive'"),
    (["negative=bad"], "no label word for positive"),
])
def test_verbalizer_args_errors(items, message):
    from autoprompt_search.core.verbalizer import Verbalizer

    with pytest.raises(UserError, match=message):
        Verbalizer.from_args(items, ["negative", "positive"])


def test_a_prompts_own_verbalizer_is_checked_against_the_labels(tmp_path):
    text = TASK.replace('prompts: ["{sentence} It was [P] ."]',
                        'prompts: [{template: "{sentence} [P] .", verbalizer: {negative: bad, '
                        'positive: good}}]')
    task = Task.from_yaml(write(tmp_path, "t.yaml", text))
    assert task.prompts[0].verbalizer == {"negative": ["bad"], "positive": ["good"]}
    with pytest.raises(UserError, match="verbalizer label 'neg'"):
        Task.from_yaml(write(tmp_path, "u.yaml", text.replace("{negative: bad,", "{neg: bad,")))


# --- text files are UTF-8 ----------------------------------------------------------------

def test_non_utf8_data_is_refused_with_file_and_byte_offset(tmp_path):
    (tmp_path / "train.tsv").write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    task = Task.from_yaml(write(tmp_path, "t.yaml", TASK))
    with pytest.raises(UserError, match=r"train.tsv: byte 18 \(0xe9\) is not UTF-8; re-save"):
        task.examples("train")
    # a UTF-8 byte-order mark is not part of the header
    (tmp_path / "train.tsv").write_bytes("\ufeffsentence\tlabel\ncafé\t1\n".encode("utf-8"))
    assert task.examples("train")[0].fields["sentence"] == "café"


def test_binary_task_file_is_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(UserError, match="not a text file"):
        Task.from_yaml(path)
