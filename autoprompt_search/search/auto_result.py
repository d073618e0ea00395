"""The ``auto`` search's result: the chosen prompt (or ensemble), refit on every labelled row.

The final candidate is the best by cross-validated score on the last rung (:func:`.auto_select
.final_choice`); its verbalizer and calibration are chosen again on all its rows (the fold
choices only judged the procedure) and stored as a normal :class:`PromptResult` -- template,
verbalizer, demonstrations (``fewshot``) and a :class:`CalibrationRecord` with its offsets -- so
``evaluate --prompt-file``, ``compare`` and ``export`` read it as any other. With ``--ensemble K``
the top K are stored under ``extra["ensemble"]`` with their weights and scored as one predictor.
The dev accuracy it reports is computed through the same path ``evaluate`` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from ..core.results import PromptResult, task_reference
from ..scoring.calibration import Calibration, CalibrationRecord, content_free_inputs
from ..scoring.evaluation import evaluate_ensemble, evaluate_prompt
from ..scoring.scorer import PromptScorer
from ..scoring.specs import result_spec, spec_calibration
from .auto_select import Choice, ensemble_cv, ensemble_weights

if TYPE_CHECKING:
    from .auto_candidates import Candidate
    from .auto_plan import AutoPlan

ENSEMBLE_RULE = ("predict argmax_c sum_k weight_k * log_softmax_c(log p_k(c|x) - offset_k,c): each "
                 "member's calibrated class scores renormalised over the classes, weighted, summed")


def calibration_record(plan: AutoPlan, cand: Candidate, choice: Choice, rows: int) -> CalibrationRecord | None:
    """The stored form of a chosen calibration (None: uncalibrated)."""
    mode = choice.mode
    if mode is Calibration.NONE:
        return None
    offsets = [float(o) for o in choice.offsets]
    labels = plan.labels
    if mode is Calibration.CONTENT_FREE:
        scorer = PromptScorer(plan.backend, plan.task, cand.template, cand.verbalizer)
        inputs = content_free_inputs(scorer)
        return CalibrationRecord(mode, offsets, labels, "mean class distribution of the prompt with "
                                 "content-free inputs", inputs, len(inputs))
    if mode is Calibration.TRAIN_PRIOR:
        return CalibrationRecord(mode, offsets, labels, f"mean class distribution over {rows} "
                                 "labelled inputs of train + dev (labels unused; the prompt's "
                                 "demonstrations left out)", [], rows)
    premise = plan.cfg.premise
    return CalibrationRecord(mode, offsets, labels, f"label words' probability after the domain "
                             f"premise {premise!r}", [premise], 1)


def _fewshot(cand: Candidate) -> dict[str, Any] | None:
    if not cand.demos:
        return None
    return {"instruction": "", "demo_ids": list(cand.demos), "split": "train", "separator": "\n"}


def _provenance(plan: AutoPlan, cand: Candidate) -> list[dict[str, Any]]:
    """The candidate's line of descent, first ancestor first: which part made each step."""
    chain = []
    while cand is not None:
        chain.append({"id": cand.id, "part": cand.part, "origin": cand.origin,
                      "template": cand.template, "demos": list(cand.demos),
                      "cv_score": None if cand.cv is None else cand.cv["score"], "rung": cand.rung})
        cand = plan.cands[cand.parent] if cand.parent is not None else None
    return chain[::-1]


def build_result(plan: AutoPlan, strategy: str, state) -> PromptResult:
    cfg, ctx = plan.cfg, plan.ctx
    ranked = plan.ranked()
    if not ranked:
        why = "; ".join(f"{c.template!r}: {c.failed}" for c in plan.cands if c.failed) or \
            "the time budget ended before any was scored"
        raise UserError(f"no candidate prompt could be scored ({why})")
    members = ranked[:cfg.ensemble]
    top = members[0]
    choices = [plan.refit(c) for c in members]
    verbs = [plan.verbalizer_of(c, ch.option) for c, ch in zip(members, choices)]
    records = [calibration_record(plan, c, ch, len(plan.rows(c, c.rung)))
               for c, ch in zip(members, choices)]
    humans = [c for c in ranked if c.part == "human"]
    scores = {"cv_score": top.score, "cv_mean": top.cv["mean"], "cv_std": top.cv["std"],
              "pool_accuracy": choices[0].accuracy}
    if humans:
        scores["best_human_cv_score"] = humans[0].score
    parts = {}
    for c in plan.cands:
        parts[c.part] = parts.get(c.part, 0) + 1
    extra: dict[str, Any] = {
        "candidate": top.id, "provenance": _provenance(plan, top),
        "choice": {"verbalizer": choices[0].option.name, "calibration": choices[0].mode.value},
        "cv": top.cv, "selection": "dev (--no-cv)" if cfg.no_cv else f"{cfg.folds}-fold over train + dev",
        "rung_sizes": plan.sizes, "rung": top.rung, "candidates": len(plan.cands),
        "candidates_by_part": parts, "scorings": plan.counts["scorings"],
        "scorings_by_part": plan.by_part, "calibration_passes": plan.counts["calibration_passes"],
        "rounds": plan.round, "stopped": plan.finished or getattr(state.stopped, "value", None),
        "improvements": plan.improvements, "best_human": humans[0].origin if humans else None,
        "parts": {name: not getattr(cfg, f"no_{name}") for name in
                  ("generate", "edit", "verbalizer", "demos", "calibration", "cv")},
        "labelled_rows": len(plan.pool), "notes": plan.notes,
        "seconds": round(state.elapsed, 3),
    }
    if len(members) > 1:
        weights = ensemble_weights([c.cv["mean"] for c in members], len(plan.labels))
        common = sorted(set.intersection(*(set(plan.rows(c, c.rung)) for c in members)))
        ecv = ensemble_cv([plan.scores(c, common) for c in members], weights, cfg.modes,
                          cfg.objective, cfg.balance, cfg.spread_penalty)
        scores["ensemble_cv_score"], scores["ensemble_cv_mean"] = ecv.score, ecv.mean
        extra["ensemble"] = {"rule": ENSEMBLE_RULE, "cv": ecv.to_json(), "members": [
            {"candidate": c.id, "template": c.template, "prompt": c.template, "verbalizer": v,
             "fewshot": _fewshot(c), "calibration": None if r is None else r.to_json(),
             "weight": w, "cv_score": c.score, "part": c.part}
            for c, v, r, w in zip(members, verbs, records, weights)]}
    result = PromptResult(
        task=task_reference(ctx.task), template=top.template, prompt=top.template, model=ctx.model,
        strategy=strategy, seed=plan.seed, verbalizer=verbs[0], fewshot=_fewshot(top),
        scores=scores, calibration=None if records[0] is None else records[0].to_json(), extra=extra)
    if any(plan.is_dev):  # the saved prompt's dev score, through the path `evaluate` takes
        spec = result_spec(result, ctx.task)
        if spec.ensemble:
            ev = evaluate_ensemble(plan.backend, spec, "dev", batch_size=cfg.batch_size)
        else:
            ev = evaluate_prompt(plan.backend, spec.task, spec.template, "dev",
                                 verbalizer=spec.verbalizer, fewshot=spec.fewshot,
                                 batch_size=cfg.batch_size, calibration=spec_calibration(spec, None))
        scores["dev_accuracy"] = ev.metrics["accuracy"]
    return result
