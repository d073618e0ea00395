"""Tables of the calibration study from its caches (``python experiments/calibration/study.py table``).

Reads ``test_scores/`` (per-example test class scores of every human prompt, per rule),
``split_scores/`` (train/dev scores and offsets per split seed) and ``verbalizer/``; writes
``table.md`` and ``table.json``. Nothing here runs a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from study import HERE, MODES, accuracy, dev_pick, load_split, load_test, predictions  # noqa: I001

from autoprompt_search.analysis.stats import mcnemar
from autoprompt_search.core.tasks import Task

RULES = ["direct", "channel"]


def _standard(task: Task) -> str:
    """The task file's ``standard`` prompt (the literature's), else its first prompt."""
    raw = yaml.safe_load(Path(task.source).read_text()) if getattr(task, "source", None) else {}
    name = (raw or {}).get("standard")
    return name if name else task.prompts[0].name


def _ms(values: list[float]) -> dict:
    arr = np.asarray(values, float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "values": [round(float(v), 4) for v in arr]}


def _fmt(cell: dict | None) -> str:
    if cell is None:
        return "—"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"


def seed_view(name: str, task: Task, seed: int, rule: str, mode: str) -> dict | None:
    """Per-prompt dev and test accuracies (and test correctness) for one seed, rule and mode."""
    out = {}
    for prompt in task.prompts:
        split, test = load_split(name, seed, prompt.name, rule), load_test(name, prompt.name, rule)
        if split is None or test is None or mode not in split["offsets"]:
            continue
        offsets = split["offsets"][mode]
        gold = np.asarray(test["gold"])
        correct = predictions(test["scores"], offsets) == gold
        out[prompt.name] = {"dev": accuracy(split["dev"], offsets, split["dev_gold"]),
                            "test": float(correct.mean()), "correct": correct}
    return out or None


def task_table(name: str, args) -> dict:
    task = Task.load(name, data_root=args.data_root)
    standard = _standard(task)
    reference = {}  # seed -> correctness of the uncalibrated direct dev-picked prompt
    for seed in args.seeds:
        view = seed_view(name, task, seed, "direct", "none")
        if view:
            pick = dev_pick([(p, v["dev"]) for p, v in view.items()])
            reference[seed] = (pick, view[pick]["correct"])
    cells: dict = {}
    for rule in RULES:
        for mode in MODES:
            per_seed = {k: [] for k in ("standard", "dev_pick", "mean", "std", "min", "max", "oracle")}
            picks, pvals, n_prompts = [], [], set()
            for seed in args.seeds:
                view = seed_view(name, task, seed, rule, mode)
                if not view:
                    continue
                n_prompts.add(len(view))
                tests = [v["test"] for v in view.values()]
                if standard in view:
                    per_seed["standard"].append(view[standard]["test"])
                pick = dev_pick([(p, v["dev"]) for p, v in view.items()])
                picks.append(pick)
                per_seed["dev_pick"].append(view[pick]["test"])
                if seed in reference:
                    pvals.append(_test(view[pick]["correct"], reference[seed][1]))
                per_seed["mean"].append(float(np.mean(tests)))
                per_seed["std"].append(float(np.std(tests, ddof=1)) if len(tests) > 1 else 0.0)
                per_seed["min"].append(min(tests))
                per_seed["max"].append(max(tests))
                per_seed["oracle"].append(max(tests))
            if not per_seed["dev_pick"]:
                continue
            cells[f"{rule}/{mode}"] = {
                **{k: _ms(v) for k, v in per_seed.items() if v},
                "dev_picks": picks, "p_vs_reference": pvals,
                "prompts": sorted(n_prompts), "seeds": len(per_seed["dev_pick"]),
            }
    # joint pick of prompt and calibration mode on dev (direct rule)
    joint, joint_p, joint_picks = [], [], []
    for seed in args.seeds:
        options = []
        views = {mode: seed_view(name, task, seed, "direct", mode) for mode in MODES}
        for prompt in task.prompts:
            for mode in MODES:
                if views[mode] and prompt.name in views[mode]:
                    options.append(((prompt.name, mode), views[mode][prompt.name]["dev"]))
        if not options:
            continue
        prompt_name, mode = dev_pick(options)
        chosen = views[mode][prompt_name]
        joint.append(chosen["test"])
        joint_picks.append(f"{prompt_name}/{mode}")
        if seed in reference:
            joint_p.append(_test(chosen["correct"], reference[seed][1]))
    # verbalizer search from the dev-picked template
    verb, verb_p, verb_rows, verb_s = [], [], [], []
    for seed in args.seeds:
        path = HERE / "verbalizer" / name / f"{seed}.json"
        if not path.exists():
            continue
        rec = json.loads(path.read_text())
        correct = predictions(rec["scores"], rec["offsets"]) == np.asarray(rec["gold"])
        verb.append(float(correct.mean()))
        verb_s.append(rec["search_seconds"])
        verb_rows.append({"seed": seed, "template": rec["template_prompt"],
                          "verbalizer": rec["verbalizer"], "calibrate": rec["calibrate"],
                          "held_out": round(rec["held_out_mean"], 4), "test": round(verb[-1], 4)})
        if seed in reference:
            verb_p.append(_test(correct, reference[seed][1]))
    seconds = {}
    for rule in RULES:
        total = 0.0
        for prompt in task.prompts:
            test = load_test(name, prompt.name, rule)
            if test is not None:
                total += test.get("seconds", 0.0)
        seconds[rule] = round(total, 1)
    return {"task": name, "standard": standard, "cells": cells,
            "reference_picks": {s: p for s, (p, _) in reference.items()},
            "joint": _ms(joint) if joint else None, "joint_picks": joint_picks, "joint_p": joint_p,
            "verbalizer": _ms(verb) if verb else None, "verbalizer_p": verb_p,
            "verbalizer_rows": verb_rows,
            "verbalizer_search_seconds": _ms(verb_s) if verb_s else None,
            "test_scoring_seconds": seconds,
            "test_n": next((len(rec["gold"]) for rec in (load_test(name, p.name, "direct")
                                                          for p in task.prompts) if rec), None)}


def _test(correct, reference) -> list[float]:
    """[p, delta]: McNemar's exact p and the accuracy difference against the reference."""
    test = mcnemar(correct, reference)
    return [round(test.p_exact, 4), round(test.delta, 4)]


def _sig(tests: list[list[float]]) -> str:
    """'+a −b /n': seeds significantly better (a) and worse (b) at p < 0.05, of n."""
    if not tests:
        return "—"
    up = sum(p < 0.05 and d > 0 for p, d in tests)
    down = sum(p < 0.05 and d < 0 for p, d in tests)
    return f"+{up} −{down} /{len(tests)}"


def render(tables: list[dict]) -> str:
    lines = ["# Calibration study — tables", "",
             "SmolLM2-135M-Instruct; test accuracy in % (mean ± std over split seeds 13/21/42) on the",
             "protocol's test subset (1,000 stratified examples, seed 0; TREC: all 500), the same examples",
             "for every prompt. Columns: scoring rule / calibration mode. `dev-picked` = the human prompt",
             "with the best dev accuracy under that column's rule and mode (what a user without test labels",
             "picks); `oracle` = the best human prompt on test (selected on test: an upper reference no user",
             "has). `p<.05` = on how many seeds McNemar's test against the uncalibrated direct dev-picked",
             "prompt of the same seed gives p < 0.05, better (+) or worse (−).", ""]
    for t in tables:
        cols = [c for c in (f"{r}/{m}" for r in RULES for m in MODES) if c in t["cells"]]
        lines += [f"## {t['task']} (standard prompt: `{t['standard']}`; test n = {t['test_n']})", "",
                  "| baseline | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for key, label in (("standard", "standard prompt"), ("dev_pick", "dev-picked human prompt"),
                           ("mean", "human prompts, mean"), ("std", "human prompts, std"),
                           ("min", "human prompts, worst"), ("oracle", "oracle: best on test")):
            lines.append(f"| {label} | " + " | ".join(_fmt(t["cells"][c].get(key)) for c in cols) + " |")
        lines.append("| dev-picked vs uncalibrated dev-picked: seeds with p<.05 | "
                     + " | ".join(_sig(t["cells"][c]["p_vs_reference"]) for c in cols) + " |")
        lines.append("| prompts scored | " + " | ".join(
            "/".join(map(str, t["cells"][c]["prompts"])) for c in cols) + " |")
        lines.append("")
        for c in cols:
            lines.append(f"- dev picks ({c}): {t['cells'][c]['dev_picks']}")
        if t["joint"]:
            lines.append(f"- prompt and calibration picked together on dev (direct): {_fmt(t['joint'])} "
                         f"({t['joint_picks']}; p<.05 vs uncalibrated dev-picked on {_sig(t['joint_p'])} "
                         f"seeds; [p, delta] per seed {t['joint_p']})")
        if t["verbalizer"]:
            lines.append(f"- verbalizer search (cached distributions, 4 folds on train+dev) from the "
                         f"dev-picked template: {_fmt(t['verbalizer'])} (p<.05 vs uncalibrated dev-picked on "
                         f"{_sig(t['verbalizer_p'])} seeds; [p, delta] per seed {t['verbalizer_p']}); search "
                         f"{t['verbalizer_search_seconds']['mean']:.0f} s per seed")
            for row in t["verbalizer_rows"]:
                lines.append(f"  - seed {row['seed']}: `{row['template']}` -> {row['verbalizer']} "
                             f"(calibration {row['calibrate']}, held-out {100 * row['held_out']:.1f}, "
                             f"test {100 * row['test']:.1f})")
        lines.append(f"- compute: scoring every human prompt on the test subset took "
                     f"{t['test_scoring_seconds']} s (one CPU thread)")
        lines.append("")
    return "\n".join(lines)


def write_tables(args) -> None:
    tables = [task_table(name, args) for name in args.tasks]
    (HERE / "table.json").write_text(json.dumps(tables, indent=1, default=str) + "\n")
    (HERE / "table.md").write_text(render(tables) + "\n")
    print(render(tables))
