"""Trigger-token pools for black-box search: a few hundred candidates built by the tool.

A trigger slot is an Optuna categorical over a pool, never over the raw vocabulary:
measured for the issue, TPE's ``ask()`` costs 300-770 ms at 30k choices per slot
(and the study grows ~1 MB per trial) against ~14 ms at 1k. Pools:

* ``frequent`` -- whole-word tokens that occur most often in the search examples,
  topped up with whole-word tokens in vocabulary order (BPE merge order, a proxy for
  corpus frequency);
* ``label_search`` -- AutoPrompt's label-token search: a logistic regression from the
  hidden state at [P] to the classes, applied to every token's output embedding; the
  top tokens per class, round robin;
* ``gradient`` -- HotFlip candidates: tokens whose embedding most lowers the loss
  at trigger slots, to first order (``-(e_w . g)``);
* ``words`` / ``file`` -- a user list (one word per line in a file); each must be a
  single token.

Every candidate is a whole word that re-tokenises to itself, and no label word.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.data import Example
from ..core.errors import UserError
from ..core.registry import Registry
from ..core.spaces import PoolSource, SearchSpace, TriggerSpec, insert_triggers
from ..core.tasks import Task
from ..core.templates import Template
from ..models import LMBackend
from ..scoring.engine import PrefixMode
from ..scoring.scorer import PromptScorer


@dataclass(frozen=True)
class TriggerPool:
    """Candidate trigger token ids (and their text) for every trigger slot."""

    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    source: str

    def to_dict(self) -> dict:
        return {"source": self.source, "token_ids": list(self.token_ids), "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict) -> TriggerPool:
        return cls(tuple(data["token_ids"]), tuple(data["tokens"]), data["source"])


@dataclass
class PoolContext:
    backend: LMBackend
    task: Task
    space: SearchSpace
    spec: TriggerSpec
    examples: Sequence[Example]  # search examples (never test)
    templates: Sequence[str]  # usable template choices
    banned: frozenset[int]  # label-word ids of every verbalizer choice


pool_builders: Registry[Callable[[PoolContext], list[int]]] = Registry("trigger pool")


def whole_word(backend: LMBackend, token_id: int, min_chars: int) -> bool:
    """A token that is a whole alphabetic word and re-tokenises to itself (with its space)."""
    tok = backend.tokenizer
    if token_id in set(tok.all_special_ids):
        return False
    piece = tok.convert_ids_to_tokens(int(token_id))
    if piece is None or piece.startswith("##"):
        return False
    text = backend.encoder.decode_trigger(token_id)
    word = text.strip()
    if len(word) < min_chars or not word.isalpha() or not word.isascii():
        return False
    if not backend.starts_word(text):
        return False
    return backend.encoder.text_ids(word, True) == (int(token_id),)


def banned_ids(backend: LMBackend, templates: Sequence[str], task: Task,
               verbalizers: Sequence[dict[str, list[str]]]) -> frozenset[int]:
    """Token ids of every label word (with and without a leading space)."""
    out: set[int] = set()
    for verb in verbalizers:
        for words in verb.values():
            for w in words:
                for space in (True, False):
                    out.update(backend.encoder.text_ids(w, space)[:1])
    return frozenset(out)


def build_pool(backend: LMBackend, task: Task, space: SearchSpace, examples: Sequence[Example],
               templates: Sequence[str], verbalizers: Sequence[dict[str, list[str]]]) -> TriggerPool:
    """Build the trigger pool the space asks for."""
    spec = space.triggers
    ctx = PoolContext(backend, task, space, spec, examples, templates,
                      banned_ids(backend, templates, task, verbalizers))
    ids = pool_builders.get(spec.pool)(ctx)
    seen: set[int] = set()
    unique = [i for i in ids if not (i in seen or seen.add(i))][: spec.size]
    if not unique:
        raise UserError(f"the '{spec.pool}' trigger pool came out empty; try pool: frequent")
    return TriggerPool(tuple(unique), tuple(backend.encoder.decode_trigger(i) for i in unique),
                       spec.pool)


def _vocab_fill(ctx: PoolContext, have: list[int]) -> list[int]:
    """Top ``have`` up with whole-word tokens in vocabulary order (BPE merge order)."""
    taken = set(have)
    out = list(have)
    for i in range(ctx.backend.vocab_size):
        if len(out) >= ctx.spec.size:
            break
        if i not in taken and i not in ctx.banned and whole_word(ctx.backend, i, ctx.spec.min_chars):
            out.append(i)
    return out


@pool_builders.register(PoolSource.frequent.value)
def frequent_pool(ctx: PoolContext) -> list[int]:
    counts: Counter[int] = Counter()
    for ex in ctx.examples:
        for text in ex.fields.values():
            counts.update(ctx.backend.encoder.text_ids(text, True))
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    words = [i for i in ranked if i not in ctx.banned and whole_word(ctx.backend, i, ctx.spec.min_chars)]
    return _vocab_fill(ctx, words[: ctx.spec.size])


def _word_ids(ctx: PoolContext, words: Sequence[str], source: str) -> list[int]:
    out = []
    for w in words:
        ids = ctx.backend.encoder.text_ids(w.strip(), True)
        if len(ids) != 1:
            pieces = ctx.backend.tokenizer.convert_ids_to_tokens(list(ids))
            raise UserError(f"{source}: trigger word {w!r} is {len(ids)} tokens {pieces} for this "
                            "model; a trigger slot holds one token")
        out.append(ids[0])
    return out


@pool_builders.register(PoolSource.words.value)
def words_pool(ctx: PoolContext) -> list[int]:
    return _word_ids(ctx, ctx.spec.words, f"{ctx.space.source} (triggers.words)")


@pool_builders.register(PoolSource.file.value)
def file_pool(ctx: PoolContext) -> list[int]:
    path = Path(str(ctx.spec.path))
    if not path.is_file():
        raise UserError(f"trigger pool file not found: {path}")
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
    return _word_ids(ctx, words, str(path))


def _probe_template(ctx: PoolContext, slots: int) -> Template:
    source = ctx.spec.template or ctx.templates[0]
    if Template.parse(source, ctx.task.fields).num_triggers == 0 and slots:
        source = insert_triggers(source, slots, "before_predict")
    template = Template.parse(source, ctx.task.fields)
    # the probes read the label word at [P]; a causal LM's text after [P] cannot change it
    return template.up_to_predict() if ctx.backend.reads_left_to_right else template


def _hidden_at_predict(ctx: PoolContext, scorer: PromptScorer, triggers: list[int]) -> torch.Tensor:
    """``[N, d]`` hidden states at [P] of the search examples (what the LM head reads)."""
    engine = scorer.engine(prefix=PrefixMode.NONE, forward_batch=max(1, len(ctx.examples)))
    hidden = torch.empty(len(ctx.examples), ctx.backend.input_embeddings().shape[1])

    def keep(b: torch.Tensor, h: torch.Tensor, _pos: torch.Tensor) -> None:
        hidden[b.cpu()] = h.float().cpu()

    engine.at_predict(engine.encode(ctx.examples, triggers), keep)
    return hidden


def _round_robin(ranked: list[list[int]], ctx: PoolContext) -> list[int]:
    out: list[int] = []
    iters = [iter(r) for r in ranked]
    while iters and len(out) < ctx.spec.size:
        for it in list(iters):
            for i in it:
                if i not in ctx.banned and i not in out and whole_word(ctx.backend, i, ctx.spec.min_chars):
                    out.append(i)
                    break
            else:
                iters.remove(it)
    return out


@pool_builders.register(PoolSource.label_search.value)
def label_search_pool(ctx: PoolContext) -> list[int]:
    """AutoPrompt's label-token search, used here to find class-related trigger words."""
    if len(ctx.examples) < 2:
        raise UserError("the label_search pool needs search examples")
    template = _probe_template(ctx, 0)
    first = ctx.backend.tokenizer.convert_tokens_to_ids(ctx.backend.tokenizer.tokenize(" the"))[:1] or [0]
    scorer = PromptScorer(ctx.backend, ctx.task, template)
    hidden = _hidden_at_predict(ctx, scorer, first * template.num_triggers)
    labels = torch.tensor([ex.label for ex in ctx.examples])
    mean, std = hidden.mean(0), hidden.std(0) + 1e-6
    x = (hidden - mean) / std
    gen = torch.Generator().manual_seed(0)  # the probe's own RNG (no global seeding)
    weight = (0.01 * torch.randn(len(ctx.task.labels), x.shape[1], generator=gen)).requires_grad_()
    bias = torch.zeros(len(ctx.task.labels), requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=1e-2, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(200):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, labels)
            loss.backward()
            opt.step()
    out_emb = ctx.backend.model.get_output_embeddings().weight.detach().float()
    with torch.no_grad():
        scores = ((out_emb - mean) / std) @ weight.T + bias  # [V, C]
    ranked = [torch.argsort(scores[:, c], descending=True)[:5000].tolist() for c in range(scores.shape[1])]
    return _round_robin(ranked, ctx)


@pool_builders.register(PoolSource.gradient.value)
def gradient_pool(ctx: PoolContext) -> list[int]:
    """HotFlip candidates at three trigger slots before [P], from one gradient on the examples."""
    backend = ctx.backend
    template = _probe_template(ctx, 3)
    n = template.num_triggers
    init = _vocab_fill(ctx, [])[:1] or [0]
    scorer = PromptScorer(backend, ctx.task, template)
    engine = scorer.engine(prefix=PrefixMode.PER_EXAMPLE, forward_batch=256, forward_tokens=1024)
    grad, _ = engine.gradient(engine.encode(ctx.examples, init * n), init * n)  # [n, d]
    scores = -(grad.float() @ backend.input_embeddings().detach().float().T)  # [n, V]: first-order loss decrease
    ranked = [torch.argsort(scores[j], descending=True)[:5000].tolist() for j in range(n)]
    return _round_robin(ranked, ctx)
