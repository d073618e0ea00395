"""``soft``: prompt tuning -- continuous vectors at the template's [T] slots, model frozen.

The [T] slots may sit anywhere in the template (not only as a prefix). Each step
takes a seeded batch of training examples, puts the vectors in the [T] slots, and
minimises the cross-entropy of the gold class score (plus optional terms: the
fluency of the nearest tokens, and a pull towards the embeddings of an anchor
text, as in Khashabi et al.'s waywardness test). Every ``eval_every`` steps the
vectors are scored on the dev split; the best dev vectors are kept (accuracy,
then loss). The run folder holds checkpoints (``checkpoint.json`` +
``checkpoint.pt``), ``log.jsonl``, the soft prompt (``soft_prompt.safetensors`` +
``soft_prompt.json``) and a ``result.json`` whose trigger ids are the soft prompt's
nearest-token projection.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.errors import UserError
from ..scoring.evaluation import evaluate_prompt
from ..analysis.fluency import ids_log_perplexity, require_causal, span_log_perplexity
from ..core.projection import DistanceMetric, project, token_f1
from ..core.results import PromptResult
from ..scoring.softprompt import (
    SoftPrompt,
    SoftScorer,
    projection_mask,
    render_triggers,
    round_trips,
    save_tensor_state,
)
from ..core.templates import Template, Text
from .base import SearchContext, Searcher, strategies


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
class ContinuousConfig:
    """Settings shared by the ``soft`` and ``pez`` strategies."""

    init: Init = field(default=Init.human, metadata={
        "help": "Initial vectors: embeddings of a human prompt's words (human), of random "
                "vocabulary tokens (random), of the label words (labels), or of --anchor-text (anchor, "
                "soft only); repeated to fill the slots."})
    init_prompt: str | None = field(default=None, metadata={
        "help": "Name of the human prompt whose words initialise the vectors (default: the task's first)."})
    num_tokens: int | None = field(default=None, metadata={
        "help": "[T] slots when no --template is given: '{field} [T]*N [P]' (default 5)."})
    steps: int = field(default=100, metadata={"help": "Optimisation steps."})
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
    """The training loop shared by ``soft`` and ``pez``: seeded batches, dev selection,
    checkpoint/resume. Subclasses define the step loss and how a state is scored on dev."""

    Config = ContinuousConfig

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

    # --- hooks ------------------------------------------------------------------
    def step_loss(self, ctx, scorer, prompts, gold, vectors, allowed, rows) -> tuple[torch.Tensor, dict]:
        """Loss of a batch (``rows``: the prompts' rows in ``self.train_cache``); sets vectors.grad."""
        raise NotImplementedError

    def dev_score(self, ctx, scorer, dev, vectors, allowed) -> dict[str, Any]:
        """Score the current state on dev: {'accuracy', 'loss', ...} (+ 'ids' for hard prompts)."""
        raise NotImplementedError

    def finish(self, ctx, scorer, best: dict[str, Any], allowed, history) -> PromptResult:
        raise NotImplementedError

    # --- the loop -----------------------------------------------------------------
    def search(self, ctx: SearchContext) -> PromptResult:
        cfg = self.config
        backend = ctx.backend
        if cfg.fluency_weight > 0:
            require_causal(backend)
        template = self._template(ctx)
        scorer = SoftScorer(backend, ctx.task, template)
        allowed = projection_mask(backend, whole_words=cfg.whole_words, ascii_only=cfg.ascii_only)
        train = self._subset(ctx.task.examples("train"), cfg.train_limit)
        dev = self._subset(ctx.task.examples("dev"), cfg.dev_limit)
        prompts = scorer.encode(train)
        gold = [ex.label for ex in train]
        self.train_cache = scorer.cache(prompts)  # the text before the first [T], run once
        self.dev_cache = scorer.cache(scorer.encode(dev))
        embeddings = backend.input_embeddings().detach()

        run = ctx.run
        config = {**self.resolved_config(ctx), "template": template.source}
        state = run.start(config, ctx.resume) if run is not None else None
        init_ids = self._init_ids(ctx, scorer, allowed)
        self.init_ids = init_ids
        vectors = embeddings[torch.tensor(init_ids, device=backend.device)].clone().float()
        vectors.requires_grad_(True)
        opt = self._optimizer([vectors])
        start, best, elapsed = 0, None, 0.0
        ckpt_pt = run.path / "checkpoint.pt" if run is not None else None
        if state is not None:
            saved = torch.load(ckpt_pt, map_location="cpu", weights_only=False)
            with torch.no_grad():
                vectors.copy_(saved["vectors"].to(vectors.device))
            opt.load_state_dict(saved["optimizer"])
            start, best = int(saved["step"]), saved["best"]
            elapsed = float(saved.get("elapsed", 0.0))  # search seconds before the interruption
        if ctx.resume and run is not None:
            run.truncate_log(start)
        if best is None:
            best = {**self.dev_score(ctx, scorer, dev, vectors, allowed), "step": 0,
                    "vectors": vectors.detach().cpu().clone()}
            if run is not None:
                run.log({"step": 0, **_loggable(best)})

        bar = tqdm(range(start, cfg.steps), desc=f"{self.name} search", unit="step",
                   disable=not ctx.progress, initial=start, total=cfg.steps)
        started = time.perf_counter() - elapsed
        for step in bar:
            idx = self._batch(len(prompts), step)
            opt.zero_grad(set_to_none=True)
            loss, parts = self.step_loss(ctx, scorer, [prompts[i] for i in idx], [gold[i] for i in idx],
                                         vectors, allowed, idx)
            opt.step()
            done = step + 1
            record: dict[str, Any] = {"step": done, "loss": float(loss), **parts,
                                      "time": round(time.perf_counter() - started, 3)}
            if done % cfg.eval_every == 0 or done == cfg.steps:
                score = self.dev_score(ctx, scorer, dev, vectors, allowed)
                record.update({f"dev_{k}": v for k, v in _loggable(score).items()})
                if _better(score, best):
                    best = {**score, "step": done, "vectors": vectors.detach().cpu().clone()}
                bar.set_postfix(loss=f"{float(loss):.3f}", dev=f"{score['accuracy']:.3f}",
                                best=f"{best['accuracy']:.3f}")
            if run is not None:
                run.log(record)
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    save_tensor_state(ckpt_pt, {"step": done, "vectors": vectors.detach().cpu(),
                                                "optimizer": opt.state_dict(), "best": best,
                                                "elapsed": time.perf_counter() - started})
                    run.save_checkpoint({"step": done, "best_step": best["step"],
                                         "best_dev_accuracy": best["accuracy"]})
        history = run.history() if run is not None else []
        self.elapsed = time.perf_counter() - started  # search seconds, across resumes
        return self.finish(ctx, scorer, best, allowed, history)


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

    def finish(self, ctx, scorer, best, allowed, history):
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
        if backend.kind == "causal":
            scores["trigger_log_ppl"] = ids_log_perplexity(backend, ids)
        anchor = self._anchor(ctx, scorer.num_slots)
        extra: dict[str, Any] = {
            "soft_prompt": "soft_prompt.safetensors", "best_step": best["step"],
            "seconds": round(self.elapsed, 1),
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
        soft = SoftPrompt(vectors.detach().cpu(), scorer.template.source, backend.name, task.name,
                          scorer.scorer.verbalizer, scores, config)
        if ctx.run is not None:
            soft.save(ctx.run.path)
        else:
            extra["soft_vectors"] = vectors.detach().cpu().tolist()
        return PromptResult(
            task=task.name, template=scorer.template.source, prompt=text, model=backend.name,
            strategy=self.name, seed=self.seed, verbalizer=scorer.scorer.verbalizer,
            trigger_ids=ids, trigger_tokens=[backend.encoder.decode_trigger(i) for i in ids],
            scores=scores, config=config, extra=extra,
        )

