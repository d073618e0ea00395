"""The LM backend interface: a frozen model, its tokenizer, and fast scoring at [P].

Like lm-evaluation-harness's ``LM``, every backend fits behind a few methods:

* :meth:`LMBackend.hidden_at` -- hidden states at given positions of a padded
  batch, from token ids or from input embeddings (what gradient and soft-prompt
  searches need), optionally on top of a cached prefix (causal LMs only);
* :meth:`LMBackend.head` -- the LM head applied to those hidden states only, for
  the whole vocabulary or only the requested token ids;
* :meth:`LMBackend.input_embeddings` -- the input embedding matrix.

Logits are never computed at every position, and never for the whole batch
sequence: only at the predict positions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.context import context_length
from ..core.errors import UserError
from ..core.templates import Kind
from .encoding import EncodedPrompt, PromptEncoder


@dataclass
class PaddedBatch:
    """Right-padded token ids with their attention mask."""

    input_ids: torch.Tensor  # [R, S]
    attention_mask: torch.Tensor  # [R, S]

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]], pad_id: int, device) -> PaddedBatch:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = 1
        return cls(ids.to(device), mask.to(device))


class PrefixCache:
    """Key/value states of a batch of prompt prefixes (causal LMs), reusable many times.

    Prefixes are right-padded; ``lengths`` holds their real lengths. Rows of later
    batches pick their prefix with an index, so B example prefixes can serve
    B x C candidate rows without recomputation.
    """

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        self.layers = layers
        self.mask = mask  # [Bp, P]
        self.lengths = mask.sum(-1)  # [Bp]

    def __len__(self) -> int:
        return self.mask.shape[0]

    @classmethod
    def concat(cls, parts: list[PrefixCache]) -> PrefixCache:
        """One cache of new plain tensors from one or several (right-padded to the longest)."""
        width = max(p.mask.shape[1] for p in parts)

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            extra = width - t.shape[dim]
            if not extra:
                return t
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([t, t.new_zeros(shape)], dim=dim)

        layers = [(torch.cat([pad(p.layers[i][0], 2) for p in parts]),
                   torch.cat([pad(p.layers[i][1], 2) for p in parts]))
                  for i in range(len(parts[0].layers))]
        return cls(layers, torch.cat([pad(p.mask, 1) for p in parts]))

    def rows(self, index: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(self) == 1:
            n = index.shape[0]
            return [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in self.layers]
        return [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.layers]


class LMBackend(ABC):
    """A frozen LM (masked or causal) with its tokenizer."""

    kind: Kind
    encoder_class: type[PromptEncoder]

    def __init__(self, model, tokenizer, name: str) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.encoder = self.encoder_class(tokenizer)
        self._memo: dict[tuple, object] = {}
        self.encoder.context.max_length = context_length(model, tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)

    # --- facts ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[0]

    def input_embeddings(self) -> torch.Tensor:
        """The input embedding matrix ``[V, d]`` (no gradient)."""
        return self.model.get_input_embeddings().weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def pad(self, seqs: Sequence[Sequence[int]]) -> PaddedBatch:
        return PaddedBatch.from_lists(seqs, self.pad_id, self.device)

    # --- the interface ----------------------------------------------------------
    @abstractmethod
    def hidden_at(
        self,
        batch: PaddedBatch,
        positions: torch.Tensor,
        *,
        inputs_embeds: torch.Tensor | None = None,
        prefix: PrefixCache | None = None,
        prefix_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states that feed the LM head, at ``positions`` ([R] or [R, K]) of each row.

        With ``inputs_embeds`` ([R, S, d]) the embeddings replace the token ids (which
        then only supply padding). With ``prefix``, row r continues prefix
        ``prefix_rows[r]`` and positions count from the start of the row's own tokens.
        """

    @abstractmethod
    def head(self, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """LM-head logits for ``hidden`` ([..., d]): all tokens, or ``token_ids`` only."""

    def encode_prefix(self, prefixes: Sequence[Sequence[int]]) -> PrefixCache:
        raise NotImplementedError(f"{type(self).__name__} has no prefix cache")

    @property
    def supports_prefix_cache(self) -> bool:
        return False

    # --- how this kind of model reads labels, triggers and text ------------------------
    @abstractmethod
    def check_label_word(self, word: str, label: str, ids: Sequence[int]) -> None:
        """Raise a user error if this model cannot score label word ``word`` (token ``ids``)."""

    @abstractmethod
    def word_reading(self, prompt: EncodedPrompt, word_ids: Sequence[int],
                     ) -> tuple[list[int], list[tuple[int, int]]]:
        """(the sequence to run, [(position, token)] whose log-probs sum to log p(word)) for the
        naive one-word-at-a-time reference."""

    @abstractmethod
    def neutral_trigger(self, init_word: str) -> int:
        """The token a trigger slot starts from when no trigger is known yet."""

    def starts_word(self, token_text: str) -> bool:
        """Whether a decoded token can stand as a word of its own in a trigger slot."""
        return True

    @abstractmethod
    def log_perplexity(self, ids: Sequence[int]) -> float | None:
        """The model's log-perplexity of a token-id sequence (None where it has none)."""

    def span_log_perplexity(self, inputs: torch.Tensor, target_ids) -> torch.Tensor:
        """Differentiable mean negative log-likelihood of ``target_ids`` read after the start
        token, with ``inputs`` ([K, d]) as their input embeddings (causal LMs)."""
        self.check_perplexity()
        raise NotImplementedError

    @property
    def reads_left_to_right(self) -> bool:
        """Whether the model predicts each token from the ones before it (a true perplexity)."""
        return False

    def check_perplexity(self, what: str = "the fluency term") -> None:
        """Raise a user error if this model cannot give the left-to-right perplexity ``what`` needs."""
        if not self.reads_left_to_right:
            raise UserError(f"{what} needs a causal LM to compute perplexity; {self.name} is a "
                            "masked LM (set --fluency-weight 0, or judge fluency with a causal --model)")

    def memo(self, key: tuple, make):
        """``make()`` computed once per backend and ``key`` (token masks and other tables)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def start_id(self) -> int:
        """The beginning-of-text token a span is read after (BOS, else EOS, else padding)."""
        tok = self.tokenizer
        for tid in (tok.bos_token_id, tok.eos_token_id, self.pad_id):
            if tid is not None:
                return int(tid)
        return 0

    # --- derived ----------------------------------------------------------------
    def logprobs_at(
        self,
        batch: PaddedBatch,
        positions: torch.Tensor,
        token_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Log-probabilities (over the whole vocabulary) at ``positions``.

        Returns ``[R, V]`` (or ``[R, K, V]``), or only the columns of ``token_ids``.
        """
        hidden = self.hidden_at(batch, positions, **kwargs)
        logits = self.head(hidden).float()
        logp = torch.log_softmax(logits, dim=-1)
        return logp if token_ids is None else logp[..., token_ids]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dtype={self.dtype})"


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``hidden[r, positions[r]]`` for [R] positions, or [R, K, d] for [R, K] positions."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if positions.dim() == 1:
        return hidden[rows, positions]
    return hidden[rows[:, None], positions]
