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

from ..core.errors import UserError
from ..models.base import LMBackend


def _start_id(backend: LMBackend) -> int:
    tok = backend.tokenizer
    for tid in (tok.bos_token_id, tok.eos_token_id, backend.pad_id):
        if tid is not None:
            return int(tid)
    return 0


def require_causal(backend: LMBackend, what: str = "the fluency term") -> None:
    if backend.kind != "causal":
        raise UserError(f"{what} needs a causal LM to compute perplexity; {backend.name} is a "
                        "masked LM (set --fluency-weight 0, or judge fluency with a causal --model)")


def span_log_perplexity(backend: LMBackend, inputs: torch.Tensor, target_ids: Sequence[int] | torch.Tensor,
                        ) -> torch.Tensor:
    """Mean negative log-likelihood of ``target_ids`` ([K]) read after BOS, when the span's
    input embeddings are ``inputs`` ([K, d], e.g. soft or projected vectors).

    Differentiable in ``inputs``. With ``inputs`` the embeddings of ``target_ids`` this is
    the ordinary log-perplexity of the token span.
    """
    require_causal(backend)
    dev = backend.device
    target = torch.as_tensor(target_ids, device=dev).long()
    start = backend.embed(torch.tensor([[_start_id(backend)]], device=dev)).detach()
    embeds = torch.cat([start, inputs.to(device=dev, dtype=start.dtype)[None]], dim=1)  # [1, K+1, d]
    k = target.shape[0]
    batch = backend.pad([[0] * (k + 1)])
    hidden = backend.hidden_at(batch, torch.arange(k, device=dev)[None], inputs_embeds=embeds)
    logp = torch.log_softmax(backend.head(hidden[0]).float(), dim=-1)  # [K, V]
    return -logp[torch.arange(k, device=dev), target].mean()


@torch.no_grad()
def ids_log_perplexity(backend: LMBackend, ids: Sequence[int]) -> float:
    """Log-perplexity of a token-id sequence read after BOS."""
    if not ids:
        return float("nan")
    emb = backend.embed(torch.as_tensor(list(ids), device=backend.device)).detach()
    return float(span_log_perplexity(backend, emb, list(ids)))


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
