"""The trigger-slot objective of the gradient search: the engine set up for one prompt design.

:class:`TriggerObjective` is the :class:`~autoprompt_search.scoring.engine.Scorer` of a
:class:`~autoprompt_search.scoring.scorer.PromptScorer`'s template with each example's tokens
before its first [T] cached (causal LMs): candidate trigger ids scored in large chunked passes
(:meth:`~Scorer.losses`, :meth:`~Scorer.class_scores`), the gradient w.r.t. the trigger
embeddings (:meth:`~Scorer.gradient`), and exact log-probabilities with vectors in the slots
(:meth:`~Scorer.vector_word_logprobs`) for soft prompts and PEZ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.data import Example
from ..core.errors import UserError
from .engine import EncodedBatch, PrefixMode, Scorer, is_out_of_memory
from .scorer import PromptScorer
from .targets import LabelWords

__all__ = ["EncodedBatch", "TriggerObjective", "is_out_of_memory"]


class TriggerObjective(Scorer):
    """Cross-entropy of the gold class for what fills the [T] slots of ``scorer``'s template.

    The classes are ``targets``: the scorer's label words by default, or an open-vocabulary
    task's candidate objects, one class each (:func:`autoprompt_search.scoring.targets.resolve_targets`).
    """

    def __init__(self, scorer: PromptScorer, forward_batch: int = 256,
                 use_prefix_cache: bool = True, forward_tokens: int = 1024,
                 targets: LabelWords | None = None) -> None:
        targets = targets if targets is not None else scorer.label_words
        if targets is None:
            raise UserError(f"'{scorer.task.name}' is an open-vocabulary task: pass its candidate "
                            "objects as targets (see search_targets)")
        if scorer.fewshot is not None:
            raise UserError("gradient search does not support few-shot demonstrations")
        super().__init__(scorer.backend, scorer.template, targets, forward_batch=forward_batch,
                         forward_tokens=forward_tokens,
                         prefix=PrefixMode.PER_EXAMPLE if use_prefix_cache else PrefixMode.NONE)
        self.scorer = scorer

    @torch.inference_mode()
    def naive_losses(self, examples: Sequence[Example], rows: torch.Tensor) -> torch.Tensor:
        """The same losses one candidate, one example and one label word at a time, full
        recompute and full-vocabulary logits at every position (as the original AutoPrompt
        code does); every class is a candidate (no ``columns``)."""
        gold = torch.tensor([ex.label for ex in examples])
        out = []
        for row in rows.tolist():
            classes = self.scorer.naive_class_logprobs(examples, row, self.targets)
            out.append(float(-torch.log_softmax(classes, -1).gather(1, gold[:, None]).mean()))
        return torch.tensor(out)
