"""Integration tests with the real SmolLM2-135M-Instruct and the shared 16-shot data."""

import pytest
import torch

from autoprompt_search.core.tasks import Task
from autoprompt_search.models.loading import model_aliases
from autoprompt_search.scoring.evaluation import evaluate_prompt
from autoprompt_search.scoring.scorer import PromptScorer

pytestmark = pytest.mark.integration


def test_alias_is_cached_as_plain_safetensors(smollm2):
    folder = model_aliases.get("smollm2-135m")()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert smollm2.kind == "causal" and smollm2.vocab_size == 49152


def test_sst2_human_prompt_on_the_full_test_split(smollm2, data_root):
    task = Task.load("sst-2", data_root=data_root)
    ev = evaluate_prompt(smollm2, task, "{sentence} It was [P] .", "test", batch_size=64)
    m = ev.metrics
    assert m["n"] == 1821
    assert m["accuracy"] == pytest.approx(sum(m["per_class_accuracy"][c] * n for c, n in
                                              zip(("negative", "positive"), (912, 909))) / 1821, abs=1e-3)
    # measured: 51% -- SmolLM2-135M puts " great" above " terrible" after "It was" for almost
    # every review (negative recall ~2%), so this human prompt sits at chance for this model
    assert 0.45 < m["accuracy"] < 0.95, m


def test_fast_path_equals_naive_on_smollm2(smollm2, data_root):
    task = Task.load("agnews", data_root=data_root)
    verb = {"World": ["World", "world politics"], "Sports": ["Sports"],
            "Business": ["Business"], "Tech": ["Tech"]}
    scorer = PromptScorer(smollm2, task, "{text} Topic: [P]", verb, batch_size=2)
    ex = task.examples("dev")[:3]
    torch.testing.assert_close(scorer.class_logprobs(ex), scorer.naive_class_logprobs(ex),
                               atol=2e-3, rtol=1e-3)


def test_lama_retrieval_ranks_objects(smollm2, data_root):
    task = Task.load("lama-P103", data_root=data_root)
    ev = evaluate_prompt(smollm2, task, task.prompts[0].template, "test", limit=64)
    m = ev.metrics
    assert m["n"] + m["skipped_multi_token"] == 64
    assert 0 < m["precision_at_1"] <= m["precision_at_10"] <= 1  # native language: often right
