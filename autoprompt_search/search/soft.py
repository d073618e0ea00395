"""``soft``: prompt tuning -- continuous vectors at the template's [T] slots, model frozen.

The [T] slots may sit anywhere in the template (not only as a prefix). Each step
takes a seeded batch of training examples, puts the vectors in the [T] slots, and
minimises the cross-entropy of the gold class score (plus optional terms: the
fluency of the nearest tokens, and a pull towards the embeddings of an anchor
text, as in Khashabi et al.'s waywardness test). Every ``eval_every`` steps the
vectors are scored on the dev split; the best dev vectors are kept (accuracy,
then loss). The loop, budgets and checkpoints are the base class's
(:mod:`autoprompt_search.search.base`; the vectors and the optimiser state are
checkpointed in safetensors). The run folder holds ``log.jsonl``, the checkpoint, the soft prompt (``soft_prompt.safetensors`` +
``soft_prompt.json``) and a ``result.json`` whose trigger ids are the soft prompt's
nearest-token projection.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..core.errors import UserError
from ..scoring.evaluation import evaluate_prompt
from ..analysis.fluency import require_causal, span_log_perplexity, trigger_log_perplexity
from ..core.projection import DistanceMetric, project, token_f1
from ..core.results import PromptResult
from ..scoring.softprompt import (
    SoftPrompt,
    SoftScorer,
    projection_mask,
    render_triggers,
    round_trips,
)
from ..core.templates import Template, Text
from .base import Score, SearchConfig, SearchContext, Searcher, SearchState, strategies


class Init(str, enum.Enum):
    human = "human"
    random = "random"
    labels = "labels"
    anchor = "anchor"


class Optim(str, enum.Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"



@dataclass
class ContinuousConfig(SearchConfig):
    """Settings shared by the ``soft`` and ``pez`` strategies."""

    budget_field: ClassVar[str] = "steps"

    init: Init = field(default=Init.human, metadata={
        "help": "Initial vectors: embeddings of a human prompt's words (human), of random "
                "vocabulary tokens (random), of the label words (labels), or of --anchor-text (anchor, "
                "soft only); repeated to fill the slots."})
    init_prompt: str | None = field(default=None, metadata={
        "help": "Name of the human prompt whose words initialise the vectors (default: the task's first)."})
    num_tokens: int | None = field(default=None, metadata={
        "help": "[T] slots when no --template is given: '{field} [T]*N [P]' (default 5)."})
    steps: int = field(default=100, metadata={"help": "Optimisation steps.", "resumable": True})
    lr: float = field(default=0.01, metadata={"help": "Learning rate."})
    optimizer: Optim = field(default=Optim.adamw, metadata={"help": "adam, adamw or sgd."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay of the optimiser."})
    batch_size: int = field(default=16, metadata={"help": "Training examples per step."})
    train_limit: int | None = field(default=None, metadata={
        "help": "Use only N training examples (a seeded subset with the classes interleaved)."})
    eval_every: int = field(default=10, metadata={
        "help": "Score on the dev split (and checkpoint) every N steps; the best dev prompt is kept."})
    dev_limit: int | None = field(default=None, metadata={
        "help": "Select on N dev examples only (seeded, classes interleaved; the final score "
                "uses the whole dev split)."})
    metric: DistanceMetric = field(default=DistanceMetric.cosine, metadata={
        "help": "Distance for the nearest-token projection: cosine, euclidean or dot."})
    whole_words: bool = field(default=True, metadata={
        "help": "Project only onto word-start alphabetic tokens (the gradient search's filter)."})
    ascii_only: bool = field(default=True, metadata={
        "help": "Project only onto printable-ASCII tokens."})
    fluency_weight: float = field(default=0.0, metadata={
        "help": "Weight of the LM's log-perplexity of the (projected) prompt tokens in the loss "
                "(causal LMs)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.fluency_weight < 0 or self.weight_decay < 0:
            raise UserError("fluency_weight and weight_decay must not be negative")
        if self.num_tokens is not None and self.num_tokens < 1:
            raise UserError(f"num_tokens must be at least 1, got {self.num_tokens}")
        for name in ("train_limit", "dev_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1")


@dataclass
class SoftConfig(ContinuousConfig):
    anchor_text: str | None = field(default=None, metadata={
        "help": "Pull the vectors towards the embeddings of this text's first K tokens "
                "(Khashabi et al.'s waywardness test)."})
    anchor_weight: float = field(default=0.0, metadata={
        "help": "Weight of the anchor penalty: mean squared distance to the anchor tokens' "
                "embeddings, relative to their squared norm."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.anchor_weight < 0:
            raise UserError("anchor_weight must not be negative")
        if self.anchor_weight > 0 and not self.anchor_text:
            raise UserError("anchor_weight needs an --anchor-text")


class ContinuousSearch(Searcher):
    """What ``soft`` and ``pez`` share on the base loop: continuous vectors in the [T] slots,
    an optimiser, seeded batches (a function of seed and step), dev selection. Subclasses
    define the step loss, how a state is scored on dev, and the result."""

    Config = ContinuousConfig
    unit = "step"

    # --- setup ------------------------------------------------------------------
    def _template(self, ctx: SearchContext) -> Template:
        cfg = self.config
        if ctx.template is None:
            n = cfg.num_tokens or 5
            src = "{" + ctx.task.fields[0] + "} " + "[T] " * n + "[P]"
            return Template.parse(src, ctx.task.fields)
        template = Template.parse(ctx.template, ctx.task.fields)
        if cfg.num_tokens is not None and cfg.num_tokens != template.num_triggers:
            raise UserError(f"--num-tokens {cfg.num_tokens} disagrees with the template's "
                            f"{template.num_triggers} [T] slots; drop one of them")
        return template

    def _init_ids(self, ctx: SearchContext, scorer: SoftScorer, allowed: torch.Tensor) -> list[int]:
        cfg, backend, k = self.config, ctx.backend, scorer.num_slots
        if cfg.init == Init.random:
            pool = torch.nonzero(allowed).flatten()
            pick = torch.randint(len(pool), (k,), generator=self.torch_rng)
            return [int(pool[i]) for i in pick]
        if cfg.init == Init.anchor:
            if not getattr(cfg, "anchor_text", None):
                raise UserError("--init anchor starts from the tokens of --anchor-text (strategy soft); "
                                "give an --anchor-text")
            ids = list(backend.encoder.text_ids(cfg.anchor_text, True))
        elif cfg.init == Init.labels:
            ids = [w[0] for w in scorer.label_words.word_ids]
        else:
            prompts = ctx.task.prompts
            if not prompts:
                raise UserError(f"task '{ctx.task.name}' has no human prompts; use --init random or labels")
            chosen = prompts[0]
            if cfg.init_prompt is not None:
                named = [p for p in prompts if p.name == cfg.init_prompt]
                if not named:
                    names = ", ".join(p.name for p in prompts if p.name)
                    raise UserError(f"no human prompt named {cfg.init_prompt!r}; names: {names}")
                chosen = named[0]
            parsed = Template.parse(chosen.template, ctx.task.fields)
            words = " ".join(s.text for s in parsed.segments if isinstance(s, Text))
            ids = [i for i in backend.encoder.text_ids(words, True) if bool(allowed[i])]
            if not ids:
                raise UserError(f"human prompt {chosen.template!r} has no words to initialise from")
        return [ids[j % len(ids)] for j in range(k)]

    def _optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == Optim.sgd:
            return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == Optim.adamw else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _subset(self, examples: list, n: int | None) -> list:
        """``n`` examples, classes interleaved (data files are often sorted by label), seeded."""
        if n is None or n >= len(examples):
            return examples
        gen = torch.Generator().manual_seed(self.seed)
        by_class: dict[int, list] = {}
        for i in torch.randperm(len(examples), generator=gen).tolist():
            by_class.setdefault(examples[i].label, []).append(examples[i])
        queues = [by_class[c] for c in sorted(by_class)]
        out: list = []
        while len(out) < n:
            for q in queues:
                if q and len(out) < n:
                    out.append(q.pop(0))
        return out

    def _batch(self, n: int, step: int) -> list[int]:
        """The training batch of ``step``: a function of (seed, step) only, so resume is exact."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return torch.randperm(n, generator=gen)[: self.config.batch_size].tolist()

    # --- what soft and pez differ in -------------------------------------------
    def step_loss(self, ctx, scorer, prompts, gold, vectors, allowed, rows) -> tuple[torch.Tensor, dict]:
        """Loss of a batch (``rows``: the prompts' rows in ``self.train_cache``); sets vectors.grad."""
        raise NotImplementedError

    def dev_score(self, ctx, scorer, dev, vectors, allowed) -> dict[str, Any]:
        """Score the current state on dev: {'accuracy', 'loss', ...} (+ 'ids' for hard prompts)."""
        raise NotImplementedError

    def finish(self, ctx, scorer, best: dict[str, Any], allowed, history, seconds: float) -> PromptResult:
        raise NotImplementedError

    # --- the base loop's hooks ----------------------------------------------------
    def setup(self, ctx: SearchContext) -> None:
        cfg = self.config
        backend = ctx.backend
        if cfg.fluency_weight > 0:
            require_causal(backend)
        template = self._template(ctx)
        self.template_source = template.source
        self.scorer = scorer = SoftScorer(backend, ctx.task, template)
        self.allowed = projection_mask(backend, whole_words=cfg.whole_words, ascii_only=cfg.ascii_only)
        train = self._subset(ctx.task.examples("train"), cfg.train_limit)
        self.dev = self._subset(ctx.task.examples("dev"), cfg.dev_limit)
        self.prompts = scorer.encode(train)
        self.gold = [ex.label for ex in train]
        self.train_cache = scorer.cache(self.prompts)  # the text before the first [T], run once
        self.dev_cache = scorer.cache(scorer.encode(self.dev))
        self.embeddings = ctx.backend.input_embeddings().detach()

    def _start(self, ctx: SearchContext, vectors: torch.Tensor) -> None:
        self.vectors = vectors.to(ctx.backend.device).clone().float().requires_grad_(True)
        self.opt = self._optimizer([self.vectors])

    def init_state(self, ctx: SearchContext) -> None:
        self.init_ids = self._init_ids(ctx, self.scorer, self.allowed)
        self._start(ctx, self.embeddings[torch.tensor(self.init_ids, device=ctx.backend.device)])

    def step(self, ctx: SearchContext, state: SearchState) -> dict[str, Any]:
        idx = self._batch(len(self.prompts), state.step)
        self.opt.zero_grad(set_to_none=True)
        loss, parts = self.step_loss(ctx, self.scorer, [self.prompts[i] for i in idx],
                                     [self.gold[i] for i in idx], self.vectors, self.allowed, idx)
        self.opt.step()
        return {"loss": float(loss), **parts}

    def evaluate(self, ctx: SearchContext) -> Score:
        self.last_score = score = self.dev_score(ctx, self.scorer, self.dev, self.vectors, self.allowed)
        return Score(score["accuracy"], score["loss"],
                     {f"dev_{k}": v for k, v in _loggable(score).items()})

    def keep_best(self, state: SearchState) -> None:
        self.best = {**self.last_score, "step": state.step,
                     "vectors": self.vectors.detach().cpu().clone()}

    def state_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        optim = self.opt.state_dict()
        tensors = {"vectors": self.vectors.detach(), "best.vectors": self.best["vectors"]}
        slots: dict[str, dict[str, Any]] = {}
        for pid, slot in optim["state"].items():
            slots[str(pid)] = {}
            for name, value in slot.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{pid}.{name}"] = value
                    value = {"tensor": f"optimizer.{pid}.{name}"}
                slots[str(pid)][name] = value
        data = {"init_ids": self.init_ids, "best": _loggable(self.best),
                "optimizer": {"state": slots, "param_groups": optim["param_groups"]}}
        return data, tensors

    def load_state_dict(self, data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        backend_device = self.embeddings.device
        self.init_ids = [int(i) for i in data["init_ids"]]
        self.vectors = tensors["vectors"].to(backend_device).clone().float().requires_grad_(True)
        self.opt = self._optimizer([self.vectors])
        slots = {int(pid): {name: tensors[v["tensor"]] if isinstance(v, dict) else v
                            for name, v in slot.items()}
                 for pid, slot in data["optimizer"]["state"].items()}
        self.opt.load_state_dict({"state": slots, "param_groups": data["optimizer"]["param_groups"]})
        self.best = {**data["best"], "vectors": tensors["best.vectors"].clone()}

    def result(self, ctx: SearchContext, state: SearchState) -> PromptResult:
        history = ctx.run.history() if ctx.run is not None else []
        return self.finish(ctx, self.scorer, self.best, self.allowed, history, state.elapsed)


def _better(score: dict, best: dict) -> bool:
    return (score["accuracy"], -score["loss"]) > (best["accuracy"], -best["loss"])


def _loggable(score: dict) -> dict:
    return {k: v for k, v in score.items() if k != "vectors"}


@strategies.register("soft")
class SoftSearch(ContinuousSearch):
    """Prompt tuning: learn continuous vectors in the [T] slots; report their projection too."""

    name = "soft"
    Config = SoftConfig

    def _anchor(self, ctx, k: int) -> torch.Tensor | None:
        text = self.config.anchor_text
        if not text:
            return None
        ids = list(ctx.backend.encoder.text_ids(text, True))
        if len(ids) < k:
            raise UserError(f"--anchor-text {text!r} has {len(ids)} tokens; the template has {k} [T] "
                            "slots: use a longer text")
        return torch.tensor(ids[:k])

    def step_loss(self, ctx, scorer, prompts, gold, vectors, allowed, rows):
        cfg = self.config
        backend = ctx.backend
        task_loss = scorer.loss(prompts, vectors, gold, self.train_cache, rows)
        loss = task_loss
        parts = {"task_loss": float(task_loss.detach())}
        if cfg.fluency_weight > 0:
            ids = project(vectors, backend.input_embeddings(), cfg.metric.value, 1, allowed).ids
            flu = span_log_perplexity(backend, vectors, ids)
            loss = loss + cfg.fluency_weight * flu
            parts["fluency"] = float(flu)
        anchor = self._anchor(ctx, scorer.num_slots)
        if anchor is not None and cfg.anchor_weight > 0:
            target = backend.input_embeddings()[anchor.to(backend.device)].detach().float()
            pen = ((vectors - target) ** 2).sum(-1).mean() / (target ** 2).sum(-1).mean()
            loss = loss + cfg.anchor_weight * pen
            parts["anchor"] = float(pen.detach())
        loss.backward()
        return loss.detach(), parts

    def dev_score(self, ctx, scorer, dev, vectors, allowed):
        ev = scorer.evaluate(dev, vectors.detach(), "dev", prefix=self.dev_cache)
        return {"accuracy": ev.metrics["accuracy"], "loss": ev.metrics["loss"]}

    def finish(self, ctx, scorer, best, allowed, history, seconds):
        cfg, backend, task = self.config, ctx.backend, ctx.task
        vectors = best["vectors"].to(backend.device)
        dev_full = scorer.evaluate(task.examples("dev"), vectors, "dev")
        proj = project(vectors, backend.input_embeddings(), cfg.metric.value, 5, allowed)
        ids = proj.token_ids
        hard = evaluate_prompt(backend, task, scorer.template.source, "dev", triggers=ids)
        text = render_triggers(backend, scorer.template, ids)
        scores = {
            "dev_accuracy": dev_full.metrics["accuracy"], "dev_loss": dev_full.metrics["loss"],
            "dev_macro_f1": dev_full.metrics["macro_f1"],
            "projected_dev_accuracy": hard.metrics["accuracy"],
            "projection_mean_distance": float(proj.distance.mean()),
        }
        if (trigger_ppl := trigger_log_perplexity(backend, ids)) is not None:
            scores["trigger_log_ppl"] = trigger_ppl
        anchor = self._anchor(ctx, scorer.num_slots)
        extra: dict[str, Any] = {
            "soft_prompt": "soft_prompt.safetensors", "best_step": best["step"],
            "seconds": round(seconds, 1),
            "note": "trigger_ids are the nearest-token projection of the soft prompt; "
                    "the soft vectors are in soft_prompt.safetensors",
            "projection": {"metric": cfg.metric.value, "distance": proj.distance.tolist(),
                           "neighbour_ids": proj.neighbour_ids.tolist(),
                           "round_trips": round_trips(backend, scorer.template, ids)},
            "init_ids": self.init_ids,
        }
        if anchor is not None:
            extra["anchor_ids"] = anchor.tolist()
            scores["anchor_token_f1"] = token_f1(ids, anchor.tolist())
        config = {**self.resolved_config(ctx), "template": scorer.template.source}
        self.soft = SoftPrompt(vectors.detach().cpu(), scorer.template.source, backend.name,
                               task.name, scorer.scorer.verbalizer, scores, config)
        if ctx.run is None:
            extra["soft_vectors"] = vectors.detach().cpu().tolist()
        return PromptResult(
            task=task.name, template=scorer.template.source, prompt=text, model=backend.name,
            strategy=self.name, seed=self.seed, verbalizer=scorer.scorer.verbalizer,
            trigger_ids=ids, trigger_tokens=[backend.encoder.decode_trigger(i) for i in ids],
            scores=scores, config=config, extra=extra,
        )

    def save_artifacts(self, ctx: SearchContext, result: PromptResult) -> None:
        self.soft.config = result.config
        self.soft.save(ctx.run.path)

