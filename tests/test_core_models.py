"""Model loading: local folders, masked vs causal detection, aliases, offline errors."""

import pytest
import torch

from autoprompt_search.core.errors import UserError
from autoprompt_search.models import CausalLMBackend, MaskedLMBackend, load_model
from autoprompt_search.models.loading import cache_dir, model_kind
from autoprompt_search.testing import tiny_causal_lm, tiny_masked_lm


@pytest.mark.parametrize("make,cls", [(tiny_causal_lm, CausalLMBackend), (tiny_masked_lm, MaskedLMBackend)])
def test_load_local_folder_picks_the_model_kind(tmp_path, make, cls):
    model, tok = make()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    backend = load_model(str(tmp_path))
    assert isinstance(backend, cls)
    assert backend.kind == model_kind(model.config)
    torch.testing.assert_close(backend.input_embeddings(), model.get_input_embeddings().weight)
    assert not any(p.requires_grad for p in backend.model.parameters())
    bf16 = load_model(str(tmp_path), dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16


def test_model_folder_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(UserError, match="model folder not found"):
        load_model("./does/not/exist")
    with pytest.raises(UserError, match="not available offline.*HF_HUB_OFFLINE"):
        load_model("some-org/some-model")
    with pytest.raises(UserError, match="unknown dtype"):
        load_model("smollm2-135m", dtype="int3")


def test_cache_dir_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOPROMPT_SEARCH_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AUTOPROMPT_SEARCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "autoprompt-search"


# --- what differs between masked and causal LMs lives in their classes -----------------------


def test_backends_say_how_they_read_labels_and_triggers(tiny_causal, tiny_masked):
    mask = tiny_masked.tokenizer.mask_token_id
    assert tiny_masked.neutral_trigger("the") == mask
    assert tiny_causal.neutral_trigger("the") == tiny_causal.encoder.text_ids("the", True)[0]
    with pytest.raises(UserError, match="single-token word"):
        tiny_causal.neutral_trigger("terribly")  # 7 tokens in the tiny vocabulary
    assert tiny_causal.starts_word(" film") and not tiny_causal.starts_word("film")
    assert tiny_masked.starts_word("film")
    ids = tiny_causal.encoder.label_ids("terribly", True)
    tiny_causal.check_label_word("terribly", "negative", ids)  # scored as a sequence
    with pytest.raises(UserError, match="splits into 2 tokens"):
        tiny_masked.check_label_word("films", "positive", (10, 11))


def test_naive_word_reading(tiny_causal, tiny_masked):
    from autoprompt_search.models.encoding import EncodedPrompt

    prompt = EncodedPrompt((1, 2, 3, 4), (1,), 3)
    assert tiny_causal.word_reading(prompt, (7, 8, 9)) == ([1, 2, 3, 4, 7, 8], [(3, 7), (4, 8), (5, 9)])
    assert tiny_masked.word_reading(prompt, (7,)) == ([1, 2, 3, 4], [(3, 7)])


def test_perplexity_causal_and_pseudo_perplexity_masked(tiny_causal, tiny_masked):
    ids = list(tiny_causal.encoder.text_ids("the movie was great", False))
    seq = [tiny_causal.start_id()] + ids
    with torch.no_grad():
        logits = tiny_causal.model(input_ids=torch.tensor([seq])).logits[0, :-1]
    want = float(-torch.log_softmax(logits, -1)[torch.arange(len(ids)), torch.tensor(ids)].mean())
    assert tiny_causal.log_perplexity(ids) == pytest.approx(want, abs=1e-5)
    words = list(tiny_masked.encoder.text_ids("the movie was great", False))
    full = [tiny_masked.tokenizer.cls_token_id] + words + [tiny_masked.tokenizer.sep_token_id]
    nll = []
    with torch.no_grad():
        for i, t in enumerate(words):
            row = list(full)
            row[i + 1] = tiny_masked.tokenizer.mask_token_id
            logits = tiny_masked.model(input_ids=torch.tensor([row])).logits[0, i + 1]
            nll.append(float(-torch.log_softmax(logits, -1)[t]))
    assert tiny_masked.log_perplexity(words) == pytest.approx(sum(nll) / len(nll), abs=1e-5)
    assert tiny_masked.log_perplexity([]) is None
    assert not tiny_masked.reads_left_to_right
    with pytest.raises(UserError, match="needs a causal LM"):
        tiny_masked.check_perplexity()


def test_no_module_outside_models_branches_on_the_model_kind():
    """Masked/causal behaviour is polymorphic: only models/ may look at ``kind``."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "autoprompt_search"
    pattern = re.compile(r"""kind\s*[!=]=\s*["'](masked|causal)["']""")
    hits = [f"{path.relative_to(package)}:{n}" for path in package.rglob("*.py")
            if path.parent.name != "models"
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_library_scoring_leaves_the_global_rng_alone(tiny_backend, toy_task):
    from autoprompt_search.core.spaces import SearchSpace, TriggerSpec
    from autoprompt_search.scoring.softprompt import projection_mask
    from autoprompt_search.search.labels import train_probe
    from autoprompt_search.search.pools import PoolContext, label_search_pool

    state = torch.get_rng_state()
    train_probe(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)),
                torch.tensor([0, 1] * 4), 2)
    ctx = PoolContext(tiny_backend, toy_task, SearchSpace(task=None),
                      TriggerSpec(pool="label_search", size=5, min_chars=1),
                      toy_task.examples("train"), ["{sentence} it was [P] ."], frozenset())
    first = label_search_pool(ctx)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # a different global state does not change the pool
    assert label_search_pool(ctx) == first
    mask = projection_mask(tiny_backend)
    assert projection_mask(tiny_backend) is mask  # kept on the backend, not in module state


def test_prompt_encoder_of_a_kind():
    from autoprompt_search import PromptEncoder
    from autoprompt_search.models.encoding import CausalPromptEncoder, MaskedPromptEncoder
    from autoprompt_search.testing import tiny_causal_tokenizer, tiny_masked_tokenizer

    assert isinstance(PromptEncoder(tiny_causal_tokenizer(), "causal"), CausalPromptEncoder)
    masked = PromptEncoder(tiny_masked_tokenizer(), "masked")
    assert isinstance(masked, MaskedPromptEncoder) and masked.suffix_special
    with pytest.raises(ValueError, match="model kind"):
        PromptEncoder(tiny_causal_tokenizer(), "seq2seq")


def test_loading_leaves_progress_bars_and_logging_to_transformers(tmp_path, capsys):
    """Download bars stay on (no global switch); only the per-load 'Loading weights' bar is hidden."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    model, tok = tiny_causal_lm()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    verbosity = hf_logging.get_verbosity()
    load_model(str(tmp_path))
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    assert hf_logging.get_verbosity() == verbosity
    assert "Loading weights" not in capsys.readouterr().err
    assert getattr(hf_logging, "_tqdm_hook", None) is None  # the one-call hook is removed again
