"""Prompt sensitivity: accuracy spread across >= 10 human paraphrases (sst-2, agnews).

Reads compare.json written by experiments/run_human.sh and writes results.md:
per-prompt test accuracy with bootstrap 95% intervals, the spread, and how many
pairs of paraphrases differ significantly (McNemar exact, p < 0.05, same examples).

    .venv/bin/python experiments/sensitivity/summarize.py
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from autoprompt_search.analysis.compare import load_comparison
from autoprompt_search.analysis.stats import mcnemar
from autoprompt_search.core.results import atomic_write

HERE = Path(__file__).resolve().parent


def main() -> None:
    lines = ["# Prompt sensitivity on SmolLM2-135M-Instruct (test split)", ""]
    for task in ("sst-2", "agnews"):
        if not (HERE / task / "compare.json").is_file():
            lines += [f"## {task}", "", "not run yet (experiments/run_human.sh)", ""]
            continue
        comp = load_comparison(HERE / task)
        rows = sorted((r for r in comp.rows if r["kind"] == "human"), key=lambda r: -r["accuracy"])
        s = comp.human_spread["accuracy"]
        pairs = list(combinations(rows, 2))
        sig = [(a, b) for a, b in pairs if mcnemar(a["correct"], b["correct"]).p_exact < 0.05]
        best, worst = rows[0], rows[-1]
        p_bw = mcnemar(best["correct"], worst["correct"]).p_exact
        lines += [f"## {task} (n = {comp.n} test examples, {len(rows)} readable paraphrases)", "",
                  "| prompt | accuracy % | 95% CI | macro-F1 % |", "|---|---|---|---|"]
        for r in rows:
            lines.append(f"| `{r['prompt']}` | {100 * r['accuracy']:.1f} | "
                         f"[{100 * r['accuracy_ci'][0]:.1f}, {100 * r['accuracy_ci'][1]:.1f}] | "
                         f"{100 * r['macro_f1']:.1f} |")
        lines += ["", f"- spread: min {100 * s['min']:.1f}, max {100 * s['max']:.1f}, "
                  f"range {100 * s['range']:.1f} points, mean {100 * s['mean']:.1f}, "
                  f"std {100 * s['std']:.1f} points",
                  f"- best `{best['name']}` vs worst `{worst['name']}`: McNemar exact p = {p_bw:.2g}",
                  f"- {len(sig)} of {len(pairs)} pairs of paraphrases differ at p < 0.05 (McNemar, "
                  "uncorrected)"]
        for sk in comp.skipped:
            lines.append(f"- not readable by a causal LM, left out: `{sk['prompt']}`")
        lines.append("")
    atomic_write(HERE / "results.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
