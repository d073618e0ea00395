"""Token filters, HotFlip/GCG candidate ranking and the re-tokenisation check."""

from __future__ import annotations

import pytest
import torch

from autoprompt_search.core.templates import Template
from autoprompt_search.core.tokens import (
    allowed_token_mask,
    gcg_candidates,
    hotflip_scores,
    render_prompt,
    retokenize_mask,
    retokenizes,
    single_position_candidates,
    token_texts,
    top_candidates,
    unique_changed,
)
from autoprompt_search.testing import tiny_causal_tokenizer, tiny_masked_tokenizer


@pytest.fixture(scope="module")
def bpe():
    return tiny_causal_tokenizer()


@pytest.fixture(scope="module")
def wordpiece():
    return tiny_masked_tokenizer()


def _id(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


# --- filters -----------------------------------------------------------------------


def test_mask_excludes_specials_pieces_and_padding_rows_bpe(bpe):
    mask = allowed_token_mask(bpe, len(bpe) + 5)
    assert mask.shape == (len(bpe) + 5,) and mask.dtype == torch.bool
    assert not mask[len(bpe):].any()  # embedding rows beyond the tokenizer
    assert not mask[bpe.eos_token_id]
    assert mask[_id(bpe, " the")]  # a whole word with its leading space
    assert not mask[_id(bpe, "the")]  # same letters without the space: a word piece
    assert not mask[_id(bpe, ".")]  # punctuation is not a word
    texts = token_texts(bpe)
    assert all(texts[i].startswith(" ") and texts[i][1:].isalpha()
               for i in mask.nonzero()[:, 0].tolist())


def test_mask_wordpiece_drops_continuations(wordpiece):
    mask = allowed_token_mask(wordpiece, len(wordpiece))
    vocab = wordpiece.get_vocab()
    assert mask[vocab["great"]]
    assert not mask[vocab["##ble"]]
    assert not mask[vocab["[MASK]"]] and not mask[vocab["[CLS]"]]
    relaxed = allowed_token_mask(wordpiece, len(wordpiece), whole_words=False)
    assert relaxed[vocab["##ble"]] and relaxed[vocab[","]]
    assert not relaxed[vocab["[MASK]"]]
    keep_specials = allowed_token_mask(wordpiece, len(wordpiece), whole_words=False,
                                       special=False)
    assert keep_specials[vocab["[MASK]"]]


def test_mask_exclude_ids_and_deny_words(wordpiece):
    vocab = wordpiece.get_vocab()
    mask = allowed_token_mask(wordpiece, len(wordpiece), exclude_ids=[vocab["great"]],
                              deny=["Terrible", vocab["film"]])
    assert not mask[vocab["great"]]
    assert not mask[vocab["terrible"]]  # case-insensitive word match
    assert not mask[vocab["film"]]
    assert mask[vocab["movie"]]


def test_ascii_only(bpe):
    # byte-level BPE has tokens for single non-ASCII bytes; they decode to U+FFFD
    texts = token_texts(bpe)
    non_ascii = [i for i, t in enumerate(texts) if t.strip() and not t.isascii()]
    assert non_ascii
    loose = allowed_token_mask(bpe, len(bpe), whole_words=False, ascii_only=False)
    strict = allowed_token_mask(bpe, len(bpe), whole_words=False, ascii_only=True)
    assert loose[non_ascii].any() and not strict[non_ascii].any()


# --- candidate ranking --------------------------------------------------------------


def test_hotflip_scores_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]])
    grad = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    # -(e_w . g_j)
    expected = torch.tensor([[-1.0, 0.0, 1.0, -1.0], [0.0, 2.0, 0.0, 2.0]])
    assert torch.equal(hotflip_scores(grad, emb), expected)


def test_top_candidates_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [2.0, 2.0], [0.0, -1.0]])
    grad = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    # position 0 scores: [-1, 0, 1, -2, 0] -> best 2, then 1 and 4 tie (lower id first)
    # position 1 scores: [0, 1, 0, 2, -1]  -> best 3, then 1
    top = top_candidates(grad, emb, k=3)
    assert top.tolist() == [[2, 1, 4], [3, 1, 0]]
    allowed = torch.tensor([True, True, False, True, True])
    assert top_candidates(grad, emb, k=2, allowed=allowed).tolist() == [[1, 4], [3, 1]]
    only_one = torch.tensor([False, False, False, False, True])
    assert top_candidates(grad, emb, k=3, allowed=only_one).tolist() == [[4], [4]]


def test_single_position_candidates():
    current = torch.tensor([7, 8, 9])
    cands = torch.tensor([[1, 2], [3, 4], [5, 6]])
    rows = single_position_candidates(current, cands, 1)
    assert rows.tolist() == [[7, 3, 9], [7, 4, 9]]
    assert current.tolist() == [7, 8, 9]  # not mutated


def test_gcg_candidates_change_one_position_from_topk():
    current = torch.tensor([10, 11, 12])
    cands = torch.tensor([[1, 2], [3, 4], [5, 6]])
    rows = gcg_candidates(current, cands, 12, torch.Generator().manual_seed(0))
    assert rows.shape == (12, 3)
    changed = rows != current
    assert (changed.sum(1) == 1).all()
    pos = changed.float().argmax(1)
    assert torch.bincount(pos, minlength=3).tolist() == [4, 4, 4]  # spread evenly
    for row, p in zip(rows.tolist(), pos.tolist()):
        assert row[p] in cands[p].tolist()
    again = gcg_candidates(current, cands, 12, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)


def test_unique_changed():
    current = torch.tensor([1, 2])
    rows = torch.tensor([[1, 2], [3, 2], [3, 2], [1, 4]])
    assert unique_changed(rows, current).tolist() == [[3, 2], [1, 4]]
    assert unique_changed(rows[:1], current).shape == (0, 2)


# --- re-tokenisation ----------------------------------------------------------------


def test_retokenizes_bpe(bpe):
    tpl = Template.parse("{sentence} [T] [T] it was [P] .")
    ok = [_id(bpe, " the"), _id(bpe, " movie")]
    assert retokenizes(bpe, tpl, ok)
    # "the" without a leading space is written glued to the sentence, as it was scored
    glued = [_id(bpe, "the"), _id(bpe, " movie")]
    assert render_prompt(bpe, tpl, glued) == "{sentence}the movie it was [P] ."
    assert retokenizes(bpe, tpl, glued)
    # " t" followed by "he" renders as " the", which tokenises to a different id
    assert not retokenizes(bpe, tpl, [_id(bpe, " t"), _id(bpe, "he")])
    rows = torch.tensor([ok, [_id(bpe, " t"), _id(bpe, "he")]])
    assert retokenize_mask(bpe, tpl, rows).tolist() == [True, False]


def test_retokenizes_wordpiece(wordpiece):
    vocab = wordpiece.get_vocab()
    tpl = Template.parse("{sentence} [T] [T] [P] .")
    assert retokenizes(wordpiece, tpl, [vocab["great"], vocab["film"]])
    # "terri" + "##ble" is written "terrible", which is a different token
    assert not retokenizes(wordpiece, tpl, [vocab["terri"], vocab["##ble"]])


def test_render_prompt_writes_what_was_scored(bpe, wordpiece):
    tpl = Template.parse("{sentence} [T] [T] [P] .")
    # BPE: a token without a leading space is glued to the text before it
    ids = [_id(bpe, " was"), _id(bpe, ".")]
    assert render_prompt(bpe, tpl, ids) == "{sentence} was. [P] ."
    assert retokenizes(bpe, tpl, ids)
    vocab = wordpiece.get_vocab()
    assert render_prompt(wordpiece, tpl, [vocab["great"], vocab["film"]]) == \
        "{sentence} great film [P] ."
