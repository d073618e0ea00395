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

from ..core.context import ContextLimit, fit_to_context
from ..core.data import Example
from ..core.errors import UserError
from ..core.templates import Field, Kind, Predict, Template, Text, Trigger


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
    """Encodes prompts for one tokenizer; :class:`MaskedPromptEncoder` and
    :class:`CausalPromptEncoder` say where the label is read."""

    kind: Kind

    def __new__(cls, tokenizer, kind: Kind | None = None):
        """``PromptEncoder(tokenizer, kind)`` (the public constructor) gives that kind's encoder."""
        if cls is PromptEncoder:
            encoders = {c.kind: c for c in PromptEncoder.__subclasses__()}
            if kind not in encoders:
                raise ValueError(f"model kind must be one of {sorted(encoders)}, got {kind!r}")
            cls = encoders[kind]
        return super().__new__(cls)

    def __init__(self, tokenizer, kind: Kind | None = None) -> None:
        self.tokenizer = tokenizer
        self.prefix_special, self.suffix_special = _special_affixes(tokenizer)
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
        """The template as this model kind reads it."""
        return template

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
        ids = list(self.prefix_special) + self._fewshot_ids(template, triggers, fewshot, demo_labels)
        trig_pos: list[int] = []
        pred: list[int] = []
        query = self.prepare(template).segments
        ids += self._segments_of(query, example, triggers, None, trig_pos, pred, start=len(ids))
        ids += self.suffix_special
        self._check_predict(template, pred[0])
        encoded = EncodedPrompt(tuple(ids), tuple(trig_pos), pred[0])
        return fit_to_context(self, encoded, template, example, triggers, fewshot, demo_labels)

    def encode_filled(self, template: Template, example: Example, word_ids: Sequence[int],
                      triggers: Sequence[int] = (), fewshot: FewShot | None = None,
                      demo_labels: Sequence[str] = (), score_from: int = 0,
                      ) -> tuple[tuple[int, ...], int]:
        """(the ids of ``example`` in ``template`` with the ids ``word_ids`` at [P], after the
        few-shot framing; where the query's segment ``score_from`` starts in them).

        Every segment of ``template`` is written, text after [P] included (a causal LM's
        full-sequence and channel scoring, :mod:`autoprompt_search.scoring.sequence`).
        """
        ids = list(self.prefix_special) + self._fewshot_ids(template, triggers, fewshot, demo_labels)
        segs = template.segments
        word = tuple(int(t) for t in word_ids)
        head = self._segments_of(segs[:score_from], example, triggers, word, [], [], 0)
        tail = self._segments_of(segs[score_from:], example, triggers, word, [], [], 0)
        return tuple(ids + head + tail), len(ids) + len(head)

    def _fewshot_ids(self, template, triggers, fewshot, demo_labels) -> list[int]:
        """The instruction and the filled demonstrations, each followed by the separator."""
        ids: list[int] = []
        if fewshot is not None:
            if fewshot.instruction:
                ids += self.text_ids(fewshot.instruction, False) + self.text_ids(fewshot.separator, False)
            for demo in fewshot.demos:
                ids += self._segments(template, demo, triggers, demo_labels[demo.label], [], [])
                ids += self.text_ids(fewshot.separator, False)
        return ids

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
                if isinstance(label, tuple):  # a label word's token ids
                    out += label
                elif label is not None:  # a demonstration: the answer is written out
                    out += self.text_ids(label, seg.space)
                else:
                    self._predict_slot(out, start, pred)
        return out

    def _predict_slot(self, out: list[int], start: int, pred: list[int]) -> None:
        """Write the query's [P] into ``out`` and record the position its label is read at."""
        raise NotImplementedError

    def _check_predict(self, template: Template, predict_pos: int) -> None:
        """Raise a user error when the encoded prompt gives no position to read the label at."""

    def decode_trigger(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)


class MaskedPromptEncoder(PromptEncoder):
    """[P] becomes the tokenizer's mask token, read where it stands; closing special tokens follow."""

    kind = "masked"
    peft_task_type = "FEATURE_EXTRACTION"  # what a PEFT prompt-tuning adapter of this kind declares

    def __init__(self, tokenizer, kind: Kind | None = None) -> None:
        super().__init__(tokenizer)
        if tokenizer.mask_token_id is None:
            raise UserError("this masked LM's tokenizer has no mask token")

    def _predict_slot(self, out, start, pred) -> None:
        pred.append(start + len(out))
        out.append(self.tokenizer.mask_token_id)


class CausalPromptEncoder(PromptEncoder):
    """[P] ends the prompt: the label is the continuation of the token before it."""

    kind = "causal"
    peft_task_type = "CAUSAL_LM"

    def __init__(self, tokenizer, kind: Kind | None = None) -> None:
        super().__init__(tokenizer)
        self.suffix_special = ()  # nothing may follow the prompt: the label is the next token

    def prepare(self, template: Template) -> Template:
        return template.for_causal()  # checks the [P] placement

    def _predict_slot(self, out, start, pred) -> None:
        pred.append(start + len(out) - 1)

    def _check_predict(self, template: Template, predict_pos: int) -> None:
        if predict_pos < 0:
            raise UserError(
                f"template {template.source!r} gives the causal LM nothing to read before [P]"
            )


def _special_affixes(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special tokens the tokenizer puts around a text (e.g. [CLS] ... [SEP], or BOS)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            prefix, suffix = tuple(full[:i]), tuple(full[i + len(plain) :])
            break
    else:
        prefix, suffix = (), ()
    return prefix, suffix
