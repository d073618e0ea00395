"""Turn (template, example, trigger ids, demonstrations) into token ids.

Each segment of the parsed template is tokenised on its own and the ids are
concatenated, so the positions of the trigger slots and the predict slot are
known exactly (no search for placeholder strings in the filled text). Literal
text is tokenised once and cached. Whitespace before a segment is tokenised with
it, which gives BPE vocabularies the leading-space tokens (``" great"``) they use
inside a sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..core.data import Example
from ..core.errors import UserError
from ..core.templates import Field, Kind, Predict, Template, Text, Trigger
from ..core.context import ContextLimit, fit_to_context


@dataclass(frozen=True)
class EncodedPrompt:
    """One filled prompt as token ids.

    ``predict_pos`` is where the label is read: the ``[MASK]`` position for a masked
    LM; for a causal LM the last token before the label (its output predicts the
    label's first token). ``trigger_pos`` lists the positions of the ``[T]`` slots.
    """

    ids: tuple[int, ...]
    trigger_pos: tuple[int, ...]
    predict_pos: int

    @property
    def prefix_len(self) -> int:
        """Tokens before the first trigger (they do not change during a trigger search)."""
        return self.trigger_pos[0] if self.trigger_pos else self.predict_pos


@dataclass(frozen=True)
class FewShot:
    """Zero-, one- or few-shot framing: instruction, then filled demonstrations, then the query."""

    instruction: str = ""
    demos: tuple[Example, ...] = ()
    separator: str = "\n"


class PromptEncoder:
    """Encodes prompts for one tokenizer and one model kind (masked or causal)."""

    def __init__(self, tokenizer, kind: Kind) -> None:
        self.tokenizer = tokenizer
        self.kind = kind
        self.prefix_special, self.suffix_special = _special_affixes(tokenizer, kind)
        if kind == "masked" and tokenizer.mask_token_id is None:
            raise UserError("this masked LM's tokenizer has no mask token")
        self._tok = lru_cache(maxsize=65536)(self._tokenize)
        self.context = ContextLimit()  # the model's length limit, set by the backend

    def _tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_ids(self, text: str, space: bool) -> tuple[int, ...]:
        return self._tok((" " + text) if space else text)

    def label_ids(self, word: str, space: bool) -> tuple[int, ...]:
        """Token ids of a label word as it appears at a [P] with (or without) a space before it."""
        ids = self.text_ids(word, space)
        if not ids:
            raise UserError(f"label word {word!r} tokenises to nothing")
        return ids

    def prepare(self, template: Template) -> Template:
        """The template as this model kind reads it (checks causal [P] placement)."""
        return template.for_causal() if self.kind == "causal" else template

    def encode(
        self,
        template: Template,
        example: Example,
        triggers: Sequence[int] = (),
        fewshot: FewShot | None = None,
        demo_labels: Sequence[str] = (),
    ) -> EncodedPrompt:
        """Encode ``example`` with ``template`` (already :meth:`prepare`-d)."""
        if len(triggers) != template.num_triggers:
            raise ValueError(f"template has {template.num_triggers} [T] slots, got {len(triggers)} ids")
        ids: list[int] = list(self.prefix_special)
        if fewshot is not None:
            if fewshot.instruction:
                ids += self.text_ids(fewshot.instruction, False) + self.text_ids(fewshot.separator, False)
            for demo in fewshot.demos:
                ids += self._segments(template, demo, triggers, demo_labels[demo.label], [], [])
                ids += self.text_ids(fewshot.separator, False)
        trig_pos: list[int] = []
        pred: list[int] = []
        query = template.segments if self.kind == "masked" else self.prepare(template).segments
        ids += self._segments_of(query, example, triggers, None, trig_pos, pred, start=len(ids))
        if self.kind == "masked":
            ids += self.suffix_special
        if self.kind == "causal" and pred[0] < 0:
            raise UserError(
                f"template {template.source!r} gives the causal LM nothing to read before [P]"
            )
        encoded = EncodedPrompt(tuple(ids), tuple(trig_pos), pred[0])
        return fit_to_context(self, encoded, template, example, triggers, fewshot, demo_labels)

    def _segments(self, template, example, triggers, label, trig_pos, pred):
        return self._segments_of(template.segments, example, triggers, label, trig_pos, pred, 0)

    def _segments_of(self, segments, example, triggers, label, trig_pos, pred, start) -> list[int]:
        out: list[int] = []
        for seg in segments:
            if isinstance(seg, Text):
                out += self.text_ids(seg.text, seg.space)
            elif isinstance(seg, Field):
                out += self.text_ids(example.fields[seg.name], seg.space)
            elif isinstance(seg, Trigger):
                trig_pos.append(start + len(out))
                out.append(int(triggers[seg.index]))
            elif isinstance(seg, Predict):
                if label is not None:  # a demonstration: the answer is written out
                    out += self.text_ids(label, seg.space)
                elif self.kind == "masked":
                    pred.append(start + len(out))
                    out.append(self.tokenizer.mask_token_id)
                else:
                    pred.append(start + len(out) - 1)
        return out

    def decode_trigger(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)


def _special_affixes(tokenizer, kind: Kind) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special tokens the tokenizer puts around a text (e.g. [CLS] ... [SEP], or BOS)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            prefix, suffix = tuple(full[:i]), tuple(full[i + len(plain) :])
            break
    else:
        prefix, suffix = (), ()
    if kind == "causal":
        suffix = ()  # nothing may follow the prompt: the label is the next token
    return prefix, suffix
