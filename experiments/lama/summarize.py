"""LAMA table from raw.json: precision@1 per relation and averaged, per prompt set.

    .venv/bin/python experiments/lama/summarize.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from autoprompt_search.results import atomic_write

HERE = Path(__file__).resolve().parent
SETS = ("LAMA", "LPAQA", "AutoPrompt-BERT", "ours")


def cell(rec: dict | None) -> str:
    if rec is None:
        return "not run"
    if "skipped" in rec:
        return "n/a*"
    return f"{100 * rec['precision_at_1']:.1f}"


def main() -> None:
    raw = json.loads((HERE / "raw.json").read_text())
    rels = raw["relations"]
    lines = [f"# LAMA precision@1 (%) on {raw['model']}, test split, first {raw['limit']} facts per "
             "relation, objects ranked over the common candidate vocabulary", "",
             "| relation | n | " + " | ".join(SETS) + " | AutoPrompt prompt |", "|---|---|" + "---|" * (len(SETS) + 1)]
    for rel in sorted(rels, key=lambda r: int(r[1:])):
        rows = rels[rel]
        n = next((r["n"] for r in rows.values() if "n" in r), "-")
        ap = rows.get("AutoPrompt-BERT", {}).get("template", "")
        lines.append(f"| {rel} | {n} | " + " | ".join(cell(rows.get(s)) for s in SETS) +
                     f" | `{ap}` |")
    means, wins = {}, {}
    for s in SETS:
        vals = [rels[r][s]["precision_at_1"] for r in rels if s in rels[r] and "skipped" not in rels[r][s]]
        means[s] = (statistics.mean(vals), len(vals)) if vals else None
    lines.append("| mean (relations scored) | | " + " | ".join(
        "not run" if means[s] is None else f"{100 * means[s][0]:.1f} ({means[s][1]})" for s in SETS) + " | |")
    both = [r for r in rels if all(s in rels[r] and "skipped" not in rels[r][s]
                                   for s in ("LAMA", "LPAQA", "AutoPrompt-BERT"))]
    for s in ("LAMA", "LPAQA", "AutoPrompt-BERT"):
        wins[s] = sum(1 for r in both if rels[r][s]["precision_at_1"] ==
                      max(rels[r][t]["precision_at_1"] for t in ("LAMA", "LPAQA", "AutoPrompt-BERT")))
    lines += ["", f"On the {len(both)} relations all three prompt sets can be scored on: mean P@1 " +
              ", ".join(f"{s} {100 * statistics.mean(rels[r][s]['precision_at_1'] for r in both):.1f}"
                        for s in ("LAMA", "LPAQA", "AutoPrompt-BERT")) if both else "",
              "Relations where each set is best (ties count for each): " +
              ", ".join(f"{s} {wins[s]}" for s in wins), "",
              "*n/a: the prompt has text after [P], which a causal LM cannot read (it predicts the "
              "object as the next token).", ""]
    if raw.get("seconds"):
        lines.append(f"Compute: {raw['seconds']:.0f} s of wall time on a shared 2-core CPU.")
    atomic_write(HERE / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
