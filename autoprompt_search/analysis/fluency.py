"""Fluency of prompts: the LM's own log-perplexity of prompt tokens.

As in FluentPrompt (Shi et al. 2023): adding the log-perplexity of the trigger
tokens to the search loss (with a weight) pushes found prompts towards text the
model finds likely. The trigger span is read on its own, after the tokenizer's
beginning-of-text token (BOS, else EOS), so every trigger token is predicted.

* :func:`span_log_perplexity` -- differentiable term for searches (causal LMs);
* :func:`text_perplexity` / :func:`prompt_fluency` -- reports for any found prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..models.base import LMBackend


def require_causal(backend: LMBackend, what: str = "the fluency term") -> None:
    """A user error unless ``backend`` gives a left-to-right perplexity (causal LMs)."""
    backend.check_perplexity(what)


def span_log_perplexity(backend: LMBackend, inputs: torch.Tensor, target_ids: Sequence[int] | torch.Tensor,
                        ) -> torch.Tensor:
    """Mean negative log-likelihood of ``target_ids`` ([K]) read after BOS, when the span's
    input embeddings are ``inputs`` ([K, d], e.g. soft or projected vectors).

    Differentiable in ``inputs``. With ``inputs`` the embeddings of ``target_ids`` this is
    the ordinary log-perplexity of the token span.
    """
    require_causal(backend)
    return backend.span_log_perplexity(inputs, target_ids)


def ids_log_perplexity(backend: LMBackend, ids: Sequence[int]) -> float:
    """Log-perplexity of a token-id sequence read after BOS (causal LMs; nan for no ids)."""
    require_causal(backend)
    value = backend.log_perplexity(list(ids))
    return float("nan") if value is None else value


def trigger_log_perplexity(backend: LMBackend, ids: Sequence[int]) -> float | None:
    """Log-perplexity of trigger ids where the model reads left to right, else None."""
    return ids_log_perplexity(backend, ids) if backend.reads_left_to_right else None


def text_perplexity(backend: LMBackend, text: str) -> dict[str, float]:
    """Log-perplexity and perplexity of ``text`` under a causal LM."""
    require_causal(backend, "a perplexity report")
    ids = list(backend.encoder.text_ids(text, False))
    log_ppl = ids_log_perplexity(backend, ids)
    return {"log_ppl": log_ppl, "ppl": math.exp(log_ppl) if log_ppl == log_ppl else float("nan"),
            "tokens": len(ids)}


def prompt_fluency(backend: LMBackend, trigger_text: str, prompt_text: str) -> dict[str, float]:
    """Perplexity of a found prompt's trigger tokens (as text) and of the whole rendered prompt."""
    trig = text_perplexity(backend, trigger_text) if trigger_text.strip() else None
    whole = text_perplexity(backend, prompt_text)
    out = {"prompt_log_ppl": whole["log_ppl"], "prompt_ppl": whole["ppl"]}
    if trig is not None:
        out.update(trigger_log_ppl=trig["log_ppl"], trigger_ppl=trig["ppl"])
    return out


def perplexity(backend: LMBackend, text: str) -> float | None:
    """The LM's perplexity of ``text`` (causal LMs: read after the start token; masked LMs:
    pseudo-perplexity, masking one token at a time). None for empty text."""
    ids = list(backend.encoder.text_ids(text, False)) if text else []
    log_ppl = backend.log_perplexity(ids)
    return None if log_ppl is None else math.exp(log_ppl)
