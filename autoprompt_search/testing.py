"""Tiny models and tokenizers built in code, in milliseconds, for tests and examples.

Like transformers' own model testers: vocabulary ~100-300, hidden size 32, two
layers. No download, no network. The tokenizers are real ``tokenizers`` objects
(byte-level BPE with leading-space tokens, and WordPiece with [MASK]).
"""

from __future__ import annotations

import torch

CORPUS = (
    "the movie was great . it was terrible . a good film , a bad film . "
    "news about sports and business and world and tech . the answer is a number . "
    "it was fine and okay , not great , not bad . what a wonderful story . "
    "the team won the game . the market fell today . new phone released ."
).split()


def tiny_causal_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer (GPT-2 style, leading-space tokens) trained in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = " ".join(CORPUS)
    tok.train_from_iterator([text, text.title()] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_masked_tokenizer():
    """A WordPiece tokenizer with [CLS]/[SEP]/[MASK] over a small word list."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(set(CORPUS) | {"##s", "##ing", "##ed", "terri", "##ble"})
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_causal_lm(seed: int = 0, vocab_size: int = 512):
    """(model, tokenizer): a 2-layer Llama with hidden size 32 and random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_causal_tokenizer(vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG is left as it was
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval(), tokenizer


def tiny_masked_lm(seed: int = 0):
    """(model, tokenizer): a 2-layer BERT with hidden size 32 and random weights."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = tiny_masked_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG is left as it was
        torch.manual_seed(seed)
        return BertForMaskedLM(config).eval(), tokenizer
