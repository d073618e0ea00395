"""Filling a template with an example's values as plain text (what ``export --fill`` and the
lm-eval export write), few-shot demonstrations included."""

from __future__ import annotations

from ..core.errors import UserError
from ..core.results import PromptResult
from ..core.templates import Field, Predict, Template, Text, Trigger


def fill_template(template: Template, values: dict[str, str], answer: str | None) -> str:
    """``template`` filled with ``values``; ``[P]`` becomes ``answer``, or the text ends there
    when ``answer`` is None (what a causal LM or a chat model continues from)."""
    out = ""
    for seg in template.segments:
        sep = " " if seg.space and out else ""
        if isinstance(seg, Text):
            out += sep + seg.text
        elif isinstance(seg, Field):
            out += sep + values[seg.name]
        elif isinstance(seg, Trigger):
            raise UserError("the prompt still has [T] slots; export the result's rendered prompt")
        elif isinstance(seg, Predict):
            if answer is None:
                return out
            out += sep + answer
    return out


def fewshot_text(res: PromptResult, template: Template, data_root) -> str:
    """The instruction and filled demonstrations a few-shot result puts before the query."""
    if not res.fewshot:
        return ""
    from ..scoring.specs import spec_from_result

    spec = spec_from_result(res, data_root)
    fs = spec.fewshot
    verbalizer = res.verbalizer or spec.task.verbalizer
    labels = spec.task.labels or []
    parts = [fs.instruction] if fs.instruction else []
    for demo in fs.demos:
        word = verbalizer[labels[demo.label]][0]
        parts.append(fill_template(template, demo.fields, word))
    return "".join(p + fs.separator for p in parts)
