"""Pure token functions for trigger search: filters, HotFlip/GCG candidates, re-tokenisation.

Stable API (other modules and strategies build on these signatures):

``allowed_token_mask(tokenizer, vocab_size, *, exclude_ids=(), special=True,
whole_words=True, ascii_only=True, deny=()) -> torch.BoolTensor[V]``
    True where a token may be used as a trigger. ``vocab_size`` is the model's
    embedding rows (ids at or above ``len(tokenizer)`` are padding rows: never
    allowed). ``deny`` holds ids (int) or words (str, matched case-insensitively
    against the token's text without its leading space).

``token_texts(tokenizer) -> list[str]``
    The decoded text of every token id (cached per tokenizer).

``hotflip_scores(grad, embeddings) -> Tensor[P, V]``
    First-order estimate of the loss *decrease* for putting token w at trigger
    position j: ``-(e_w . g_j)`` (HotFlip; AutoPrompt).

``top_candidates(grad, embeddings, k, allowed=None) -> LongTensor[P, k]``
    The k best tokens per position by :func:`hotflip_scores`, best first, among
    the allowed ones.

``single_position_candidates(current, candidates, position) -> LongTensor[k, P]``
    AutoPrompt's step: copies of ``current`` with ``position`` replaced by each of
    its candidates.

``gcg_candidates(current, candidates, n, generator) -> LongTensor[n, P]``
    GCG's step: each row replaces one position (spread evenly over the positions,
    in random order) with a random one of that position's top-k tokens.

``render_prompt(tokenizer, template, trigger_ids) -> str``
    The template with the triggers written in as text, as they were scored.

``retokenizes(tokenizer, template, trigger_ids) -> bool`` and
``retokenize_mask(tokenizer, template, rows) -> BoolTensor[N]``
    Whether the template's text around the triggers, rendered with the decoded
    trigger tokens (:func:`render_prompt`), tokenises back to exactly the ids that were scored (so the
    exported text prompt is the prompt that was scored).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

import torch

from .templates import Predict, Template, Text, Trigger

_TEXT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SPACE_MARKERS = ("Ġ", "▁")


def token_texts(tokenizer) -> list[str]:
    """Decoded text of every token id of ``tokenizer`` (cached)."""
    try:
        cached = _TEXT_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    try:
        _TEXT_CACHE[tokenizer] = texts
    except TypeError:
        pass
    return texts


def _word_scheme(pieces: Sequence[str]) -> str:
    """How the vocabulary marks word boundaries: 'space' (BPE / SentencePiece) or 'wordpiece'."""
    if any(p.startswith(_SPACE_MARKERS) for p in pieces if p):
        return "space"
    if any(p.startswith("##") for p in pieces if p):
        return "wordpiece"
    return "plain"


def special_token_ids(tokenizer) -> set[int]:
    """Special and added tokens (``<|endoftext|>``, ``[MASK]``, chat markers, ...)."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids |= {int(i) for i in added}
    return ids


def allowed_token_mask(
    tokenizer,
    vocab_size: int,
    *,
    exclude_ids: Iterable[int] = (),
    special: bool = True,
    whole_words: bool = True,
    ascii_only: bool = True,
    deny: Iterable[int | str] = (),
) -> torch.Tensor:
    """``[V]`` booleans: True where a token may be used as a trigger.

    Always excluded: ids the tokenizer does not have (embedding padding rows) and
    tokens that decode to nothing. ``special`` excludes special/added tokens;
    ``whole_words`` keeps only tokens that start a word and are made of letters
    (for BPE/SentencePiece vocabularies: a leading-space token such as ``" great"``;
    for WordPiece: no ``##`` continuation); ``ascii_only`` drops tokens whose text
    is not printable ASCII; ``exclude_ids`` (e.g. label words) and ``deny`` are
    removed as given.
    """
    n = min(len(tokenizer), int(vocab_size))
    mask = torch.zeros(int(vocab_size), dtype=torch.bool)
    texts = token_texts(tokenizer)[:n]
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    scheme = _word_scheme(pieces)
    for i, (text, piece) in enumerate(zip(texts, pieces)):
        if not text.strip():
            continue
        if ascii_only and not (text.isascii() and text.isprintable()):
            continue
        if whole_words:
            body = text[1:] if text[:1] == " " else text
            if not body.isalpha():
                continue
            if scheme == "space" and text[:1] != " ":
                continue
            if scheme == "wordpiece" and (piece or "").startswith("##"):
                continue
        mask[i] = True
    if special:
        for i in special_token_ids(tokenizer):
            if 0 <= i < vocab_size:
                mask[i] = False
    for i in exclude_ids:
        if 0 <= int(i) < vocab_size:
            mask[int(i)] = False
    words = {d.strip().lower() for d in deny if isinstance(d, str)}
    for d in deny:
        if not isinstance(d, str) and 0 <= int(d) < vocab_size:
            mask[int(d)] = False
    if words:
        for i, text in enumerate(texts):
            if text.strip().lower() in words:
                mask[i] = False
    return mask


# --- candidate ranking ---------------------------------------------------------------


def hotflip_scores(grad: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """``[P, d]`` gradients, ``[V, d]`` embeddings -> ``[P, V]`` estimated loss decrease."""
    return -(grad.float() @ embeddings.float().T)


def top_candidates(grad: torch.Tensor, embeddings: torch.Tensor, k: int,
                   allowed: torch.Tensor | None = None) -> torch.Tensor:
    """``[P, k]`` token ids per trigger position, best first (ties: lower id first)."""
    scores = hotflip_scores(grad, embeddings)
    if allowed is not None:
        scores = scores.masked_fill(~allowed.to(scores.device)[None, :], -torch.inf)
        k = min(k, int(allowed.sum()))
    if k <= 0:
        raise ValueError("no allowed candidate tokens")
    # stable descending sort, so equal scores give the same order on every run
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[:, :k]


def single_position_candidates(current: torch.Tensor, candidates: torch.Tensor,
                               position: int) -> torch.Tensor:
    """``[k, P]``: ``current`` with ``position`` replaced by each of its k candidates (on the CPU)."""
    current, candidates = current.cpu(), candidates.cpu()
    rows = current.reshape(1, -1).repeat(candidates.shape[1], 1)
    rows[:, position] = candidates[position]
    return rows


def gcg_candidates(current: torch.Tensor, candidates: torch.Tensor, n: int,
                   generator: torch.Generator) -> torch.Tensor:
    """``[n, P]`` GCG candidates: each row swaps one position for one of its top-k tokens.

    Positions are spread evenly over the rows (each position gets ``n / P`` rows,
    in a random order), tokens are drawn uniformly from that position's top-k.
    The rows are built on the CPU (``generator`` is a CPU generator) whatever device
    ``current`` and ``candidates`` are on.
    """
    current, candidates = current.cpu(), candidates.cpu()
    num_pos, k = candidates.shape
    positions = torch.arange(n) % num_pos
    positions = positions[torch.randperm(n, generator=generator)]
    picks = torch.randint(0, k, (n,), generator=generator)
    rows = current.reshape(1, -1).repeat(n, 1)
    rows[torch.arange(n), positions] = candidates[positions, picks]
    return rows


def unique_changed(rows: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Drop duplicate rows and rows equal to ``current``, keeping the first occurrence."""
    seen: set[tuple[int, ...]] = {tuple(current.tolist())}
    keep = []
    for i, row in enumerate(rows.tolist()):
        key = tuple(row)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return rows[torch.tensor(keep, dtype=torch.long)] if keep else rows[:0]


# --- re-tokenisation -----------------------------------------------------------------


def _trigger_runs(template: Template):
    """Maximal runs of consecutive Text/Trigger segments that contain a trigger."""
    run: list = []
    for seg in template.segments + (Predict(),):
        if isinstance(seg, (Text, Trigger)):
            run.append(seg)
            continue
        if any(isinstance(s, Trigger) for s in run):
            yield run
        run = []


def _text_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


_GLUE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _glues(tokenizer) -> bool:
    """Whether tokens carry their own leading space (BPE / SentencePiece): a trigger
    without one is written right after the text before it."""
    try:
        return _GLUE_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    glue = _word_scheme(pieces) == "space"
    try:
        _GLUE_CACHE[tokenizer] = glue
    except TypeError:
        pass
    return glue


def _trigger_text(tok: str, seg: Trigger, at_start: bool, glue: bool) -> str:
    if tok[:1].isspace() or at_start or glue:
        return tok
    return (" " if seg.space else "") + tok


def render_prompt(tokenizer, template: Template, trigger_ids: Sequence[int]) -> str:
    """The template with the trigger tokens written in as text, exactly as they were scored.

    With a BPE / SentencePiece vocabulary a token without a leading space is glued to
    the text before it (``" Topic" ":"`` -> ``"Topic:"``); WordPiece tokens get the
    template's space.
    """
    texts = token_texts(tokenizer)
    glue = _glues(tokenizer)
    parts = []
    for seg in template.segments:
        sep = " " if seg.space else ""
        if isinstance(seg, Text):
            parts.append(sep + seg.text)
        elif isinstance(seg, Trigger):
            parts.append(_trigger_text(texts[int(trigger_ids[seg.index])], seg,
                                       seg is template.segments[0], glue))
        elif isinstance(seg, Predict):
            parts.append(sep + "[P]")
        else:
            parts.append(sep + "{" + seg.name + "}")
    return "".join(parts)


def retokenizes(tokenizer, template: Template, trigger_ids: Sequence[int]) -> bool:
    """Whether the rendered trigger text tokenises back to exactly ``trigger_ids``.

    Each run of literal text and triggers between fields / the predict slot is
    rendered as :meth:`Template.render` writes it and tokenised as one string; it
    must give the ids the encoder put there (the text's own ids plus the trigger ids).
    """
    trigger_ids = [int(t) for t in trigger_ids]
    texts = token_texts(tokenizer)
    glue = _glues(tokenizer)
    first_segment = template.segments[0] if template.segments else None
    for run in _trigger_runs(template):
        pieces: list[str] = []
        expected: list[int] = []
        for seg in run:
            sep = " " if seg.space else ""
            if isinstance(seg, Text):
                pieces.append(sep + seg.text)
                expected += _text_ids(tokenizer, sep + seg.text)
            else:
                tid = trigger_ids[seg.index]
                tok = texts[tid] if tid < len(texts) else ""
                pieces.append(_trigger_text(tok, seg, seg is first_segment, glue))
                expected.append(tid)
        if _text_ids(tokenizer, "".join(pieces)) != expected:
            return False
    return True


def retokenize_mask(tokenizer, template: Template, rows: torch.Tensor) -> torch.Tensor:
    """``[N]`` booleans: :func:`retokenizes` for each row of trigger ids ``[N, P]``."""
    return torch.tensor([retokenizes(tokenizer, template, row) for row in rows.tolist()],
                        dtype=torch.bool)
