"""Prompt templates in AutoPrompt's syntax, parsed once into segments.

``{sentence} [T] [T] [T] [P] .`` mixes literal text, ``{field}`` slots filled from
the example, ``[T]`` trigger slots (one vocabulary token each, shared by every
example) and exactly one ``[P]`` predict slot.

Whitespace between segments belongs to the segment that follows it: a segment
preceded by whitespace is tokenised with a leading space, which is how byte-level
BPE vocabularies see ``" great"`` rather than ``"great"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, Union

from .errors import UserError

_TOKEN_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\[T\]|\[P\]")
_STRAY_RE = re.compile(r"\{[^}]*\}|\[[A-Z]\]")
# text that may follow [P] in a causal template and is simply not read
_TRAILING_OK = re.compile(r"^[\s.!?,;:'\"]*$")


@dataclass(frozen=True)
class Text:
    text: str  # without the leading whitespace, see ``space``
    space: bool = False


@dataclass(frozen=True)
class Field:
    name: str
    space: bool = False


@dataclass(frozen=True)
class Trigger:
    index: int  # 0-based position among the template's [T] slots
    space: bool = False


@dataclass(frozen=True)
class Predict:
    space: bool = False


Segment = Union[Text, Field, Trigger, Predict]


@dataclass(frozen=True)
class Template:
    """A parsed template. Build it with :meth:`parse`."""

    source: str
    segments: tuple[Segment, ...]

    @classmethod
    def parse(cls, source: str, fields: list[str] | None = None) -> Template:
        """Parse ``source``; with ``fields``, unknown ``{field}`` names are errors."""
        if not isinstance(source, str) or not source.strip():
            raise UserError("empty template: write e.g. '{sentence} It was [P] .'")
        segments: list[Segment] = []
        n_trig = 0

        def add_text(chunk: str) -> bool:
            """Add literal text; return whether whitespace ends the chunk."""
            stripped = chunk.lstrip()
            body = stripped.rstrip()
            if not body:
                return bool(chunk)
            _check_stray(body, source)
            segments.append(Text(body, space=len(stripped) != len(chunk) and bool(segments)))
            return len(body) != len(stripped)

        pos = 0
        for match in _TOKEN_RE.finditer(source):
            space = add_text(source[pos : match.start()]) and bool(segments)
            if match.group(1) is not None:
                segments.append(Field(match.group(1), space=space))
            elif match.group(0) == "[T]":
                segments.append(Trigger(n_trig, space=space))
                n_trig += 1
            else:
                segments.append(Predict(space=space))
            pos = match.end()
        add_text(source[pos:])
        template = cls(source, tuple(segments))
        template._validate(fields)
        return template

    def _validate(self, fields: list[str] | None) -> None:
        n_pred = sum(isinstance(s, Predict) for s in self.segments)
        if n_pred == 0:
            raise UserError(
                f"template {self.source!r} has no [P]: mark where the label word goes, "
                "e.g. '{sentence} It was [P] .'"
            )
        if n_pred > 1:
            raise UserError(f"template {self.source!r} has {n_pred} [P] slots; exactly one is allowed")
        if fields is not None:
            for name in self.field_names:
                if name not in fields:
                    raise UserError(
                        f"template {self.source!r} uses {{{name}}}, which is not a field of the "
                        f"task; fields: {', '.join('{' + f + '}' for f in fields)}"
                    )

    # --- views -----------------------------------------------------------------
    @property
    def num_triggers(self) -> int:
        return sum(isinstance(s, Trigger) for s in self.segments)

    @property
    def field_names(self) -> list[str]:
        return [s.name for s in self.segments if isinstance(s, Field)]

    @property
    def predict_index(self) -> int:
        return next(i for i, s in enumerate(self.segments) if isinstance(s, Predict))

    @property
    def text_after_predict(self) -> bool:
        """Whether text other than punctuation (or a field or trigger) follows [P]."""
        rest = self.segments[self.predict_index + 1 :]
        return any(not isinstance(s, Text) or not _TRAILING_OK.match(s.text) for s in rest)

    def for_causal(self) -> Template:
        """The template as a causal LM reads it.

        Punctuation after [P] (``"[P] ."``) is dropped, since a causal LM predicts the label
        from what comes before it (the published scores read the label word only). Any other
        text after [P] (``"[P] News: {text}"``) is kept: such templates are scored on the
        log-likelihood of the filled-in text from the label word on
        (:mod:`autoprompt_search.scoring.sequence`).
        """
        return self if self.text_after_predict else self.up_to_predict()

    def up_to_predict(self) -> Template:
        """The template cut after [P] (what a causal LM reads before the label word)."""
        return Template(self.source, self.segments[: self.predict_index + 1])

    def for_channel(self) -> tuple[Template, int]:
        """(the noisy-channel template, the index of its first scored segment).

        The input span -- from the first ``{field}`` to the last, with the text and [T] slots
        between them -- moves to the end and every other segment (text, [T], [P]) keeps its
        order before it: ``{sentence} It was [P] .`` becomes ``It was [P] . {sentence}``, and
        ``[P] News: {text}`` stays as it is. The channel score of a label word is the
        log-likelihood of the input span's tokens given everything before it (Min et al.,
        2022). A [P] between two input fields has no label-first reading and is an error.
        """
        fields = [i for i, s in enumerate(self.segments) if isinstance(s, Field)]
        if not fields:
            raise UserError(f"template {self.source!r} has no input field for channel scoring "
                            "to score")
        first, last = fields[0], fields[-1]
        if first < self.predict_index < last:
            raise UserError(
                f"template {self.source!r} has [P] between its input fields; channel scoring "
                "reads the label first and then the input, so the fields must stand together "
                "(e.g. '{premise} {hypothesis} Answer: [P]'), or use --scoring direct")
        rest = self.segments[:first] + self.segments[last + 1 :]
        span = self.segments[first : last + 1]
        lead = [replace(rest[0], space=False)] + list(rest[1:]) if rest else []
        tail = [replace(span[0], space=bool(rest))] + list(span[1:])
        return Template(self.source, tuple(lead + tail)), len(lead)

    def render(self, triggers: list[str] | None = None, label: str | None = None) -> str:
        """The template as text: fields stay ``{field}``; triggers and label filled if given.

        Trigger strings are decoded tokens and carry their own leading space where the
        vocabulary has one (``" great"``); the template's whitespace before a trigger
        is then not doubled.
        """
        out: list[str] = []
        for seg in self.segments:
            sep = " " if seg.space else ""
            if isinstance(seg, Text):
                out.append(sep + seg.text)
            elif isinstance(seg, Field):
                out.append(sep + "{" + seg.name + "}")
            elif isinstance(seg, Trigger):
                if triggers is None:
                    out.append(sep + "[T]")
                else:
                    tok = triggers[seg.index]
                    out.append(tok if tok[:1].isspace() or not out else sep + tok)
            else:
                out.append(sep + (label if label is not None else "[P]"))
        return "".join(out)

    def __str__(self) -> str:
        return self.source


def _check_stray(text: str, source: str) -> None:
    stray = _STRAY_RE.search(text)
    if stray:
        raise UserError(
            f"template {source!r}: {stray.group(0)!r} is not a slot; use {{field}}, [T] or [P] "
            "(field names are letters, digits and underscores)"
        )


Kind = Literal["masked", "causal"]
