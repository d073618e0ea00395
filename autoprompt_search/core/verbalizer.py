"""The verbalizer: which label words stand for each class.

One type, parsed once, wherever label words come from: a task file's ``verbalizer:``
mapping, a prompt's own verbalizer, a search space's named verbalizer sets, or
``--label-words CLASS=word,word`` on the command line.

A :class:`Verbalizer` is a ``dict`` of class name -> list of label words. What tasks, prompts
and spaces keep is its :meth:`~Verbalizer.to_dict` (a plain ``dict``, so ``task.verbalizer``
goes into JSON and ``yaml.safe_dump`` as it is); wrap one in ``Verbalizer(...)`` to check it
again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import UserError, did_you_mean


class Verbalizer(dict[str, list[str]]):
    """Class name -> label words (at least one non-empty word per class).

    Build it with :meth:`parse` (a YAML mapping) or :meth:`from_args` (``CLASS=word,word``
    strings); both check the words and, given the task's labels, that every label has
    words and no other key appears.
    """

    @classmethod
    def parse(cls, raw: Any, labels: Sequence[str] | None = None,
              where: str = "<memory>") -> Verbalizer:
        """A mapping ``{label: word | [words]}`` (as read from YAML or JSON), checked."""
        if isinstance(raw, Verbalizer) and labels is None:
            return raw
        if not isinstance(raw, dict) or not raw:
            raise UserError(f"{where}: the verbalizer must map each label to one or more label "
                            "words, e.g. {negative: [bad], positive: [good]}")
        words: dict[str, list[str]] = {}
        for label, ws in raw.items():
            ws = [ws] if isinstance(ws, str) else ws
            if (not isinstance(ws, (list, tuple)) or not ws
                    or not all(isinstance(w, str) and w.strip() for w in ws)):
                raise UserError(f"{where}: verbalizer label '{label}' needs at least one label "
                                f"word (text), got {ws!r}")
            words[str(label)] = [w.strip() for w in ws]
        verbalizer = cls(words)
        if labels is not None:
            verbalizer.check_labels(labels, where)
        return verbalizer

    @classmethod
    def from_args(cls, items: Iterable[str], labels: Sequence[str] | None = None,
                  where: str = "--label-words") -> Verbalizer | None:
        """``["negative=bad,awful", "positive=good"]`` (one class per item); None if empty."""
        items = list(items or [])
        if not items:
            return None
        words: dict[str, list[str]] = {}
        for item in items:
            label, sep, rest = item.partition("=")
            label = label.strip()
            if not sep or not label:
                raise UserError(f"{where} {item!r}: write CLASS=word[,word...]")
            if label in words:
                raise UserError(f"{where}: class '{label}' is given twice; list all its words "
                                f"in one {label}=word,word")
            ws = [w.strip() for w in rest.split(",") if w.strip()]
            if not ws:
                raise UserError(f"{where} {item!r}: no label word after '='")
            words[label] = ws
        return cls.parse(words, labels, where)

    def check_labels(self, labels: Sequence[str], where: str = "<memory>") -> None:
        """Every key is one of ``labels`` and every label has words."""
        labels = [str(x) for x in labels]
        for key in self:
            if key not in labels:
                raise UserError(f"{where}: verbalizer label '{key}'{did_you_mean(key, labels)} is "
                                f"not one of the task's labels ({', '.join(labels)})")
        missing = [lab for lab in labels if lab not in self]
        if missing:
            raise UserError(f"{where}: verbalizer has no label word for {', '.join(missing)}")

    def to_dict(self) -> dict[str, list[str]]:
        """A plain ``{label: [words]}`` copy (what JSON holds; :meth:`parse` reads it back)."""
        return {label: list(words) for label, words in self.items()}
