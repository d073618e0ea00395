"""Summarise the gradient-sst2 runs: test accuracy of found prompts vs human prompts.

Usage: python experiments/gradient-sst2/summarize.py experiments/gradient-sst2/runs
Reads split-*/result.json, test-found.json and test-human.json (evaluate.py); prints Markdown.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}" if values else "-"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main(root: Path) -> None:
    test = json.loads((root / "test-found.json").read_text())
    rows = {r["prompt"]: r for r in test["results"] if "skipped" not in r}
    if (root / "test-human.json").is_file():
        human_file = json.loads((root / "test-human.json").read_text())
        assert human_file["limit"] == test["limit"], "found and human prompts on different examples"
        rows.update({r["prompt"]: r for r in human_file["results"] if "skipped" not in r})
    found = []
    print(f"test split, first {test['limit']} examples\n")
    print("| split seed | found prompt | iterations | initial dev | best dev | train | test acc | test macro-F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for run in sorted(root.glob("split-*")):
        result = json.loads((run / "result.json").read_text())
        r = rows.pop(f"{run.name}: {result['prompt']}")
        found.append(r["accuracy"])
        s = result["scores"]
        print(f"| {run.name.split('-')[1]} | `{result['prompt']}` | {result['extra']['iterations']} "
              f"({result['extra']['stopped']}, {result['extra']['seconds']:.0f} s) | "
              f"{100 * s['initial_dev_accuracy']:.1f} | {100 * s['dev_accuracy']:.1f} | "
              f"{100 * s['train_accuracy']:.1f} | {100 * r['accuracy']:.1f} | {100 * r['macro_f1']:.1f} |")
    human = list(rows.values())
    print()
    print("| human prompt | test acc | test macro-F1 |")
    print("|---|---|---|")
    for h in sorted(human, key=lambda h: -h["accuracy"]):
        print(f"| `{h['template']}` | {100 * h['accuracy']:.1f} | {100 * h['macro_f1']:.1f} |")
    print()
    print(f"found prompts ({len(found)} split seeds): test accuracy {mean_std(found)}")
    if human:
        accs = [h["accuracy"] for h in human]
        print(f"human prompts ({len(accs)} wordings): test accuracy {mean_std(accs)}, "
              f"best {100 * max(accs):.1f}, worst {100 * min(accs):.1f}")
        standard = [h for h in human if h["template"] == "{sentence} It was [P] ."]
        if standard:
            print(f"standard human prompt '{{sentence}} It was [P] .': "
                  f"{100 * standard[0]['accuracy']:.1f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/gradient-sst2/runs"))
