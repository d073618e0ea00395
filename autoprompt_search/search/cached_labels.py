"""``search-labels --mode cached``: verbalizers screened from one cached pass, chosen by folds.

Gathers the candidate label words (:func:`gather_candidates`), caches the train + dev examples'
distributions at [P] once (:func:`~autoprompt_search.scoring.distributions.cache_distributions`)
and lets :func:`~autoprompt_search.search.verbalizers.cross_validate` pick and choose; the probe's
words are refit on each fold's in-fold examples. See :mod:`autoprompt_search.search.verbalizers`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import yaml

from ..core.errors import UserError
from ..core.results import atomic_write, provenance, write_json
from ..core.tasks import Task
from ..core.tokens import allowed_token_mask
from ..models.base import LMBackend
from ..scoring.distributions import cache_distributions
from ..scoring.targets import predict_space
from .labels import class_token_scores, label_design, predict_features, rank_probe_words, train_probe
from .verbalizers import Calibration, Candidate, Setting, cross_validate, label_words_of, stratified_folds


@dataclass
class CachedLabelResult:
    """The chosen verbalizer, the setting it was chosen with and every fold's scores."""

    task: str
    model: str
    template: str
    verbalizer: dict[str, list[str]]
    setting: str
    calibrate: str  # the chosen setting's calibration (the words should be scored with it)
    held_out_mean: float
    held_out_std: float
    in_sample_accuracy: float  # on the examples the words were picked on (optimistic)
    settings: list[dict]
    candidates: list[dict]  # the final pick's candidates with their contrast scores
    fold_candidates: list[dict]  # per fold, the candidates' in-fold contrast scores
    notes: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_yaml(self) -> str:
        """A YAML document whose ``verbalizer`` block can be pasted into a task file."""
        header = (f"# label words found by autoprompt-search search-labels --mode cached\n"
                  f"# task {self.task}, model {self.model}, template {self.template!r}\n"
                  f"# chosen setting {self.setting}: held-out accuracy {self.held_out_mean:.3f} "
                  f"+- {self.held_out_std:.3f} over {len(self.settings[0]['held_out'])} folds\n"
                  + ("# chosen with train-prior calibration: score these words with it too\n"
                     if self.calibrate != Calibration.NONE.value else ""))
        body = {"verbalizer": self.verbalizer,
                "search_labels": {"mode": "cached", "setting": self.setting,
                                  "calibrate": self.calibrate, "held_out_mean": round(self.held_out_mean, 4),
                                  "held_out_std": round(self.held_out_std, 4),
                                  "config": self.config,
                                  "versions": {k: str(v) for k, v in provenance().items()}}}
        return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)

    def to_json(self) -> dict:
        return {**asdict(self), "versions": {k: str(v) for k, v in provenance().items()}}

    def label_words_args(self) -> str:
        return " ".join(f"--label-words '{lab}={','.join(words)}'"
                        for lab, words in self.verbalizer.items())

    def save(self, path, json_path=None) -> None:
        atomic_write(path, self.to_yaml())
        if json_path is not None:
            write_json(json_path, self.to_json())


def _candidate(backend: LMBackend, word: str, cls: int, label: str, space: bool, source: str,
               notes: list[str]) -> Candidate | None:
    """The candidate, or None (with a note) when this model cannot score the word at [P]."""
    try:
        ids = tuple(backend.encoder.label_ids(word, space))
        backend.check_label_word(word, label, ids)
    except UserError as exc:
        notes.append(f"left out {source} word {word!r} of class {label!r}: {exc}")
        return None
    return Candidate(word, cls, ids, source)


def embedding_neighbours(backend: LMBackend, token_id: int, allowed: torch.Tensor, n: int,
                         space: bool) -> list[tuple[str, int]]:
    """The ``n`` allowed tokens nearest to ``token_id`` by input-embedding cosine (itself left
    out) that re-tokenise to themselves at [P], as (word, token id)."""
    emb = backend.input_embeddings().detach().float()
    emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    sim = (emb @ emb[token_id]).cpu().masked_fill(~allowed, -torch.inf)
    sim[token_id] = -torch.inf
    out = []
    for tid in torch.sort(sim, descending=True, stable=True).indices.tolist():
        if len(out) == n or not torch.isfinite(sim[tid]):
            break
        word = backend.tokenizer.convert_ids_to_tokens(tid)
        word = backend.tokenizer.convert_tokens_to_string([word]).strip()
        if word and tuple(backend.encoder.label_ids(word, space)) == (tid,):
            out.append((word, tid))
    return out


def gather_candidates(backend: LMBackend, task: Task, space: bool, allowed: torch.Tensor, *,
                      user: dict[str, list[str]] | None = None, neighbours: int = 5,
                      ) -> tuple[list[Candidate], list[str]]:
    """(the candidates of every class, notes on words left out): the class name, the task's
    label words, the user's words and the embedding neighbours of the first of them that is
    one token (leaving out tokens named for another class), without repeats."""
    user = user or {}
    unknown = sorted(set(user) - set(task.labels))
    if unknown:
        raise UserError(f"--candidates names class(es) {', '.join(unknown)} that task "
                        f"'{task.name}' does not have (its classes: {', '.join(task.labels)})")
    notes: list[str] = []
    found: list[Candidate | None] = []
    for c, label in enumerate(task.labels):
        found.append(_candidate(backend, label.replace("_", " "), c, label, space, "class-name",
                                notes))
        found += [_candidate(backend, w, c, label, space, "verbalizer", notes)
                  for w in task.verbalizer.get(label, [])]
        found += [_candidate(backend, w, c, label, space, "user", notes) for w in user.get(label, [])]
    named = [f for f in found if f is not None]
    for c, label in enumerate(task.labels):
        anchor = next((f for f in named if f.cls == c and len(f.ids) == 1), None)
        if not neighbours:
            continue
        if anchor is None:
            notes.append(f"no embedding neighbours for class {label!r}: neither its name nor "
                         "its label words are a single token")
            continue
        # a token named for another class is no neighbour of this one
        others = allowed.clone()
        others[[f.ids[0] for f in named if f.cls != c and len(f.ids) == 1]] = False
        found += [Candidate(w, c, (t,), "neighbour")
                  for w, t in embedding_neighbours(backend, anchor.ids[0], others, neighbours,
                                                   space)]
    seen, cands = set(), []
    for cand in found:
        if cand is not None and (cand.cls, cand.ids) not in seen:
            seen.add((cand.cls, cand.ids))
            cands.append(cand)
    return cands, notes


def search_label_words_cached(
    backend: LMBackend,
    task: Task,
    template: str | None = None,
    *,
    candidates: dict[str, list[str]] | None = None,
    neighbours: int = 5,
    probe_words: int = 3,
    per_class: int = 4,
    max_words: int = 2,
    folds: int = 4,
    spread_penalty: float = 0.5,
    calibrations: Sequence[Calibration] = (Calibration.NONE,),
    cache_top_k: int | None = None,
    triggers: Sequence[int] | None = None,
    init_word: str = "the",
    l2: float = 1e-2,
    whole_words: bool = True,
    ascii_only: bool = True,
    deny: Iterable[str] = (),
    seed: int = 0,
) -> CachedLabelResult:
    """Choose a verbalizer for ``template`` from one cached pass over train + dev (see the
    module docstring); ``probe_words=0`` leaves the probe out."""
    for name, value, low in (("--per-class", per_class, 1), ("--max-words", max_words, 1),
                             ("--neighbours", neighbours, 0), ("--probe-words", probe_words, 0)):
        if value < low:
            raise UserError(f"{name} must be at least {low}, got {value}")
    if spread_penalty < 0:
        raise UserError(f"--spread-penalty must be at least 0, got {spread_penalty}")
    template, _, scorer, triggers = label_design(backend, task, template, triggers, init_word)
    examples = task.examples("train") + task.examples("dev")
    missing = [lab for c, lab in enumerate(task.labels) if c not in {ex.label for ex in examples}]
    if missing:
        raise UserError(f"train + dev have no example of class(es) {', '.join(missing)}")
    space = predict_space(scorer.template)
    allowed = allowed_token_mask(backend.tokenizer, backend.vocab_size, whole_words=whole_words,
                                 ascii_only=ascii_only, deny=list(deny))
    cands, notes = gather_candidates(backend, task, space, allowed, user=candidates,
                                     neighbours=neighbours)
    start = time.perf_counter()
    cache = cache_distributions(scorer, examples, triggers, words=[c.ids for c in cands],
                                top_k=cache_top_k)
    cache_s = time.perf_counter() - start
    extra = None
    if probe_words:
        feats = predict_features(backend, scorer, examples, triggers)
        out_emb = backend.model.get_output_embeddings().weight.detach().float().cpu()

        def extra(rows: torch.Tensor) -> list[Candidate]:
            w, _ = train_probe(feats[rows], cache.gold[rows], cache.num_classes, l2=l2)
            ranked = rank_probe_words(backend, class_token_scores(out_emb, w), allowed, space,
                                      probe_words)
            return [Candidate(word, c, (tid,), "probe") for c, words in enumerate(ranked)
                    for word, _, tid in words]

    settings = [Setting(m, Calibration(cal)) for m in range(1, max_words + 1) for cal in calibrations]
    start = time.perf_counter()
    chosen, final, final_cands, reports, fold_candidates = cross_validate(
        cache, cands, settings, stratified_folds(cache.gold, folds, seed), per_class=per_class,
        spread_penalty=spread_penalty, extra=extra)
    select_s = time.perf_counter() - start
    report = next(r for r in reports if r.setting == chosen.name())
    used = {i for idx in final.chosen for i in idx}
    return CachedLabelResult(
        task=task.name, model=backend.name, template=template,
        verbalizer=final.verbalizer(final_cands, task.labels), setting=chosen.name(),
        calibrate=chosen.calibrate.value,
        held_out_mean=report.mean, held_out_std=report.std, in_sample_accuracy=final.accuracy,
        settings=[asdict(r) for r in reports],
        candidates=[{**asdict(c), "ids": list(c.ids), "label": task.labels[c.cls],
                     "contrast": final.contrast[i], "chosen": i in used}
                    for i, c in enumerate(final_cands)],
        fold_candidates=fold_candidates, notes=notes,
        timing={"cache_seconds": round(cache_s, 3), "select_seconds": round(select_s, 3),
                "examples": len(cache), "label_words": list(map(list, label_words_of(
                    final_cands, final.chosen, cache.num_classes).word_ids))},
        config={"mode": "cached", "per_class": per_class, "max_words": max_words,
                "folds": folds, "spread_penalty": spread_penalty,
                "calibrations": [Calibration(c).value for c in calibrations],
                "neighbours": neighbours, "probe_words": probe_words, "l2": l2,
                "cache_top_k": cache_top_k, "whole_words": whole_words,
                "ascii_only": ascii_only, "deny": list(deny), "seed": seed,
                "triggers": list(triggers), "candidates": candidates or {},
                "data_seed": task.data_seed if not task.data.get("hub") else None},
    )
