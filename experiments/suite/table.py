"""The 16-shot suite table: human prompts vs every search method whose runs exist under experiments/.

For each task (sst-2, sst-5, agnews, trec) it gathers
* the human prompts' test accuracies (compare.json written by experiments/run_human.sh);
* every ``result.json`` under ``experiments/`` (any study folder) for that task and SmolLM2,
  grouped by method (strategy; a soft run gives two methods: the soft vectors, as the run
  reported them, and their nearest-token projection);
and evaluates each found hard prompt on the same test examples as the human prompts
(a seeded stratified sample of N test examples since issue 11 -- the first N before --, cached
in experiments/eval-cache), with a McNemar test against the human prompt a user would pick
(best on dev, from compare's human baselines), not against the best human prompt on test
(the oracle, shown for reference). It writes ``table.md`` and ``table.json`` next to this
file, and one compare report per task under ``reports/<task>/``.

    .venv/bin/python experiments/suite/table.py
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from autoprompt_search.analysis.compare import collect_prompts, compare_prompts, load_comparison
from autoprompt_search.analysis.report import write_reports
from autoprompt_search.analysis.stats import mcnemar
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult, atomic_write, write_json
from autoprompt_search.core.sampling import stratified_sample
from autoprompt_search.models import load_model

HERE = Path(__file__).resolve().parent
EXPERIMENTS = HERE.parent
TASKS = ("sst-2", "sst-5", "agnews", "trec")
HUMAN = {"sst-2": EXPERIMENTS / "sensitivity" / "sst-2", "agnews": EXPERIMENTS / "sensitivity" / "agnews",
         "sst-5": HERE / "human" / "sst-5", "trec": HERE / "human" / "trec"}
METHODS = {"gradient": "gradient (AutoPrompt)", "optuna": "black-box (Optuna)",
           "soft": "projected soft prompt", "pez": "PEZ"}
SKIP_DIRS = {"sensitivity", "lama", "eval-cache", "waywardness"}  # waywardness: its own table


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


def soft_test(backend, task, run: Path, limit: int, selected: dict) -> dict:
    """Test accuracy of a soft run's vectors on the same examples as the human prompts, and the
    McNemar p against the dev-selected human prompt (its compare row)."""
    from autoprompt_search.scoring.softprompt import SoftPrompt, SoftScorer

    try:
        soft = SoftPrompt.load(run)
    except UserError as exc:
        print(f"{run}: no soft vectors to score ({exc})")
        return {"test_accuracy": None, "p_vs_selected": None}
    scorer = SoftScorer(backend, task, soft.template, soft.verbalizer)
    examples = stratified_sample(task.examples("test"), limit, 0)  # the examples compare scores
    ev = scorer.evaluate(examples, soft.vectors.to(backend.device), "test")
    return {"test_accuracy": ev.metrics["accuracy"],
            "p_vs_selected": mcnemar(ev.correct.astype(int), selected["correct"]).p_exact}


def human_block(comp) -> dict | None:
    """compare's human baselines under the mode the human rows were scored with (standard,
    selected, spread, oracle); None for a compare.json written before the baselines existed."""
    base = comp.baselines
    if not base:
        return None
    block = next(b for b in base["variants"] if b["calibration"] == base["primary"])
    return {"standard": block["standard"], "selected": block["selected"],
            "spread": block["spread"]["accuracy"], "oracle": block["oracle"]}


def framing(res: PromptResult, task) -> str:
    """Instruction, demonstrations and label words of a found prompt, when it has its own."""
    out = ""
    if res.fewshot:
        if res.fewshot.get("instruction"):
            out += f", instruction `{res.fewshot['instruction']}`"
        if res.fewshot.get("demo_ids"):
            out += f", {len(res.fewshot['demo_ids'])} demonstrations"
    if res.verbalizer and res.verbalizer != task.verbalizer:
        out += ", label words " + "/".join(",".join(w) for w in res.verbalizer.values())
    return out


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
        comp = None
        if paths:  # the found prompts with the human prompts: compare computes the baselines
            backend = backend or load_model(args.model)
            task_obj, entries = collect_prompts(task, paths, True, [], data_root=args.data_root)
            comp = compare_prompts(task_obj, entries, model=backend, split="test", limit=limit,
                                   cache_dir=EXPERIMENTS / "eval-cache", progress=True)
            write_reports(comp, HERE / "reports" / task)
        block = human_block(comp or human)
        if block is None or block["selected"].get("name") is None:
            why = "its compare.json predates the human baselines" if block is None else \
                block["selected"].get("reason")
            print(f"{task}: no dev-selected human prompt ({why}); rerun experiments/run_human.sh "
                  f"after removing {human_dir / 'compare.json'}")
            continue
        entry = {"n": human.n, **block, "methods": {}}
        if comp is not None:
            selected = next(r for r in comp.rows if r["name"] == block["selected"]["name"])
            by_source = {r["source"]: r for r in comp.rows}
            for e in entries:
                if e.kind != "found" or e.source not in by_source:
                    continue
                row, res = by_source[e.source], e.result
                # one method per strategy and study folder (a study's runs share their settings)
                study = "/".join(Path(e.source).parent.relative_to(EXPERIMENTS).parts[:-1])
                method = METHODS.get(res.strategy, res.strategy)
                anchor = res.config.get("anchor_weight") or 0
                soft_name = "soft prompt (vectors)"
                if res.strategy == "soft" and anchor:
                    method += f", anchored {anchor:g}"
                    soft_name += f", anchored {anchor:g}"
                method += f" · {study}"
                soft_name += f" · {study}"
                rec = {"run": str(Path(e.source).parent.relative_to(EXPERIMENTS)),
                       "split_seed": res.config.get("data_seed"), "prompt": res.prompt,
                       "test_accuracy": row["accuracy"],
                       "p_vs_selected": row["vs_selected"]["p_exact"] if row.get("vs_selected") else None,
                       "seconds": res.extra.get("seconds"), "perplexity": row["perplexity"],
                       "framing": framing(res, task_obj)}
                entry["methods"].setdefault(method, []).append(rec)
                if res.strategy == "soft":
                    soft = soft_test(backend, task_obj, Path(e.source).parent, limit, selected)
                    soft = {**rec, **soft, "dev_accuracy": res.scores.get("dev_accuracy"),
                            "perplexity": None}
                    entry["methods"].setdefault(soft_name, []).append(soft)
        table[task] = entry
    write_json(HERE / "table.json", table)
    atomic_write(HERE / "table.md", render(table, args.model))
    print((HERE / "table.md").read_text())


def render(table: dict, model: str) -> str:
    lines = [f"# 16-shot suite on {model}: test accuracy (%)", "",
             "Human prompts: the task's hand-written prompts that a causal LM can read (zero-shot, so "
             "the split seed does not change them), as four baselines (compare's human baselines): the "
             "literature's standard prompt (the task file's `standard:`, else its first prompt), the "
             "prompt best on dev (what a user without test labels would pick), mean ± std [min–max] "
             "of all of them, and the oracle: the best on these test examples, which no user can pick. "
             "Methods: every run found under experiments/, each found prompt scored on the same "
             "test examples as the human prompts; mean ± std over the runs (split seeds and/or search "
             "seeds, listed below). p: McNemar exact test of a run against the dev-selected human "
             "prompt on the same examples (smallest–largest over the runs).", "",
             "| task | n | method | runs | test accuracy % | Δ vs dev-selected (points) | "
             "p vs dev-selected | runs better / worse at p < 0.05 | seconds / run |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for task, e in table.items():
        h, sel, std, orc = e["spread"], e["selected"], e["standard"], e["oracle"]
        base = sel["accuracy"]
        label = "standard" if std.get("literature") else "standard (none shipped: first prompt)"
        for name, text in ((f"{label}: {std['name']}", _pct(std.get("accuracy"))),
                           (f"dev-selected: {sel['name']}", _pct(base)),
                           (f"human prompts ({h['n']}): mean ± std [min–max]",
                            f"{_pct(h['mean'])} ± {_pct(h['std'])} [{_pct(h['min'])}–{_pct(h['max'])}]"),
                           (f"oracle (selected on test): {orc['name']}", _pct(orc["accuracy"]))):
            lines.append(f"| {task} | {e['n']} | {name} | - | {text} | - | - | - | - |")
        best_method = None
        for m, runs in sorted(e["methods"].items()):
            accs = [r["test_accuracy"] for r in runs if r["test_accuracy"] is not None]
            if not accs:
                continue
            mean = statistics.mean(accs)
            std_runs = f" ± {100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
            ps = [r["p_vs_selected"] for r in runs if r["p_vs_selected"] is not None]
            better = sum(1 for r in runs if r["p_vs_selected"] is not None
                         and r["p_vs_selected"] < 0.05 and r["test_accuracy"] > base)
            worse = sum(1 for r in runs if r["p_vs_selected"] is not None
                        and r["p_vs_selected"] < 0.05 and r["test_accuracy"] < base)
            secs = [r["seconds"] for r in runs if r.get("seconds")]
            lines.append(f"| {task} | {e['n']} | {m} | {len(accs)} | {100 * mean:.1f}{std_runs} | "
                         f"{100 * (mean - base):+.1f} | "
                         f"{f'{min(ps):.2g}–{max(ps):.2g}' if ps else '-'} | {better} / {worse} of {len(accs)} | "
                         f"{f'{statistics.mean(secs):.0f}' if secs else '-'} |")
            if best_method is None or mean > best_method[1]:
                best_method = (m, mean, better, len(accs))
        humans = (f"dev-selected human prompt {sel['name']} {_pct(base)} (oracle {orc['name']} "
                  f"{_pct(orc['accuracy'])}); human prompts span {_pct(h['min'])}–{_pct(h['max'])}")
        if best_method is None:
            verdicts.append(f"- **{task}**: no search runs yet; {humans}.")
        else:
            m, mean, better, k = best_method
            verdicts.append(f"- **{task}**: best method {m} {100 * mean:.1f} vs {humans}: "
                            f"{100 * (mean - base):+.1f} points vs the dev-selected prompt; {better}/{k} "
                            "runs significantly better.")
    lines += ["", "## Verdict per task", ""] + verdicts + ["", "## Runs used", ""]
    for task, e in table.items():
        for m, runs in sorted(e["methods"].items()):
            for r in runs:
                acc = "-" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}"
                lines.append(f"- {task} · {m} · `{r['run']}` (split seed {r['split_seed']}): "
                             f"test {acc}, prompt `{r['prompt']}`{r.get('framing', '')}")
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"

if __name__ == "__main__":
    main()
