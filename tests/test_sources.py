"""Hugging Face datasets as a data source: save_to_disk folders and parquet files, no network."""

from __future__ import annotations

import pytest

from autoprompt_search.core.data import read_rows
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.tasks import Task

datasets = pytest.importorskip("datasets", reason="the hub extra (datasets) is not installed")

ROWS = {
    "train": [("a great film", 1), ("a bad film", 0), ("wonderful", 1), ("terrible", 0)],
    "validation": [("so good", 1), ("so bad", 0)],
    "test": [("great acting", 1), ("awful plot", 0), ("fine work", 1)],
}
BASE = {
    "name": "toy-hub", "fields": ["sentence"], "labels": ["negative", "positive"],
    "verbalizer": {"negative": ["bad"], "positive": ["great"]},
}


def _dataset_dict():
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]},
                                          features=features)
        for split, rows in ROWS.items()})


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "toy-ds"
    _dataset_dict().save_to_disk(str(folder))
    return folder


def test_save_to_disk_folder_with_split_and_column_mapping(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = Task.from_mapping({**BASE, "data": {"hub": "toy-ds", "columns": {"sentence": "text"}}},
                             source="toy.yaml", base=tmp_path)
    dev = task.examples("dev")  # our dev is the dataset's validation split by default
    assert [(e.fields["sentence"], e.label) for e in dev] == [("so good", 1), ("so bad", 0)]
    assert [e.label for e in task.examples("test")] == [1, 0, 1]
    assert len(task.examples("train")) == 4
    task.examples("dev")
    assert task._hub.loads == 1  # loaded once per task, whatever the number of calls


def test_explicit_split_mapping_and_errors(saved, tmp_path):
    raw = {**BASE, "data": {"hub": str(saved), "splits": {"dev": "test"}, "columns": {"sentence": "text"}}}
    task = Task.from_mapping(raw, source="toy.yaml", base=tmp_path)
    assert len(task.examples("dev")) == 3
    bad_split = Task.from_mapping({**raw, "data": {**raw["data"], "splits": {"dev": "valid"}}},
                                  source="toy.yaml", base=tmp_path)
    with pytest.raises(UserError, match="no split 'valid'.*train, validation, test"):
        bad_split.examples("dev")
    bad_column = Task.from_mapping({**raw, "data": {**raw["data"], "columns": {"sentence": "txt"}}},
                                   source="toy.yaml", base=tmp_path)
    with pytest.raises(UserError, match="no column txt"):
        bad_column.examples("train")
    no_column = Task.from_mapping({**BASE, "data": {"hub": str(saved)}}, source="toy.yaml", base=tmp_path)
    with pytest.raises(UserError, match="no column 'sentence'"):
        no_column.examples("train")
    with pytest.raises(UserError, match="go with data.hub"):
        Task.from_mapping({**BASE, "data": {"train": "t.tsv", "columns": {"sentence": "text"}}})


def test_parquet_files_as_data_and_as_hub(tmp_path):
    ds = _dataset_dict()
    for split, theirs in (("train", "train"), ("dev", "validation"), ("test", "test")):
        ds[theirs].rename_column("text", "sentence").to_parquet(str(tmp_path / f"{split}.parquet"))
    assert read_rows(tmp_path / "dev.parquet") == [{"sentence": "so good", "label": 1},
                                                  {"sentence": "so bad", "label": 0}]
    files = Task.from_mapping({**BASE, "data": {s: f"{s}.parquet" for s in ("train", "dev", "test")}},
                              source="toy.yaml", base=tmp_path)
    assert [e.label for e in files.examples("test")] == [1, 0, 1]
    one = Task.from_mapping({**BASE, "data": {"hub": "test.parquet", "splits": {"test": "train"}}},
                            source="toy.yaml", base=tmp_path)
    assert [e.fields["sentence"] for e in one.examples("test")] == ["great acting", "awful plot", "fine work"]
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a readable parquet file"):
        read_rows(tmp_path / "broken.parquet")


def test_missing_hub_dataset_offline_is_a_user_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import, so patched here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    task = Task.from_mapping({**BASE, "data": {"hub": "nobody/no-such-dataset-xyz"}}, source="toy.yaml",
                             base=tmp_path)
    with pytest.raises(UserError, match="could not load the dataset 'nobody/no-such-dataset-xyz'"):
        task.examples("train")
