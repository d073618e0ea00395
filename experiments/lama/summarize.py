"""LAMA table from raw.json: precision@1 per relation and averaged, per prompt set.

    .venv/bin/python experiments/lama/summarize.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from autoprompt_search.core.results import atomic_write

HERE = Path(__file__).resolve().parent
SETS = ("LAMA", "LPAQA", "AutoPrompt-BERT", "ours")


def cell(rec: dict | None) -> str:
    if rec is None:
        return "not run"
    if "skipped" in rec:
        return "n/a*"
    return f"{100 * rec['precision_at_1']:.1f}"


def scored(rows: dict, name: str) -> bool:
    return name in rows and "skipped" not in rows[name]


def main() -> None:
    raw = json.loads((HERE / "raw.json").read_text())
    rels = raw["relations"]
    lines = [f"# LAMA precision@1 (%) on {raw['model']}, test split, first {raw['limit']} facts per "
             "relation, objects ranked over the common candidate vocabulary", "",
             "| relation | n | " + " | ".join(SETS) + " | AutoPrompt prompt | our prompt |",
             "|---|---|" + "---|" * (len(SETS) + 2)]
    for rel in sorted(rels, key=lambda r: int(r[1:])):
        rows = rels[rel]
        n = next((r["n"] for r in rows.values() if "n" in r), "-")
        ap = rows.get("AutoPrompt-BERT", {}).get("template", "")
        ours = rows.get("ours", {}).get("template", "")
        lines.append(f"| {rel} | {n} | " + " | ".join(cell(rows.get(s)) for s in SETS) +
                     f" | `{ap}` | {f'`{ours}`' if ours else '-'} |")
    means = {}
    for s in SETS:
        vals = [rels[r][s]["precision_at_1"] for r in rels if scored(rels[r], s)]
        means[s] = (statistics.mean(vals), len(vals)) if vals else None
    lines.append("| mean (relations scored) | | " + " | ".join(
        "not run" if means[s] is None else f"{100 * means[s][0]:.1f} ({means[s][1]})" for s in SETS)
        + " | | |")
    lines.append("")
    for sets in (SETS[:3], SETS):
        common = [r for r in rels if all(scored(rels[r], s) for s in sets)]
        if not common:
            continue
        wins = {s: sum(1 for r in common if rels[r][s]["precision_at_1"] ==
                       max(rels[r][t]["precision_at_1"] for t in sets)) for s in sets}
        lines += [f"On the {len(common)} relations {', '.join(sets)} can all be scored on: mean P@1 " +
                  ", ".join(f"{s} {100 * statistics.mean(rels[r][s]['precision_at_1'] for r in common):.1f}"
                            for s in sets) + "; relations where each is best (ties count for each): " +
                  ", ".join(f"{s} {wins[s]}" for s in sets), ""]
    if means["ours"] is not None:
        pairs = [(r, t) for r in rels for t in SETS[:3] if scored(rels[r], "ours") and scored(rels[r], t)]
        for t in SETS[:3]:
            rs = [r for r, u in pairs if u == t]
            up = sum(1 for r in rs if rels[r]["ours"]["precision_at_1"] > rels[r][t]["precision_at_1"])
            down = sum(1 for r in rs if rels[r]["ours"]["precision_at_1"] < rels[r][t]["precision_at_1"])
            lines.append(f"- ours vs {t}: higher on {up}, lower on {down}, equal on {len(rs) - up - down} "
                         f"of {len(rs)} relations")
        lines.append("")
    lines += ["*n/a: the prompt has text after [P], which a causal LM cannot read (it predicts the "
              "object as the next token).", ""]
    if raw.get("seconds"):
        lines.append(f"Compute: {raw['seconds']:.0f} s of wall time on a shared 2-core CPU.")
    atomic_write(HERE / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
