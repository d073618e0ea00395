"""Causal LM backend: the label is scored as the next token(s) after the prompt."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from ..core.errors import UserError
from .base import LMBackend, PaddedBatch, PrefixCache, gather_positions
from .encoding import CausalPromptEncoder


class CausalLMBackend(LMBackend):
    kind = "causal"
    encoder_class = CausalPromptEncoder

    def __init__(self, model, tokenizer, name: str) -> None:
        super().__init__(model, tokenizer, name)
        self._base = model.base_model
        params = inspect.signature(self._base.forward).parameters
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept both
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @property
    def supports_prefix_cache(self) -> bool:
        return True

    @property
    def reads_left_to_right(self) -> bool:
        return True

    def _run(self, batch: PaddedBatch, inputs_embeds, prefix, prefix_rows, use_cache=False):
        mask = batch.attention_mask
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {}
        if prefix is not None:
            from transformers import DynamicCache

            kwargs[self._cache_kw] = DynamicCache(prefix.rows(prefix_rows))
            position_ids = position_ids + prefix.lengths[prefix_rows][:, None]
            mask = torch.cat([prefix.mask.index_select(0, prefix_rows), mask], dim=1)
        if inputs_embeds is None:
            kwargs["input_ids"] = batch.input_ids
        else:
            kwargs["inputs_embeds"] = inputs_embeds
        return self._base(attention_mask=mask, position_ids=position_ids, use_cache=use_cache,
                          **kwargs)

    def hidden_at(self, batch, positions, *, inputs_embeds=None, prefix=None, prefix_rows=None):
        out = self._run(batch, inputs_embeds, prefix, prefix_rows)
        return gather_positions(out.last_hidden_state, positions)

    def head(self, hidden, token_ids=None):
        lm_head = self.model.get_output_embeddings()
        if token_ids is None:
            return lm_head(hidden)
        weight = lm_head.weight[token_ids]
        bias = lm_head.bias[token_ids] if getattr(lm_head, "bias", None) is not None else None
        return torch.nn.functional.linear(hidden, weight, bias)

    @torch.inference_mode()
    def encode_prefix(self, prefixes: Sequence[Sequence[int]]) -> PrefixCache:
        """Run the prefixes once and keep their key/value states."""
        batch = self.pad(prefixes)
        out = self._run(batch, None, None, None, use_cache=True)
        cache = getattr(out, self._cache_kw, None) or out.past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return PrefixCache(layers, batch.attention_mask)

    # --- how a causal LM reads labels, triggers and text ------------------------------
    def check_label_word(self, word, label, ids) -> None:
        """Every label word is fine: one of several tokens is scored as a sequence."""

    def word_reading(self, prompt, word_ids):
        seq = list(prompt.ids) + list(word_ids[:-1])
        return seq, [(prompt.predict_pos + j, t) for j, t in enumerate(word_ids)]

    def neutral_trigger(self, init_word: str) -> int:
        ids = self.encoder.text_ids(init_word, True)
        if len(ids) != 1:
            raise UserError(f"init word {init_word!r} is {len(ids)} tokens in this vocabulary; "
                            "choose a single-token word")
        return ids[0]

    def starts_word(self, token_text: str) -> bool:
        return token_text.startswith(" ")  # byte-level BPE: a word starts with its space

    def span_log_perplexity(self, inputs: torch.Tensor, target_ids) -> torch.Tensor:
        dev = self.device
        target = torch.as_tensor(target_ids, device=dev).long()
        start = self.embed(torch.tensor([[self.start_id()]], device=dev)).detach()
        embeds = torch.cat([start, inputs.to(device=dev, dtype=start.dtype)[None]], dim=1)
        k = target.shape[0]
        batch = self.pad([[0] * (k + 1)])
        hidden = self.hidden_at(batch, torch.arange(k, device=dev)[None], inputs_embeds=embeds)
        logp = torch.log_softmax(self.head(hidden[0]).float(), dim=-1)  # [K, V]
        return -logp[torch.arange(k, device=dev), target].mean()

    @torch.no_grad()
    def log_perplexity(self, ids: Sequence[int]) -> float | None:
        """Mean negative log-likelihood of ``ids`` read after the start token."""
        if not ids:
            return None
        emb = self.embed(torch.as_tensor(list(ids), device=self.device)).detach()
        return float(self.span_log_perplexity(emb, list(ids)))
