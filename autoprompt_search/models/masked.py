"""Masked LM backend: the label is scored at the [MASK] token."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import UserError
from .base import LMBackend, gather_positions
from .encoding import MaskedPromptEncoder


class MaskedLMBackend(LMBackend):
    kind = "masked"
    encoder_class = MaskedPromptEncoder

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

    def check_label_word(self, word, label, ids) -> None:
        if len(ids) > 1:
            pieces = [self.tokenizer.convert_ids_to_tokens(i) for i in ids]
            raise UserError(
                f"label word {word!r} (class '{label}') splits into {len(ids)} tokens "
                f"{pieces} in this masked LM's vocabulary; a [MASK] slot predicts one token. "
                "Choose a single-token word (try `autoprompt-search search-labels` to find some)."
            )

    def word_reading(self, prompt, word_ids):
        return list(prompt.ids), [(prompt.predict_pos, word_ids[0])]

    def neutral_trigger(self, init_word: str) -> int:
        return int(self.tokenizer.mask_token_id)  # AutoPrompt's start: [MASK] in every slot

    @torch.inference_mode()
    def log_perplexity(self, ids: Sequence[int]) -> float | None:
        """Pseudo-log-perplexity: each token read with itself masked, the others in place."""
        if not ids:
            return None
        enc, dev = self.encoder, self.device
        full = list(enc.prefix_special) + list(ids) + list(enc.suffix_special)
        rows = torch.tensor([full] * len(ids), device=dev)
        pos = torch.arange(len(ids), device=dev) + len(enc.prefix_special)
        rows[torch.arange(len(ids)), pos] = self.tokenizer.mask_token_id
        logits = self.model(input_ids=rows).logits[torch.arange(len(ids)), pos].float()
        logp = torch.log_softmax(logits, -1)
        return float(-logp[torch.arange(len(ids)), torch.tensor(list(ids), device=dev)].mean())


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
