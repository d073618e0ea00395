"""Masked LM backend: the label is scored at the [MASK] token."""

from __future__ import annotations

import torch

from .base import LMBackend, gather_positions


class MaskedLMBackend(LMBackend):
    kind = "masked"

    def __init__(self, model, tokenizer, name: str) -> None:
        super().__init__(model, tokenizer, name)
        self._base = model.base_model
        self._head = _find_mlm_head(model)

    def hidden_at(self, batch, positions, *, inputs_embeds=None, prefix=None, prefix_rows=None):
        if prefix is not None:
            raise ValueError("masked LMs attend in both directions: no prefix cache")
        kwargs = {"input_ids": batch.input_ids} if inputs_embeds is None else {
            "inputs_embeds": inputs_embeds}
        if self._head is None:  # unknown head layout: full forward, then pick positions
            logits = self.model(attention_mask=batch.attention_mask, **kwargs).logits
            return gather_positions(logits, positions)
        out = self._base(attention_mask=batch.attention_mask, **kwargs)
        return gather_positions(out.last_hidden_state, positions)

    def head(self, hidden, token_ids=None):
        logits = hidden if self._head is None else self._head(hidden)
        return logits if token_ids is None else logits[..., token_ids]


def _find_mlm_head(model) -> torch.nn.Module | None:
    """The child module that maps the encoder's hidden states to vocabulary logits.

    BERT keeps it in ``cls``, RoBERTa in ``lm_head``: the child that contains the
    output embeddings. Where the head is spread over several children (DistilBERT),
    return None and let :meth:`MaskedLMBackend.hidden_at` fall back to a full forward.
    """
    out_emb = model.get_output_embeddings()
    base = model.base_model
    heads = []
    for child in model.children():
        if child is base:
            continue
        if any(m is out_emb for m in child.modules()):
            heads.append(child)
    others = [c for c in model.children() if c is not base and c not in heads
              and any(True for _ in c.parameters())]
    if len(heads) == 1 and heads[0] is not out_emb and not others:
        return heads[0]
    return None
