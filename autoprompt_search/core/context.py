"""Inputs longer than the model's context: cut the example's text, or refuse them.

:func:`fit_to_context` is called on every encoded prompt. A prompt that does not fit
in the model's context (``max_position_embeddings``) either raises a
:class:`UserError` (``LongInputs.error``) or is encoded again with the example's
longest text field cut by as many tokens as it is over (``LongInputs.truncate``, the
default). :class:`ContextLimit` records how many tokens were cut from which example,
so a command can say so once at the end.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .data import Example
from .errors import UserError

if TYPE_CHECKING:
    from .templates import Template

logger = logging.getLogger(__name__)
UNLIMITED = 1_000_000  # tokenizers without a known limit report ~1e30


class LongInputs(str, enum.Enum):
    """What to do with an example longer than the model's context."""

    truncate = "truncate"
    error = "error"


@dataclass
class ContextLimit:
    """The model's context length, the policy for longer inputs, and what was cut."""

    max_length: int | None = None
    policy: LongInputs = LongInputs.truncate
    cut: dict[int, int] = field(default_factory=dict)  # example id -> tokens cut from its text

    def summary(self) -> str | None:
        """One sentence on the examples that were cut, or None."""
        if not self.cut:
            return None
        n, least, most = len(self.cut), min(self.cut.values()), max(self.cut.values())
        amount = f"{most} tokens" if least == most else f"{least} to {most} tokens"
        return (f"{n} example{'s' if n > 1 else ''} did not fit in the model's context of "
                f"{self.max_length} tokens; {'their' if n > 1 else 'its'} text was cut by {amount} "
                "(--long-inputs error refuses such examples instead)")


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The most tokens ``model`` reads: its position embeddings, or the tokenizer's limit."""
    config = getattr(model, "config", None)
    limits = [getattr(config, key, None) for key in ("max_position_embeddings", "n_positions")]
    limits.append(getattr(tokenizer, "model_max_length", None))
    known = [int(n) for n in limits if isinstance(n, int) and 0 < n < UNLIMITED]
    return min(known) if known else None


def fit_to_context(encoder: Any, encoded: Any, template: Template, example: Example,
                   triggers: Sequence[int], fewshot: Any, demo_labels: Sequence[str]) -> Any:
    """``encoded`` if it fits; else refuse, or encode ``example`` again with its text cut.

    ``encoder`` is the model's ``PromptEncoder`` (its ``context``, ``text_ids``, ``tokenizer``
    and ``encode``) and ``encoded`` the ``EncodedPrompt`` it made of ``example``.
    """
    limit = encoder.context
    if limit.max_length is None or len(encoded.ids) <= limit.max_length:
        return encoded
    over = len(encoded.ids) - limit.max_length
    if limit.policy == LongInputs.error:
        raise UserError(f"example {example.id + 1} is {len(encoded.ids)} tokens with the prompt, "
                        f"longer than the model's context of {limit.max_length} tokens; shorten it, "
                        "or pass --long-inputs truncate to cut its text")
    lengths = {name: len(encoder.text_ids(text, True)) for name, text in example.fields.items()}
    name = max(lengths, key=lengths.__getitem__)
    if lengths[name] == 0:
        raise UserError(f"the prompt is {len(encoded.ids)} tokens without the example's text, longer "
                        f"than the model's context of {limit.max_length} tokens; shorten the "
                        "template, instruction or demonstrations")
    keep = encoder.text_ids(example.fields[name], True)[: max(0, lengths[name] - over)]
    text = encoder.tokenizer.decode(list(keep), clean_up_tokenization_spaces=False).strip()
    shorter = dataclasses.replace(example, fields={**example.fields, name: text})
    fitted = encoder.encode(template, shorter, triggers, fewshot, demo_labels)
    cut = len(encoded.ids) - len(fitted.ids)
    if not limit.cut:
        logger.warning("example %d is longer than the model's context (%d tokens); its text is cut",
                       example.id + 1, limit.max_length)
    limit.cut[example.id] = max(limit.cut.get(example.id, 0), cut)
    return fitted
