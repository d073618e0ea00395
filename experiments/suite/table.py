"""The 16-shot suite table: human prompts vs every search method whose runs exist under experiments/.

For each task (sst-2, sst-5, agnews, trec) it gathers
* the human prompts' test accuracies (compare.json written by experiments/run_human.sh);
* every ``result.json`` under ``experiments/`` (any study folder) for that task and SmolLM2,
  grouped by method (strategy; a soft run gives two methods: the soft vectors, as the run
  reported them, and their nearest-token projection);
and evaluates each found hard prompt on the same test examples as the human prompts
(first N of the test split, cached in experiments/eval-cache), with a McNemar test
against the best human prompt. It writes ``table.md`` and ``table.json`` next to this
file, and one compare report per task under ``reports/<task>/``.

    .venv/bin/python experiments/suite/table.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from autoprompt_search.errors import UserError
from autoprompt_search.compare import collect_prompts, compare_prompts, load_comparison
from autoprompt_search.models import load_model
from autoprompt_search.report import write_reports
from autoprompt_search.results import PromptResult, atomic_write, write_json
from autoprompt_search.stats import mcnemar

HERE = Path(__file__).resolve().parent
EXPERIMENTS = HERE.parent
TASKS = ("sst-2", "sst-5", "agnews", "trec")
HUMAN = {"sst-2": EXPERIMENTS / "sensitivity" / "sst-2", "agnews": EXPERIMENTS / "sensitivity" / "agnews",
         "sst-5": HERE / "human" / "sst-5", "trec": HERE / "human" / "trec"}
METHODS = {"gradient": "gradient (AutoPrompt)", "optuna": "black-box (Optuna)",
           "soft": "projected soft prompt", "pez": "PEZ"}
SKIP_DIRS = {"suite", "sensitivity", "lama", "eval-cache"}


def found_results(task: str, model: str) -> list[Path]:
    out = []
    for path in sorted(EXPERIMENTS.rglob("result.json")):
        if path.relative_to(EXPERIMENTS).parts[0] in SKIP_DIRS:
            continue
        try:
            res = PromptResult.load(path)
        except Exception as exc:  # a half-written or foreign file: report it, keep going
            print(f"skipping {path}: {exc}")
            continue
        if res.task == task and res.model == model:
            out.append(path)
    return out


def soft_test(backend, task, run: Path, limit: int, best_human: dict) -> dict:
    """Test accuracy of a soft run's vectors on the same examples as the human prompts."""
    from autoprompt_search.softprompt import SoftPrompt, SoftScorer

    try:
        soft = SoftPrompt.load(run)
    except UserError as exc:
        print(f"{run}: no soft vectors to score ({exc})")
        return {"test_accuracy": None, "p_vs_best_human": None}
    scorer = SoftScorer(backend, task, soft.template, soft.verbalizer)
    ev = scorer.evaluate(task.examples("test")[:limit], soft.vectors.to(backend.device), "test")
    return {"test_accuracy": ev.metrics["accuracy"],
            "p_vs_best_human": mcnemar(ev.correct.astype(int), best_human["correct"]).p_exact}


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f} (1 run)"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f} ({len(values)} runs)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get(
        "AUTOPROMPT_SEARCH_DATA", EXPERIMENTS.parents[1] / "shared" / "data")))
    args = ap.parse_args()
    backend = None
    table: dict[str, dict] = {}
    for task in TASKS:
        human_dir = HUMAN[task]
        if not (human_dir / "compare.json").is_file():
            print(f"{task}: no human-prompt results yet ({human_dir}); run experiments/run_human.sh")
            continue
        human = load_comparison(human_dir)
        limit = human.settings["limit"]
        paths = found_results(task, args.model)
        entry = {"n": human.n, "human": human.human_spread["accuracy"], "best_human": human.best_human,
                 "methods": {}}
        best_h = next(r for r in human.rows if r["name"] == human.best_human)
        if paths:
            backend = backend or load_model(args.model)
            task_obj, entries = collect_prompts(task, paths, True, [], data_root=args.data_root)
            comp = compare_prompts(task_obj, entries, model=backend, split="test", limit=limit,
                                   cache_dir=EXPERIMENTS / "eval-cache", progress=True)
            write_reports(comp, HERE / "reports" / task)
            by_source = {r["source"]: r for r in comp.rows}
            for e in entries:
                if e.kind != "found" or e.source not in by_source:
                    continue
                row, res = by_source[e.source], e.result
                method = METHODS.get(res.strategy, res.strategy)
                anchor = res.config.get("anchor_weight") or 0
                soft_name = "soft prompt (vectors)"
                if res.strategy == "soft" and anchor:
                    method += f", anchored {anchor:g}"
                    soft_name += f", anchored {anchor:g}"
                rec = {"run": str(Path(e.source).parent.relative_to(EXPERIMENTS)),
                       "split_seed": res.config.get("data_seed"), "prompt": res.prompt,
                       "test_accuracy": row["accuracy"],
                       "p_vs_best_human": mcnemar(row["correct"], best_h["correct"]).p_exact,
                       "seconds": res.extra.get("seconds"), "perplexity": row["perplexity"]}
                entry["methods"].setdefault(method, []).append(rec)
                if res.strategy == "soft":
                    soft = soft_test(backend, task_obj, Path(e.source).parent, limit, best_h)
                    soft = {**rec, **soft, "dev_accuracy": res.scores.get("dev_accuracy"),
                            "perplexity": None}
                    entry["methods"].setdefault(soft_name, []).append(soft)
        table[task] = entry
    write_json(HERE / "table.json", table)
    atomic_write(HERE / "table.md", render(table, args.model))
    print((HERE / "table.md").read_text())


def render(table: dict, model: str) -> str:
    lines = [f"# 16-shot suite on {model}: test accuracy (%)", "",
             "Human prompts: the task's hand-written prompts (zero-shot, so the split seed does not "
             "change them): best, and mean ± std across the prompts. Methods: mean ± std over the "
             "runs found under experiments/ (one run per split seed and search seed), each found prompt "
             "scored on the same test examples as the human prompts. p: McNemar exact test of each run "
             "against the best human prompt (the smallest and largest p over the runs).", ""]
    methods = sorted({m for e in table.values() for m in e["methods"]})
    header = ["task", "n (test)", "best human", "human mean ± std (k)"] + methods + ["verdict"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, e in table.items():
        h = e["human"]
        cells = [task, str(e["n"]), f"{100 * h['max']:.1f} ({e['best_human']})",
                 f"{100 * h['mean']:.1f} ± {100 * h['std']:.1f} ({h['n']})"]
        verdict = []
        for m in methods:
            runs = e["methods"].get(m, [])
            accs = [r["test_accuracy"] for r in runs if r["test_accuracy"] is not None]
            cell = fmt(accs)
            ps = [r["p_vs_best_human"] for r in runs if r["p_vs_best_human"] is not None]
            if ps:
                cell += f"; p {min(ps):.2g}–{max(ps):.2g}"
            secs = [r["seconds"] for r in runs if r.get("seconds")]
            if secs:
                cell += f"; {statistics.mean(secs):.0f} s/run"
            if not accs and runs:
                devs = [r["dev_accuracy"] for r in runs if r.get("dev_accuracy") is not None]
                cell = f"dev {fmt(devs)} (no test score in the run)" if devs else "-"
            cells.append(cell)
            if accs:
                d = 100 * (statistics.mean(accs) - h["max"])
                sig = sum(1 for r in runs if r["p_vs_best_human"] is not None
                          and r["p_vs_best_human"] < 0.05 and r["test_accuracy"] > h["max"])
                verdict.append(f"{m} {d:+.1f} vs best human ({sig}/{len(accs)} runs significantly better)")
        cells.append("; ".join(verdict) if verdict else "no search runs for this task yet")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs used:", ""]
    for task, e in table.items():
        for m, runs in e["methods"].items():
            for r in runs:
                acc = "-" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}"
                lines.append(f"- {task} · {m} · `{r['run']}` (split seed {r['split_seed']}): "
                             f"test {acc}, prompt `{r['prompt']}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
