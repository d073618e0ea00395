"""What each step of the ``auto`` search does, and the state a checkpoint keeps.

The labelled pool is train + dev; its rows are put in a seeded order whose every prefix is
class-stratified, and each row gets a fold (:func:`~.auto_select.nested_order`). A *group* of
new candidates (the start pool, then each edit round's proposals) is scored rung by rung: on the
first ``sizes[0]`` rows of that order, then the better ``1/eta`` on the first ``sizes[1]``
(only the new rows are scored), ... up to every row. After each rung every candidate gets its
cross-validated scores (:func:`~.auto_select.cross_validate`). When a group is done, the next
edit round proposes children of the ``beam`` best candidates: phrase edits (part ``edit``) and
demonstrations (part ``demos``). The search stops after ``rounds`` edit rounds, ``stall_rounds``
rounds without a better cross-validated score, or when the time budget would be passed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from ..core.data import Example
from ..core.errors import UserError
from ..core.templates import Template
from ..scoring.calibration import Calibration, content_free_inputs
from ..scoring.scorer import PromptScorer
from ..scoring.sequence import ScoringRule, needs_sequence
from ..scoring.targets import predict_space
from .auto_candidates import (
    Candidate,
    WordTable,
    edit_template,
    generated_templates,
    matrix_columns,
    phrase_pool,
    propose_demos,
    usable_columns,
    wide_verbalizer,
    word_table,
)
from .auto_scoring import CF_CHUNK, MatrixStore, Request, requests_for, score_jobs
from .auto_select import (
    FIT_ONLY,
    Choice,
    Option,
    Scores,
    choose,
    cross_validate,
    final_choice,
    nested_order,
    promote,
    rung_sizes,
)
from .workers import Design

PMI_ID = -1  # the candidate id of the premise's requests (chunk: 1 with a space before [P], 0 without)


class AutoPlan:
    """The search's candidates, their scores and what comes next (see the module docstring)."""

    def __init__(self, ctx, cfg, seed: int, rng) -> None:
        self.ctx, self.cfg, self.seed, self.rng = ctx, cfg, seed, rng
        self.backend = ctx.backend
        task = self.task = ctx.task
        self.labels = list(task.labels)
        self.train = task.examples("train")
        dev = task.examples("dev") if any(k in task.data for k in ("dev", "builtin", "hub")) else []
        self.pool: list[Example] = self.train + dev
        self.is_dev = [False] * len(self.train) + [True] * len(dev)
        self.train_row = {ex.id: i for i, ex in enumerate(self.train)}
        self.by_class: dict[int, list[int]] = {}
        for ex in self.train:
            self.by_class.setdefault(ex.label, []).append(ex.id)
        gold = [ex.label for ex in self.pool]
        self._check_pool(gold)
        order, folds = nested_order(gold, cfg.folds, seed)
        if cfg.no_cv:
            folds = [0 if d else FIT_ONLY for d in self.is_dev]
        self.order, self.gold, self.folds = order, torch.tensor(gold), torch.tensor(folds)
        per_fold = 2 if cfg.no_cv else cfg.folds
        self.sizes = rung_sizes(len(self.pool), cfg.rungs, cfg.eta, 2 * per_fold * len(self.labels))
        self.table, self.notes = word_table(self.backend, task, not cfg.no_verbalizer,
                                            cfg.neighbours)
        self.phrases = phrase_pool([p.template for p in task.prompts])
        self.store = MatrixStore(len(self.pool))
        self.cands: list[Candidate] = []
        self.work: dict[str, Any] | None = None
        self.round = self.stall = self.generation = 0
        self.round_best: float | None = None
        self.counts = {"scorings": 0, "calibration_passes": 0}
        self.by_part: dict[str, int] = {}
        self.units = self.seconds = 0.0  # cost measured so far (only read with a time budget)
        self.improvements: list[dict[str, Any]] = []
        self.best_id: int | None = None
        self.finished: str | None = None
        self._seen: set[str] = set()
        self._pool = None
        self.row_chars = [sum(len(v) for v in ex.fields.values()) for ex in self.pool]

    # --- setup ------------------------------------------------------------------------
    def _check_pool(self, gold: list[int]) -> None:
        counts = torch.bincount(torch.tensor(gold), minlength=len(self.labels))
        need = 2 if self.cfg.no_cv else self.cfg.folds
        if int(counts.min()) < need:
            missing = [f"{lab} ({int(n)})" for lab, n in zip(self.labels, counts) if n < need]
            raise UserError(f"--strategy auto needs at least {need} labelled examples (train + dev) "
                            f"of each class; {', '.join(missing)} have fewer"
                            + ("" if self.cfg.no_cv else "; use fewer --folds"))
        if self.cfg.no_cv and (not any(self.is_dev) or all(self.is_dev)):
            raise UserError("--no-cv chooses on train and judges on dev: the task needs both splits")

    # --- candidates ---------------------------------------------------------------------
    def _prepared(self, template: str) -> Template:
        return self.backend.encoder.prepare(Template.parse(template, self.task.fields))

    def _usable_columns(self, space: bool) -> list[int]:
        return usable_columns(self.backend, self.table, self.labels, space)

    def _whole_sequence(self, template: str) -> bool:
        """Whether the model reads ``template`` as a whole sequence (text after [P] on a causal
        LM: one forward row per label word, so no screening of many words)."""
        return needs_sequence(self.backend, self._prepared(template), ScoringRule.DIRECT)

    def _seen_key(self, prepared: Template, demos, verbalizer) -> str:
        return json.dumps([repr(prepared.segments), list(demos), verbalizer], sort_keys=True)

    def _new(self, template: str, verbalizer: dict[str, list[str]], part: str, origin: str,
             parent: int | None = None, demos: tuple[int, ...] = ()) -> Candidate | None:
        """A new candidate, or None (a repeat, or one this model cannot read: with a note)."""
        try:
            prepared = self._prepared(template)
        except UserError as exc:
            if part == "human":
                self.notes.append(f"left out human prompt {template!r}: {exc}")
            return None
        key = self._seen_key(prepared, demos, verbalizer)
        if key in self._seen:
            return None
        self._seen.add(key)
        cand = Candidate(len(self.cands), template, verbalizer, part, origin, parent, tuple(demos),
                         self.generation)
        cand.columns = self._usable_columns(predict_space(prepared))
        own = [self.table.index(c, w) for c, lab in enumerate(self.labels) for w in verbalizer[lab]]
        if any(i not in cand.columns for i in own):
            self.notes.append(f"left out {template!r}: this model cannot score its label words")
            return None
        if self._whole_sequence(template):  # one row per word and example: its own words only
            cand.columns = [i for i in cand.columns if i in own]
        cand.columns = matrix_columns(cand, self.table, self.labels)
        self.cands.append(cand)
        return cand

    def start(self) -> None:
        """The start group: human prompts, --template, generated templates."""
        task, cfg = self.task, self.cfg
        for p in task.prompts:
            self._new(p.template, p.verbalizer or task.verbalizer, "human",
                      f"human prompt {p.name or p.template!r}")
        if self.ctx.template:
            self._new(self.ctx.template, task.verbalizer, "human", "--template")
        if not cfg.no_generate:
            for template, origin in generated_templates(task.fields, [p.template for p in task.prompts],
                                                        cfg.generate_max):
                self._new(template, task.verbalizer, "generate", origin)
        if not self.cands:
            raise UserError(f"no start prompt of task '{task.name}' can be read by this model "
                            f"({'; '.join(self.notes) or 'the task lists no human prompts'})")
        self.work = {"phase": "start", "generation": 0, "rung": 0, "ids": [c.id for c in self.cands]}

    def _propose(self) -> list[Candidate]:
        """One edit round's children of the beam's candidates."""
        cfg, new = self.cfg, []
        parents = self.ranked()[:cfg.beam]
        if not parents:
            return []
        if not cfg.no_edit:
            tries, made = 0, 0
            while made < cfg.edits and tries < 20 * max(1, cfg.edits):
                parent = parents[tries % len(parents)]
                tries += 1
                out = edit_template(parent.template, self.phrases, self.rng)
                if out is not None:
                    c = self._new(out[0], parent.verbalizer, "edit", f"{out[1]} (from #{parent.id})",
                                  parent.id, parent.demos)
                    if c is not None:
                        new.append(c)
                        made += 1
        if not cfg.no_demos and cfg.max_demos:
            tries, made = 0, 0
            while made < cfg.demo_proposals and tries < 20 * max(1, cfg.demo_proposals):
                parent = parents[tries % len(parents)]
                tries += 1
                out = propose_demos(parent.demos, self.by_class, cfg.max_demos, self.rng)
                if out is not None:
                    verbalizer = parent.verbalizer if parent.demos else self.verbalizer_of(
                        parent, self.refit(parent).option)
                    c = self._new(parent.template, verbalizer, "demos", f"{out[1]} (from #{parent.id})",
                                  parent.id, out[0])
                    if c is not None:
                        new.append(c)
                        made += 1
        return new

    # --- scores ---------------------------------------------------------------------------
    def rows(self, cand: Candidate, rung: int) -> list[int]:
        demo_rows = {self.train_row[i] for i in cand.demos}
        return [r for r in self.order[:self.sizes[rung]] if r not in demo_rows]

    def design(self, cand: Candidate) -> Design:
        return Design(cand.template, wide_verbalizer(cand.columns, self.table, self.labels),
                      demos=tuple(self.train[self.train_row[i]] for i in cand.demos))

    def content_free(self, cand: Candidate) -> tuple[Example, ...]:
        """The content-free inputs of ``cand``'s prompt, as ``estimate_calibration`` builds them."""
        scorer = PromptScorer(self.backend, self.task, cand.template, cand.verbalizer)
        fields = list(scorer.template.field_names)
        return tuple(Example({f: text for f in fields}, -1, id=-1 - i)
                     for i, text in enumerate(content_free_inputs(scorer)))

    def _space(self, cand: Candidate) -> bool:
        return predict_space(self._prepared(cand.template))

    def _screens(self, cand: Candidate) -> bool:
        """Whether ``cand`` chooses among verbalizers (not with demonstrations, which show its
        own, nor for a template read as a whole sequence)."""
        return not self.cfg.no_verbalizer and not cand.demos and not self._whole_sequence(cand.template)

    def options(self, cand: Candidate) -> list[Option]:
        """The verbalizers a candidate chooses among (its own only, unless it screens)."""
        task = self.task
        named = [("own", cand.verbalizer)]
        if self._screens(cand):
            named.append(("task", task.verbalizer))
            named += [(f"human:{p.name or i}", p.verbalizer) for i, p in enumerate(task.prompts)
                      if p.verbalizer]
            named.append(("names", {lab: [lab.replace("_", " ")] for lab in self.labels}))
        pos = {t: j for j, t in enumerate(cand.columns)}
        out, seen = [], set()
        for name, verb in named:
            words = tuple(tuple(pos.get(self.table.index(c, w), -1) for w in verb[lab])
                          for c, lab in enumerate(self.labels))
            if all(j >= 0 for cols in words for j in cols) and words not in seen:
                seen.add(words)
                out.append(Option(name, words))
        return out

    def scores(self, cand: Candidate, rows: list[int]) -> Scores:
        idx = torch.tensor(rows, dtype=torch.long)
        modes = self.cfg.modes
        pmi = self.store.pmi.get(int(self._space(cand))) if Calibration.PMI in modes else None
        return Scores(self.store.m[cand.id][idx], self.gold[idx], self.folds[idx], self.options(cand),
                      len(self.labels), self.store.cf.get(cand.id) if Calibration.CONTENT_FREE in modes
                      else None, None if pmi is None else pmi[cand.columns],
                      screen=self._screens(cand),
                      column_class=[self.table.words[i].cls for i in cand.columns])

    def refit(self, cand: Candidate) -> Choice:
        """The candidate's verbalizer and calibration chosen on all its scored rows."""
        rows = self.rows(cand, cand.rung)
        return choose(self.scores(cand, rows), torch.arange(len(rows)), self.cfg.modes,
                      self.cfg.objective, self.cfg.balance)

    def verbalizer_of(self, cand: Candidate, option: Option) -> dict[str, list[str]]:
        return {lab: [self.table.words[cand.columns[j]].word for j in option.words[c]]
                for c, lab in enumerate(self.labels)}

    def _requests(self, ids: list[int], rung: int) -> tuple[list[Request], float]:
        """What scoring ``ids`` on ``rung`` needs (new rows, content-free inputs, the premise) and
        its cost in estimated tokens."""
        cfg, reqs, units = self.cfg, [], 0.0
        for cid in ids:
            cand = self.cands[cid]
            design = self.design(cand)
            have = self.store.scored(cid)
            rows = [r for r in self.rows(cand, rung) if r not in have]
            reqs += requests_for(cid, design, rows, self.pool, cfg.batch_size)
            extra = len(cand.template) + sum(self.row_chars[self.train_row[i]] + 12 for i in cand.demos)
            units += sum(self.row_chars[r] + extra for r in rows) / 4
            if Calibration.CONTENT_FREE in cfg.modes and cid not in self.store.cf:
                reqs.append(Request(cid, CF_CHUNK, design, (), self.content_free(cand)))
        if Calibration.PMI in cfg.modes:
            for space in sorted({self._space(self.cands[c]) for c in ids}):
                if int(space) not in self.store.pmi:
                    cols = self._usable_columns(space)
                    premise = cfg.premise.rstrip() + (" " if space else "") + "[P]"
                    reqs.append(Request(PMI_ID, int(space), Design(premise, wide_verbalizer(
                        cols, self.table, self.labels)), (), (Example({}, -1, id=-1),)))
        return reqs, units

    def _store_results(self, reqs: list[Request], done: dict, failed: dict[int, str]) -> None:
        for r in reqs:
            out = done.get((r.cid, r.chunk))
            if out is None:
                continue
            if r.cid == PMI_ID:
                full = torch.full((len(self.table.words),), float("nan"))
                full[self._usable_columns(bool(r.chunk))] = out[0]
                self.store.pmi[r.chunk] = full
            elif r.chunk == CF_CHUNK:
                self.store.cf[r.cid] = out
            else:
                self.store.matrix(r.cid, len(self.cands[r.cid].columns))[list(r.rows)] = out
                part = self.cands[r.cid].part
                self.counts["scorings"] += len(r.rows)
                self.by_part[part] = self.by_part.get(part, 0) + len(r.rows)
            if r.cid == PMI_ID or r.chunk == CF_CHUNK:
                self.counts["calibration_passes"] += len(r.examples)
        for (cid, chunk), why in sorted(failed.items()):
            if cid == PMI_ID:
                self.notes.append(f"calibration pmi left out: the premise cannot be scored ({why})")
                self.store.pmi[chunk] = torch.full((len(self.table.words),), float("nan"))
            elif chunk == CF_CHUNK:  # no content-free calibration for this prompt
                self.store.cf[cid] = torch.zeros(0, len(self.cands[cid].columns))
            elif self.cands[cid].failed is None:
                self.cands[cid].failed = why

    # --- the step -----------------------------------------------------------------------
    def step(self, elapsed: float) -> dict[str, Any]:
        """Score the current group on its rung (planning the next edit round first if needed)."""
        if self.finished is None and self.work is None:
            self._plan_round()
        if self.finished is not None:
            return {"phase": "stop", "reason": self.finished}
        work, cfg = self.work, self.cfg
        rung = work["rung"]
        ids = [i for i in work["ids"] if self.cands[i].failed is None]
        reqs, units = self._requests(ids, rung)
        if cfg.time_budget and self.units > 0:
            reserve = self.seconds / self.units * cfg.ensemble * sum(self.row_chars[r] for r in range(
                len(self.pool)) if self.is_dev[r]) / 4
            needed = units * self.seconds / self.units
            if elapsed + needed + reserve > cfg.time_budget:
                self.finished = "time"
                return {"phase": "stop", "reason": "time", "needed_seconds": round(needed, 1)}
        start = time.perf_counter()
        done, failed = score_jobs(self.pool_of_workers(), reqs)
        self.seconds += time.perf_counter() - start
        self.units += units
        self._store_results(reqs, done, failed)
        scored = []
        for cid in ids:
            cand = self.cands[cid]
            if cand.failed is not None:
                continue
            cand.cv = cross_validate(self.scores(cand, self.rows(cand, rung)), cfg.modes, cfg.objective,
                                     cfg.balance, cfg.spread_penalty).to_json()
            cand.rung = rung
            scored.append(cid)
        record = {"phase": work["phase"], "generation": work["generation"], "round": self.round,
                  "rung": rung, "rows": self.sizes[rung],
                  "scored": [self._summary(self.cands[i]) for i in scored],
                  "failed": [{"id": i, "error": self.cands[i].failed} for i in ids if i not in scored]}
        if rung + 1 < len(self.sizes) and scored:
            keep = promote([(i, self.cands[i].fitness) for i in scored], cfg.eta)
            humans = [i for i in scored if self.cands[i].part == "human"]
            if humans and not set(humans) & set(keep):  # the best human prompt is always judged
                keep.append(promote([(i, self.cands[i].fitness) for i in humans], len(humans))[0])
            self.work = {**work, "rung": rung + 1, "ids": keep}
            record["promoted"] = keep
        else:
            self.work = None
            if work["phase"] == "edit":
                self.round += 1
                best = self.best()
                improved = best is not None and (self.round_best is None or best.score > self.round_best)
                self.stall = 0 if improved else self.stall + 1
        self._track_best(record)
        record.update(scorings=self.counts["scorings"])
        return record

    def _plan_round(self) -> None:
        cfg = self.cfg
        if self.round >= cfg.rounds:
            self.finished = "rounds"
        elif cfg.stall_rounds and self.stall >= cfg.stall_rounds:
            self.finished = "stalled"
        elif cfg.no_edit and (cfg.no_demos or not cfg.max_demos):
            self.finished = "nothing to edit"
        if self.finished is not None:
            return
        best = self.best()
        self.round_best = None if best is None else best.score
        self.generation += 1
        new = self._propose()
        if not new:
            self.finished = "no new proposals"
            return
        self.work = {"phase": "edit", "generation": self.generation, "rung": 0, "ids": [c.id for c in new]}

    def _summary(self, cand: Candidate) -> dict[str, Any]:
        return {"id": cand.id, "part": cand.part, "origin": cand.origin, "template": cand.template,
                "demos": list(cand.demos), "cv": cand.cv["score"], "fitness": cand.cv["fitness"],
                "picks": cand.cv["picks"]}

    def _track_best(self, record: dict[str, Any]) -> None:
        best = self.best()
        if best is None:
            return
        record["best_cv"] = round(best.score, 6)
        if best.id != self.best_id:
            change = {"id": best.id, "part": best.part, "origin": best.origin, "template": best.template,
                      "cv_score": round(best.score, 6), "rung": best.rung,
                      "previous": self.best_id}
            self.improvements.append(change)
            record["new_best"] = change
            self.best_id = best.id

    # --- choosing ---------------------------------------------------------------------------
    def ranked(self) -> list[Candidate]:
        """Candidates on the highest rung any reached, best first (cv score, fitness, id)."""
        done = [c for c in self.cands if c.cv is not None and c.failed is None]
        if not done:
            return []
        top = max(c.rung for c in done)
        rest = [c for c in done if c.rung == top]
        out = []
        while rest:
            pick = final_choice([(c.id, c.score, c.fitness) for c in rest])
            out.append(self.cands[pick])
            rest = [c for c in rest if c.id != pick]
        return out

    def best(self) -> Candidate | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    # --- workers and state ------------------------------------------------------------------
    def pool_of_workers(self):
        if self._pool is None:
            from .blackbox import worker_recipe
            from .workers import make_pool

            cfg, ctx = self.cfg, self.ctx
            self._pool = make_pool(cfg.workers, backend=ctx.backend, recipe=worker_recipe(ctx, cfg),
                                   task=ctx.task, batch_size=cfg.batch_size,
                                   address=cfg.ray_address or None, per_actor=cfg.per_actor)
        return self._pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def state_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        data = {"cands": [c.to_json() for c in self.cands], "work": self.work, "round": self.round,
                "stall": self.stall, "generation": self.generation, "round_best": self.round_best,
                "counts": self.counts, "by_part": self.by_part, "units": self.units,
                "seconds": self.seconds, "improvements": self.improvements, "best_id": self.best_id,
                "notes": self.notes, "table": self.table.to_json()}
        return data, self.store.tensors()

    def load_state_dict(self, data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if WordTable.from_json(data["table"]).words != self.table.words:
            raise ValueError("the label-word table differs from the checkpoint's (another model?)")
        self.cands = [Candidate.from_json(c) for c in data["cands"]]
        for key in ("work", "round", "stall", "generation", "round_best", "counts", "by_part", "units",
                    "seconds", "improvements", "best_id", "notes"):
            setattr(self, key, data[key])
        self.store = MatrixStore.from_tensors(len(self.pool), tensors)
        self._seen = {self._seen_key(self._prepared(c.template), c.demos, c.verbalizer) for c in self.cands}
        self.finished = None  # budgets may have been raised for the resumed run

    def result(self, strategy: str, state) -> Any:
        from .auto_result import build_result

        return build_result(self, strategy, state)

