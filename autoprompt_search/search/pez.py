"""``pez``: projected gradient descent over the vocabulary (Wen et al. 2023).

Keep continuous vectors at the [T] slots. Each step projects them to their nearest
allowed tokens, computes the loss with the *projected* embeddings in the slots, and
applies that gradient to the continuous vectors (a straight-through estimate). The
dev split scores the projected hard prompt with the ordinary scorer; the best
projected prompt whose text re-tokenises to its ids is kept. The result is a hard
prompt like the other strategies: its reported ``dev_accuracy`` is a fresh
evaluation of the saved prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..analysis.fluency import span_log_perplexity, trigger_log_perplexity
from ..core.errors import UserError
from ..core.projection import nearest_ids
from ..core.results import PromptResult
from ..scoring.calibration import Calibration, CalibrationRecord, estimate_calibration
from ..scoring.evaluation import evaluate_prompt
from ..scoring.softprompt import render_triggers, round_trips
from .base import strategies
from .soft import ContinuousConfig, ContinuousSearch


@dataclass
class PezConfig(ContinuousConfig):
    lr: float = field(default=0.05, metadata={"help": "Learning rate."})
    weight_decay: float = field(default=0.1, metadata={
        "help": "Weight decay of the optimiser (the PEZ paper uses AdamW with 0.1)."})


@strategies.register("pez")
class PezSearch(ContinuousSearch):
    """Projected gradient descent: returns the best projected (hard) prompt."""

    name = "pez"
    Config = PezConfig

    def _project(self, ctx, vectors, allowed) -> torch.Tensor:
        return nearest_ids(vectors, ctx.backend.input_embeddings(), self.config.metric.value, allowed)

    def step_loss(self, ctx, scorer, prompts, gold, vectors, allowed, rows):
        backend = ctx.backend
        ids = self._project(ctx, vectors, allowed).to(backend.device)
        projected = backend.input_embeddings()[ids].detach().float().requires_grad_(True)
        task_loss = scorer.loss(prompts, projected, gold, self.train_cache, rows)
        loss = task_loss
        parts: dict[str, Any] = {"task_loss": float(task_loss.detach()), "ids": ids.tolist()}
        if self.config.fluency_weight > 0:
            flu = span_log_perplexity(backend, projected, ids)
            loss = loss + self.config.fluency_weight * flu
            parts["fluency"] = float(flu.detach())
        (grad,) = torch.autograd.grad(loss, projected)
        vectors.grad = grad.to(vectors.dtype)  # straight-through: the projected prompt's gradient
        return loss.detach(), parts

    def position_calibration(self, ctx, scorer, vectors):
        """PEZ's position is the projected prompt: its calibration through the trigger ids."""
        cfg = self.config
        if cfg.calibration is Calibration.NONE:
            return None
        ids = self._project(ctx, vectors.detach(), self.allowed).tolist()
        return estimate_calibration(cfg.calibration, scorer.scorer, ids, premise=cfg.premise)

    def dev_score(self, ctx, scorer, dev, vectors, allowed):
        ids = self._project(ctx, vectors, allowed).tolist()
        if not round_trips(ctx.backend, scorer.template, ids):
            # its text would not be the prompt that was scored: never select it
            return {"accuracy": -1.0, "loss": float("inf"), "ids": ids, "round_trips": False}
        # the token embeddings in the slots: the hard prompt's scores (prefix cached)
        emb = ctx.backend.input_embeddings()[torch.tensor(ids, device=ctx.backend.device)].float()
        ev = scorer.evaluate(dev, emb, "dev", prefix=self.dev_cache, calibration=self.calibration)
        return {"accuracy": ev.metrics["accuracy"], "loss": ev.metrics["loss"], "ids": ids,
                "round_trips": True}

    def finish(self, ctx, scorer, best, allowed, history, seconds):
        backend, task = ctx.backend, ctx.task
        ids = [int(i) for i in best["ids"]]
        if not best.get("round_trips", False):
            raise UserError("PEZ found no projected prompt whose text re-tokenises to its ids; "
                            "keep the default token filter (--whole-words true) or run more steps")
        template = scorer.template
        ev = evaluate_prompt(backend, task, template.source, "dev", triggers=ids,
                             calibration=CalibrationRecord.from_json(best.get("calibration")))
        scores = {"dev_accuracy": ev.metrics["accuracy"], "dev_macro_f1": ev.metrics["macro_f1"]}
        if (trigger_ppl := trigger_log_perplexity(backend, ids)) is not None:
            scores["trigger_log_ppl"] = trigger_ppl
        steps_seen = [h for h in history if "ids" in h and "task_loss" in h]
        distinct = len({tuple(h["ids"]) for h in steps_seen})
        config = {**self.resolved_config(ctx), "template": template.source}
        return PromptResult(
            task=task.name, template=template.source, prompt=render_triggers(backend, template, ids),
            model=backend.name, strategy=self.name, seed=self.seed, verbalizer=scorer.scorer.verbalizer,
            trigger_ids=ids, trigger_tokens=[backend.encoder.decode_trigger(i) for i in ids],
            scores=scores, config=config,
            calibration=None if ev.calibration is None else ev.calibration.to_json(),
            extra={"best_step": best["step"], "seconds": round(seconds, 1), "init_ids": self.init_ids,
                   "distinct_projections": distinct},
        )
