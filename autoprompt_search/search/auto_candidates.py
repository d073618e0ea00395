"""Candidates of the ``auto`` search: where prompts come from, and the label words they are read with.

* **start** -- the task's human prompts (part ``human``) and a small generated pool (part
  ``generate``): generic answer cues (``Answer:``, ``Label:``, ``Category:``, ``The answer is``)
  after the input fields, and leading-space / punctuation / quotation variants of them and of the
  human prompts (:func:`generated_templates`);
* **edit** -- GrIPS-style phrase edits of a template (:func:`edit_template`): delete a phrase,
  swap two, insert one from the phrase pool, replace one by a pool phrase; the pool is the
  literal text of the task's human prompts, cut at sentence punctuation, and the cues
  (:func:`phrase_pool`). Slots (``{field}``, ``[P]``) are never edited;
* **demos** -- demonstrations drawn from the training split and ordered (:func:`propose_demos`):
  a new class-balanced set, or a parent's set reordered, with one example replaced, added or
  dropped.

Every candidate is read with many label words at once (:class:`WordTable`): the task's
verbalizer, the human prompts' verbalizers, the class names and their embedding neighbours
(:func:`~autoprompt_search.search.cached_labels.gather_candidates`); which of them make the
verbalizer is chosen afterwards, from the cached scores (:mod:`.auto_select`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UserError
from ..core.templates import Template, Text

CUES = ("Answer:", "Label:", "Category:", "The answer is")
MAX_PHRASE_WORDS = 6
_SLOT = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}|\[P\]|\[T\]")
_PIECES = re.compile(r"\s+|\S+")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


@dataclass
class Candidate:
    """One prompt the search scores: a template, its demonstrations (training-example ids, in
    order) and its own verbalizer (demonstrations are shown with its first word per class)."""

    id: int
    template: str
    verbalizer: dict[str, list[str]]
    part: str  # human, generate, edit, demos
    origin: str  # how it was made, in words
    parent: int | None = None
    demos: tuple[int, ...] = ()
    generation: int = 0
    rung: int = -1  # the highest rung it was scored on (-1: none yet)
    columns: list[int] = field(default_factory=list)  # word-table entries its matrix holds
    cv: dict[str, Any] | None = None  # its cross-validated scores at ``rung``
    failed: str | None = None  # why it cannot be scored (then it is left out)

    @property
    def score(self) -> float | None:
        return None if self.cv is None else self.cv["score"]

    @property
    def fitness(self) -> float | None:
        return None if self.cv is None else self.cv["fitness"]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["demos"] = list(self.demos)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(**{**data, "demos": tuple(data.get("demos", ()))})


@dataclass(frozen=True)
class Word:
    """A candidate label word of one class."""

    cls: int
    word: str
    source: str  # verbalizer, human, class-name, neighbour


@dataclass
class WordTable:
    """Every candidate label word of the search, by class."""

    words: list[Word] = field(default_factory=list)

    def add(self, cls: int, word: str, source: str) -> int:
        for i, w in enumerate(self.words):
            if w.cls == cls and w.word == word:
                return i
        self.words.append(Word(cls, word, source))
        return len(self.words) - 1

    def index(self, cls: int, word: str) -> int | None:
        return next((i for i, w in enumerate(self.words) if w.cls == cls and w.word == word), None)

    def to_json(self) -> list[list]:
        return [[w.cls, w.word, w.source] for w in self.words]

    @classmethod
    def from_json(cls, data: list[list]) -> WordTable:
        return cls([Word(int(c), str(w), str(s)) for c, w, s in data])


def word_table(backend, task, screen: bool, neighbours: int) -> tuple[WordTable, list[str]]:
    """(the table, notes on words left out): the task's verbalizer, the human prompts' words and,
    with ``screen``, the class names and their ``neighbours`` nearest tokens by embedding."""
    from ..core.tokens import allowed_token_mask
    from .cached_labels import gather_candidates

    table, labels = WordTable(), list(task.labels)
    for c, lab in enumerate(labels):
        for w in task.verbalizer[lab]:
            table.add(c, w, "verbalizer")
    for p in task.prompts:
        for c, lab in enumerate(labels):
            for w in (p.verbalizer or {}).get(lab, []):
                table.add(c, w, "human")
    notes: list[str] = []
    if screen:
        allowed = allowed_token_mask(backend.tokenizer, backend.vocab_size)
        words, notes = gather_candidates(backend, task, True, allowed, neighbours=neighbours)
        for w in words:
            table.add(w.cls, w.word, w.source)
    return table, notes


def usable_columns(backend, table: WordTable, labels: Sequence[str], space: bool) -> list[int]:
    """Table entries ``backend`` can score at a [P] with (or without) a space before it, class by
    class (the order a verbalizer of them scores its words in)."""
    cols = []
    for i, w in enumerate(table.words):
        try:
            ids = backend.encoder.label_ids(w.word, space)
            backend.check_label_word(w.word, labels[w.cls], ids)
        except UserError:
            continue
        cols.append(i)
    return sorted(cols, key=lambda i: table.words[i].cls)


def matrix_columns(cand: Candidate, table: WordTable, labels: Sequence[str]) -> list[int]:
    """The word-table entries of ``cand``'s matrix, in column order: class by class, the
    candidate's own words first (so a demonstration shows the verbalizer's first word)."""
    own = [table.index(c, w) for c, lab in enumerate(labels) for w in cand.verbalizer[lab]]
    cols = []
    for c in range(len(labels)):
        mine = [i for i in own if i is not None and table.words[i].cls == c]
        cols += mine + [i for i in cand.columns if table.words[i].cls == c and i not in mine]
    return cols


def wide_verbalizer(cols: Sequence[int], table: WordTable, labels: Sequence[str]) -> dict[str, list[str]]:
    """The verbalizer that scores every column (classes in task order, words in column order)."""
    out: dict[str, list[str]] = {lab: [] for lab in labels}
    for i in cols:
        out[labels[table.words[i].cls]].append(table.words[i].word)
    return out


# --- start ------------------------------------------------------------------------------
def fields_text(fields: Sequence[str]) -> str:
    return " ".join("{" + f + "}" for f in fields)


def generated_templates(fields: Sequence[str], humans: Sequence[str], limit: int) -> list[tuple[str, str]]:
    """(template, origin): generic cues after the input, those ending in ':' without a space
    before [P] (label words read without their leading space), the human prompts with the input
    quoted, without the space before a [P] that follows ':', without the punctuation after [P] --
    in that order, at most ``limit``, without repeats or human prompts."""
    inputs = fields_text(fields)
    out: list[tuple[str, str]] = []
    out += [(f"{inputs} {cue} [P]", f"cue {cue!r}") for cue in CUES]
    out += [(f"{inputs} {cue}[P]", f"cue {cue!r}, no space before [P]") for cue in CUES
            if cue.endswith(":")]
    out += [(v, f"quoted variant of {h!r}") for h in humans if (v := _quoted_variant(h))]
    out += [(v, f"{h!r} without the space before [P]") for h in humans
            if (v := re.sub(r":\s+\[P\]", ":[P]", h)) != h]
    out += [(v, f"{h!r} without punctuation after [P]") for h in humans
            if (v := _bare_variant(h)) != h]
    seen, kept = set(humans), []
    for template, origin in out:
        if template not in seen:
            seen.add(template)
            kept.append((template, origin))
    return kept[:limit]


def _bare_variant(template: str) -> str:
    """The template without the punctuation after [P]."""
    return re.sub(r"\[P\][\s.!?,;:'\"]+$", "[P]", template)


def _quoted_variant(template: str) -> str | None:
    """Every input field in double quotes (unless already quoted)."""
    out = re.sub(r'(?<!")(\{[A-Za-z_][A-Za-z0-9_]*\})(?!")', r'"\1"', template)
    return None if out == template else out


# --- edit -------------------------------------------------------------------------------
def phrase_pool(templates: Sequence[str], cues: Sequence[str] = CUES) -> list[str]:
    """Phrases to insert or substitute: each human template's literal text, whole and cut at
    sentence punctuation (with a letter, at most MAX_PHRASE_WORDS words), and the cues."""
    out: list[str] = []
    for t in templates:
        for seg in Template.parse(t).segments:
            if not isinstance(seg, Text):
                continue
            text = seg.text.strip().strip('"\'')
            for piece in [text, *_SENTENCE_END.split(text)]:
                piece = piece.strip()
                if re.search(r"[A-Za-z]", piece) and len(piece.split()) <= MAX_PHRASE_WORDS:
                    out.append(piece)
    out += list(cues)
    return list(dict.fromkeys(out))


def _free(piece: str) -> bool:
    return not piece.isspace() and not _SLOT.search(piece)


def edit_template(template: str, phrases: Sequence[str], rng: random.Random) -> tuple[str, str] | None:
    """One GrIPS-style edit of ``template`` (delete, swap, insert or replace a phrase), as
    (new template, what was done); None when the drawn edit does not apply."""
    pieces = _PIECES.findall(template)
    words = [i for i, p in enumerate(pieces) if not p.isspace()]
    free = [i for i in words if _free(pieces[i])]
    ops = ["insert"] + (["delete", "replace"] if free else []) + (["swap"] if len(free) > 1 else [])
    op = rng.choice(ops)
    if op == "insert":
        phrase = rng.choice(list(phrases))
        at = rng.choice(words + [len(pieces)])
        new = pieces[:at] + [phrase, " "] + pieces[at:] if at < len(pieces) else pieces + [" ", phrase]
        what = f"insert {phrase!r}"
    elif op == "swap":
        a, b = rng.sample(free, 2)
        new = list(pieces)
        new[a], new[b] = new[b], new[a]
        what = f"swap {pieces[a]!r} and {pieces[b]!r}"
    else:
        start = rng.randrange(len(free))
        span = [free[start]]
        if rng.random() < 0.5 and start + 1 < len(free) and free[start + 1] == free[start] + 2:
            span.append(free[start + 1])  # two adjacent free words
        old = "".join(pieces[span[0]:span[-1] + 1])
        if op == "delete":
            new = pieces[:span[0]] + pieces[span[-1] + 1:]
            what = f"delete {old!r}"
        else:
            phrase = rng.choice([p for p in phrases if p != old] or list(phrases))
            new = pieces[:span[0]] + [phrase] + pieces[span[-1] + 1:]
            what = f"replace {old!r} with {phrase!r}"
    text = _tidy("".join(new))
    return None if text == template or not text else (text, what)


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n+", "\n", text).strip()


# --- demos ------------------------------------------------------------------------------
def propose_demos(parent: tuple[int, ...], by_class: dict[int, list[int]], max_demos: int,
                  rng: random.Random) -> tuple[tuple[int, ...], str] | None:
    """New demonstrations (training-example ids, in order) from a parent's, and what was done:
    a class-balanced new set (parent without any), else reorder / replace / add / drop one."""
    label_of = {i: c for c, ids in by_class.items() for i in ids}
    classes = sorted(c for c, ids in by_class.items() if ids)
    if not classes or max_demos < 1:
        return None
    if not parent:
        shots = rng.randint(1, max_demos)
        order = rng.sample(classes, len(classes))
        demos: list[int] = []
        for j in range(shots):
            pool = [i for i in by_class[order[j % len(order)]] if i not in demos]
            if pool:
                demos.append(rng.choice(pool))
        return (tuple(demos), f"{len(demos)} new demonstrations") if demos else None
    ops = (["reorder"] if len(parent) > 1 else []) + ["replace"] + \
        (["add"] if len(parent) < max_demos else []) + (["drop"] if len(parent) > 1 else [])
    op = rng.choice(ops)
    demos = list(parent)
    if op == "reorder":
        while demos == list(parent):
            rng.shuffle(demos)
        return tuple(demos), "demonstrations reordered"
    if op == "drop":
        j = rng.randrange(len(demos))
        return tuple(demos[:j] + demos[j + 1:]), f"demonstration {j + 1} dropped"
    if op == "add":
        have = {label_of[i] for i in demos}
        missing = [c for c in classes if c not in have] or classes
        pool = [i for i in by_class[rng.choice(missing)] if i not in demos]
        if not pool:
            return None
        demos.insert(rng.randint(0, len(demos)), rng.choice(pool))
        return tuple(demos), "a demonstration added"
    j = rng.randrange(len(demos))
    pool = [i for i in by_class[label_of[demos[j]]] if i not in demos]
    if not pool:
        return None
    demos[j] = rng.choice(pool)
    return tuple(demos), f"demonstration {j + 1} replaced"
