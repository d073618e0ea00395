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
