"""Fixtures shared by the compare and export tests: a toy task file, a tiny model folder,
and a found-prompt result with trigger tokens for that model."""

from __future__ import annotations

import pytest
import yaml

from autoprompt_search.core.results import PromptResult
from autoprompt_search.core.templates import Template
from autoprompt_search.models import load_model
from autoprompt_search.testing import tiny_causal_lm

ROWS = [
    ("the movie was great", 1), ("a wonderful story", 1), ("a good film", 1),
    ("it was fine and good", 1), ("what a great game", 1), ("the team won", 1),
    ("it was terrible", 0), ("a bad film", 0), ("not good , not great", 0),
    ("the market fell today", 0), ("it was bad", 0), ("a terrible story", 0),
]
FOUND_TEMPLATE = "{sentence} [T] [T] it was [P] ."


@pytest.fixture(scope="module")
def toy_yaml(tmp_path_factory):
    """A task YAML with train/dev/test TSVs and three human prompts (one unreadable by a causal LM)."""
    folder = tmp_path_factory.mktemp("toytask")
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in ROWS))
    raw = {
        "name": "toy", "fields": ["sentence"], "labels": ["negative", "positive"],
        "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        "verbalizer": {"negative": ["bad"], "positive": ["great"]},
        "prompts": [{"name": "it-was", "template": "{sentence} it was [P] ."},
                    {"name": "film", "template": "{sentence} a [P] film ."},
                    {"name": "story", "template": "{sentence} what a story , [P]"}],
    }
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny causal LM saved as a model folder (so the CLI can load it with --model)."""
    folder = tmp_path_factory.mktemp("tinymodel")
    model, tokenizer = tiny_causal_lm(seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_loaded(tiny_dir):
    return load_model(str(tiny_dir))


def make_found(backend, task_path, folder, words=(" movie", " story"), seed=7, log=None):
    """A hand-made found prompt (trigger ids of ``words``) saved as a run folder."""
    ids = [backend.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids), ids
    ids = [i[0] for i in ids]
    decoded = [backend.encoder.decode_trigger(i) for i in ids]
    prompt = Template.parse(FOUND_TEMPLATE).render(triggers=decoded)
    result = PromptResult(task=str(task_path), template=FOUND_TEMPLATE, prompt=prompt,
                          model=backend.name, strategy="handmade", seed=seed,
                          verbalizer={"negative": ["bad"], "positive": ["great"]},
                          trigger_ids=ids, trigger_tokens=decoded, scores={"dev_accuracy": 0.5})
    folder.mkdir(parents=True, exist_ok=True)
    result.save(folder)
    if log is not None:
        (folder / "log.jsonl").write_text("".join(
            f'{{"step": {i}, "dev_accuracy": {v}, "note": "x"}}\n' for i, v in enumerate(log)))
    return result
