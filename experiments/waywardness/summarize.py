"""Tables for the waywardness study from results.jsonl and human.json (Markdown on stdout).

    .venv/bin/python experiments/waywardness/summarize.py > experiments/waywardness/results.md
    .venv/bin/python experiments/waywardness/summarize.py long > experiments/waywardness/long/results.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if len(sys.argv) > 1:  # a study folder (results.jsonl, human.json, runs/) relative to this one
    HERE = HERE / sys.argv[1]


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def mean(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return pct(xs[0])
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


def main() -> None:
    rows = [json.loads(x) for x in (HERE / "results.jsonl").read_text().splitlines() if x.strip()]
    human = json.loads((HERE / "human.json").read_text()) if (HERE / "human.json").is_file() else {}
    main_rows = [r for r in rows if r["method"] in ("soft", "pez", "pez-fluent")]
    tasks = sorted({r["task"] for r in main_rows}, key=lambda t: (t != "sst-2", t))
    print("## Test accuracy (%) on a fixed test subset (the first N test examples)\n")
    print("| task | N | split seed | best human | human median | soft | projection of soft | PEZ "
          "| PEZ + fluency | gradient (40 it.) | gradient (suite, 12 it.) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for task in tasks:
        hum = {k.split("/", 1)[1]: v for k, v in human.items() if k.startswith(task + "/")}
        best_h = max((v for k, v in hum.items() if not k.startswith("gradient")),
                     key=lambda v: v["accuracy"], default=None)
        human_accs = [v["accuracy"] for k, v in hum.items() if not k.startswith("gradient")]
        med_h = statistics.median(human_accs) if human_accs else None
        seeds = sorted({r["seed"] for r in main_rows if r["task"] == task})
        cols = {"soft": [], "proj": [], "pez": [], "fluent": [], "grad": [], "grad_suite": []}

        def find(seed, method):
            return next((r for r in main_rows if (r["task"], r["seed"], r["method"]) == (task, seed, method)),
                        None)

        for seed in seeds:
            soft, pez, fluent = find(seed, "soft"), find(seed, "pez"), find(seed, "pez-fluent")
            grad = hum.get(f"gradient-split-{seed}")
            grad_suite = hum.get(f"gradient-suite-split-{seed}")
            vals = (soft and soft["test_soft"], soft and soft["test_projected"], pez and pez["test_hard"],
                    fluent and fluent["test_hard"], grad and grad["accuracy"],
                    grad_suite and grad_suite["accuracy"])
            for key, v in zip(cols, vals):
                cols[key].append(v)
            n = (soft or pez or fluent)["n_test"]
            print(f"| {task} | {n} | {seed} | {pct(best_h and best_h['accuracy'])} | {pct(med_h)} | "
                  + " | ".join(pct(v) for v in vals) + " |")
        if len(seeds) > 1:
            print(f"| {task} | | mean ± sd | {pct(best_h and best_h['accuracy'])} | {pct(med_h)} | "
                  + " | ".join(mean(cols[k]) for k in cols) + " |")
    print("\nHuman prompts on the same subsets:\n")
    for k, v in human.items():
        print(f"- {k}: `{v['prompt']}` {pct(v['accuracy'])} (n={v['n']})")

    print("\n## Found prompts\n")
    print("| task | seed | method | prompt | best dev step | trigger log-ppl |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        path = HERE / "runs" / run_name(r) / "result.json"  # run folders of earlier sessions may be gone
        best_step = json.loads(path.read_text())["extra"].get("best_step") if path.is_file() else "-"
        print(f"| {r['task']} | {r['seed']} | {r['method']}{'' if r['gamma'] is None else ' γ=' + str(r['gamma'])} "
              f"| `{r['prompt']}` | {best_step} | "
              f"{r['scores'].get('trigger_log_ppl', float('nan')):.2f} |")

    print("\n## How far the soft vectors are from their nearest tokens\n")
    print("Mean distance from each soft vector to its nearest allowed token, next to the mean "
          "distance between two random vocabulary tokens (pair) and from a token to its nearest "
          "other token (nn), 2,000 sampled tokens.\n")
    print("| task | seed | run | cosine: nearest | pair | nn | nearest/nn | euclidean: nearest | pair | nn | nearest/nn |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "distances" not in r:
            continue
        c, e = r["distances"]["cosine"], r["distances"]["euclidean"]
        print(f"| {r['task']} | {r['seed']} | {r['method']}{'' if r['gamma'] is None else ' γ=' + str(r['gamma'])} | "
              f"{c['mean_nearest']:.3f} | {c['vocab_pair_mean']:.3f} | {c['vocab_nn_mean']:.3f} | {c['ratio_to_nn']:.2f} | "
              f"{e['mean_nearest']:.3f} | {e['vocab_pair_mean']:.3f} | {e['vocab_nn_mean']:.3f} | {e['ratio_to_nn']:.2f} |")

    anchor = [r for r in rows if r["method"].startswith("soft-anchor")]
    if anchor:
        print("\n## Khashabi et al. test: soft prompts pulled towards an unrelated text\n")
        print(f"Target text: `{anchor[0]['anchor_text']}` (first 5 tokens: "
              f"{''.join(anchor[0]['anchor_tokens'])!r}); Euclidean projection.\n")
        print("| task | seed | init | γ | soft test acc | projected test acc | projection | token F1 with target | slots equal |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in sorted(anchor, key=lambda r: (r["method"], r["seed"], r["gamma"])):
            init = r["method"][len("soft-anchor-"):] or "random"
            print(f"| {r['task']} | {r['seed']} | {init} | {r['gamma']:g} | {pct(r['test_soft'])} | {pct(r['test_projected'])} | "
                  f"`{''.join(r['trigger_tokens'])}` | {r['token_f1']:.2f} | {r['exact_slots']}/5 |")


def run_name(r: dict) -> str:
    if r["method"].startswith("soft-anchor"):
        suffix = r["method"][len("soft-anchor"):]
        return f"{r['task']}-s{r['seed']}-anchor-{r['gamma']:g}{suffix}"
    return f"{r['task']}-s{r['seed']}-{r['method']}"


if __name__ == "__main__":
    main()
