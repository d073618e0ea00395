"""Gradient-search benchmark: candidate x example scorings per second, naive vs ours, same run.

naive (as the original AutoPrompt code): one candidate at a time; each candidate is
       a full forward pass over the padded batch of examples (examples in data order),
       full-vocabulary logits at every position; the gradient step back-propagates
       through the whole model with its weights requiring gradients.
ours:  all candidates x examples in batched forward passes (examples sorted by
       length), logits only at [P] and only for the label words; causal LMs run each
       example's prefix before the first trigger once (key/value cache) and then only
       the trigger suffix; only the trigger embeddings get gradients.

Both sides score the same candidates (top-k of the same gradient, one position) on the
same examples with the same model in this process; the losses they compute are
compared, and the ratio of scorings per second is printed.

    python bench/bench_gradient.py                              # SmolLM2, SST-2 template
    python bench/bench_gradient.py --model bert-base            # random BERT-base MLM, ~29k vocab
    python bench/bench_gradient.py --model bert-base --dtype bfloat16
    python bench/bench_gradient.py --model tiny                 # seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from autoprompt_search.core.tasks import Task
from autoprompt_search.core.tokens import allowed_token_mask, single_position_candidates, top_candidates
from autoprompt_search.models import load_model, wrap_model
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.search.gradient import TriggerObjective
from autoprompt_search.testing import tiny_causal_lm

BERT_VOCAB = 28996  # bert-base-cased


def bert_base_random(task: Task, dtype: torch.dtype, seed: int = 0):
    """A BERT-base-shaped ``BertForMaskedLM`` with random weights and a ~29k WordPiece vocabulary.

    The vocabulary is learnt from the task's text by a WordPiece trainer and filled up
    with placeholder tokens to bert-base-cased's size, so the embedding matrix, the
    LM head and the candidate ranking have the real model's shapes.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    text = [ex.fields[f] for split in ("train", "dev", "test") for ex in task.examples(split)
            for f in task.fields]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=BERT_VOCAB,
                                                            special_tokens=specials))
    missing = BERT_VOCAB - tok.get_vocab_size()
    tok.add_tokens([f"placeholder{i}" for i in range(max(0, missing))])
    vocab = tok.get_vocab()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072)
    model = BertForMaskedLM(config).eval().to(dtype)
    return wrap_model(model, tokenizer, name="bert-base-random")


def naive_scores(backend, scorer, examples, rows) -> tuple[torch.Tensor, float]:
    """Mean loss per candidate, one candidate at a time (full forward, full-vocab logits)."""
    model = backend.model
    label_ids = scorer.label_words.first_ids
    gold = torch.tensor([ex.label for ex in examples])
    out = []
    start = time.perf_counter()
    with torch.no_grad():
        for row in rows.tolist():
            prompts = scorer.encode(examples, row)
            batch = backend.pad([p.ids for p in prompts])
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            logp = torch.log_softmax(logits.float(), -1)  # every position, whole vocabulary
            at_p = logp[torch.arange(len(prompts)), torch.tensor([p.predict_pos for p in prompts])]
            classes = scorer.label_words.class_scores(at_p[:, label_ids])
            out.append(float(-torch.log_softmax(classes, -1)[torch.arange(len(gold)), gold].mean()))
    return torch.tensor(out), time.perf_counter() - start


def naive_gradient_seconds(backend, scorer, examples, triggers) -> float:
    """AutoPrompt's gradient step: full forward + backward with all weights requiring grads."""
    model = backend.model
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        start = time.perf_counter()
        prompts = scorer.encode(examples, triggers)
        batch = backend.pad([p.ids for p in prompts])
        emb = backend.embed(batch.input_ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, attention_mask=batch.attention_mask).logits
        logp = torch.log_softmax(logits.float(), -1)
        at_p = logp[torch.arange(len(prompts)), torch.tensor([p.predict_pos for p in prompts])]
        gold = torch.tensor([ex.label for ex in examples])
        classes = scorer.label_words.class_scores(at_p[:, scorer.label_words.first_ids])
        (-torch.log_softmax(classes, -1)[torch.arange(len(gold)), gold].mean()).backward()
        seconds = time.perf_counter() - start
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    return seconds


def linear_macs(module: torch.nn.Module) -> int:
    """Multiply-accumulates per token of the ``nn.Linear`` layers under ``module``."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def masked_ceiling(backend, scorer, examples) -> tuple[float, float, float]:
    """(padding factor, head factor, their product) of the naive loop on a masked LM.

    With nothing to cache, exact scoring can only save what the naive loop wastes:
    the padding of its data-order batches (padded tokens / real tokens) and the LM
    head at every position (head MACs / encoder MACs per token, the decoder being a
    ``vocab x hidden`` matrix). Their product bounds ours/naive when both run the
    encoder at the same matrix-multiply speed.
    """
    lengths = [len(p.ids) for p in scorer.encode(examples, [0] * scorer.template.num_triggers)]
    padding = max(lengths) * len(lengths) / sum(lengths)
    body = linear_macs(backend.model.base_model)
    head = linear_macs(backend.model) - body
    head_factor = 1 + head / body
    return padding, head_factor, padding * head_factor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model spec, 'bert-base' or 'tiny'")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--data-root", default=os.environ.get(
        "AUTOPROMPT_SEARCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--split-seed", type=int, default=13)
    ap.add_argument("--template", default="{sentence} [T] [T] [T] [T] [T] [P] .")
    ap.add_argument("--batch", type=int, default=32, help="training examples per iteration")
    ap.add_argument("--k", type=int, default=10, help="candidates per iteration (ours)")
    ap.add_argument("--naive-candidates", type=int, default=2,
                    help="candidates the naive loop scores (it is slow)")
    ap.add_argument("--forward-batch", type=int, default=256)
    ap.add_argument("--forward-tokens", type=int, default=1024)
    ap.add_argument("--naive-dtype", default=None, choices=["float32", "bfloat16"],
                    help="dtype of the naive side (default: --dtype); the original AutoPrompt "
                         "code runs in float32")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)

    task = Task.load("sst-2", data_root=args.data_root, seed=args.split_seed)
    if args.model == "tiny":
        backend = wrap_model(*tiny_causal_lm(), name="tiny")
    elif args.model == "bert-base":
        backend = bert_base_random(task, dtype)
    else:
        backend = load_model(args.model, dtype=args.dtype)
    examples = task.examples("train")[: args.batch]
    scorer = PromptScorer(backend, task, args.template)
    objective = TriggerObjective(scorer, forward_batch=args.forward_batch,
                                 forward_tokens=args.forward_tokens)
    n_trig = scorer.template.num_triggers
    triggers = [backend.neutral_trigger("the")] * n_trig

    print(f"model {backend.name} ({backend.kind}, vocab {backend.vocab_size}, {args.dtype}), "
          f"threads {torch.get_num_threads()}, template {args.template!r}")
    print(f"{len(examples)} SST-2 examples (split {args.split_seed}), k={args.k}, "
          f"{n_trig} triggers")

    # ours: one iteration = (prefix cache, once per search) + gradient + k candidates scored
    start = time.perf_counter()
    batch = objective.encode(examples, triggers)
    encode_s = time.perf_counter() - start
    objective.gradient(batch, triggers)  # warm-up
    start = time.perf_counter()
    grad, _ = objective.gradient(batch, triggers)
    grad_s = time.perf_counter() - start
    allowed = allowed_token_mask(backend.tokenizer, backend.vocab_size)
    top = top_candidates(grad, backend.input_embeddings(), args.k, allowed)
    # the search scores only the k candidates: the current triggers' loss comes with the gradient
    rows = single_position_candidates(torch.tensor(triggers), top, 0)
    objective.losses(batch, rows[:2])  # warm-up
    start = time.perf_counter()
    ours = objective.losses(batch, rows)
    ours_s = time.perf_counter() - start
    ours_rate = rows.shape[0] * len(examples) / ours_s

    # naive: the first few of the same candidates, one at a time
    naive_rows = rows[: args.naive_candidates]
    naive_dtype = args.naive_dtype or args.dtype
    if naive_dtype != args.dtype:  # the same weights in the naive side's dtype
        backend.model.to(getattr(torch, naive_dtype))
        print(f"naive side runs in {naive_dtype}, ours in {args.dtype}")
    naive_scores(backend, scorer, examples[:2], naive_rows[:1])  # warm-up
    naive, naive_s = naive_scores(backend, scorer, examples, naive_rows)
    naive_rate = len(naive_rows) * len(examples) / naive_s
    naive_grad_s = naive_gradient_seconds(backend, scorer, examples, triggers)
    diff = float((naive - ours[: len(naive_rows)]).abs().max())

    print(f"naive: {len(naive_rows)} candidates x {len(examples)} examples in {naive_s:.2f} s = "
          f"{naive_rate:.1f} scorings/s ({1000 / naive_rate:.1f} ms each)")
    print(f"ours:  {rows.shape[0]} candidates x {len(examples)} examples in {ours_s:.2f} s = "
          f"{ours_rate:.1f} scorings/s ({1000 / ours_rate:.1f} ms each)")
    print(f"speed-up (scorings per second): {ours_rate / naive_rate:.1f}x; "
          f"max |loss difference| {diff:.2e}")
    # the original code also re-scores the current triggers on the batch every iteration
    naive_iter = naive_grad_s + (args.k + 1) * len(examples) / naive_rate
    ours_iter = grad_s + ours_s
    print(f"seconds per iteration (gradient + candidates x {len(examples)} examples; naive "
          f"{args.k} + the current triggers, ours {args.k}): "
          f"naive {naive_iter:.1f} s (gradient {naive_grad_s:.1f} s, candidates extrapolated from "
          f"{len(naive_rows)}), ours {ours_iter:.1f} s (gradient {grad_s:.1f} s); "
          f"ratio {naive_iter / ours_iter:.1f}x")
    print(f"ours, once per search: prefix encoding of these examples {encode_s:.1f} s")
    if not backend.supports_prefix_cache:  # nothing to cache: the ceiling of exact scoring
        padding, head, bound = masked_ceiling(backend, scorer, examples)
        print(f"ceiling for exact scoring at equal matmul speed: naive padding {padding:.2f}x x "
              f"LM head at every position {head:.2f}x = {bound:.2f}x")


if __name__ == "__main__":
    main()
