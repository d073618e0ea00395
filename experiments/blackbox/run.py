"""Black-box search (Optuna) on SST-2 and AG News with SmolLM2, 3 seeds: best found vs best human.

Each run searches on a fixed, shuffled set of train+dev examples (the demonstration
pool excluded), with the human prompts enqueued first; then the found prompt and the
best human prompt *on the search examples* are scored on the first N test examples.
Same thing from the command line, per task and seed:

    autoprompt-search search --strategy optuna --task sst-2 --space sst-2 --model smollm2-135m \
        --trials 30 --search-examples 32 --seed 0 --out experiments/blackbox/runs/sst-2-s0
    autoprompt-search evaluate --task sst-2 --prompt-file experiments/blackbox/runs/sst-2-s0 \
        --split test --limit 100

Usage: python experiments/blackbox/run.py [--quick] [TASK ...]   (writes results.json and results.md here)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from autoprompt_search import load_model
from autoprompt_search.api import load_task, run_search, spec_from_result
from autoprompt_search.scoring.evaluation import evaluate_prompt

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent.parent / "shared" / "data"
SEEDS = (0, 1, 2)
SETTINGS = {  # task -> (search options, test examples); sized for ~35 min on a shared 2-core CPU
    "sst-2": ({"trials": 30, "search_examples": 32, "batch_size": 16}, 100),
    "agnews": ({"trials": 24, "search_examples": 16, "batch_size": 8}, 100),
}


def main(quick: bool = False, tasks: tuple[str, ...] = tuple(SETTINGS)) -> None:
    torch.set_num_threads(1)  # the machine is shared: one thread thrashes less than two
    backend = load_model("smollm2-135m")
    results = HERE / ("results_quick.json" if quick else "results.json")
    # rows of tasks not run now are kept
    rows = [r for r in json.loads(results.read_text()) if r["task"] not in tasks] \
        if results.is_file() else []
    cache: dict[tuple, dict] = {}
    for task_name in tasks:
        options, n_test = SETTINGS[task_name]
        task = load_task(task_name, DATA)
        if quick:
            options, n_test = {**options, "trials": 4, "search_examples": 16}, 32
        for seed in SEEDS[: 1 if quick else None]:
            out = HERE / ("runs_quick" if quick else "runs") / f"{task_name}-s{seed}"
            start = time.perf_counter()
            resume = (out / "config.json").is_file()  # a finished run is extended to --trials
            result = run_search("optuna", task=task, model="smollm2-135m", out=out, seed=seed,
                                resume=resume, options={"space": task_name, **options},
                                backend=backend, progress=False)
            search_s = time.perf_counter() - start
            spec = spec_from_result(result, DATA)
            found = evaluate_prompt(backend, task, spec.template, "test", verbalizer=spec.verbalizer,
                                    triggers=spec.triggers, fewshot=spec.fewshot, limit=n_test)
            human = result.extra["best_human"]
            template = next(p.template for p in task.prompts if (p.name or p.template) == human)
            key = (task_name, template, n_test)
            if key not in cache:
                cache[key] = evaluate_prompt(backend, task, template, "test", limit=n_test).metrics
            row = {
                "task": task_name, "seed": seed, "found_prompt": result.prompt,
                "found_fewshot": result.fewshot, "found_verbalizer": result.verbalizer,
                "best_human": human, "human_template": template,
                "search_found": result.scores["search_accuracy"],
                "search_human": result.scores.get("best_human_search_accuracy"),
                "test_found": found.metrics["accuracy"], "test_human": cache[key]["accuracy"],
                "n_test": found.metrics["n"], "trials": result.extra["trials_done"],
                "pruned": result.extra["pruned"], "search_seconds": round(search_s, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            results.write_text(json.dumps(rows, indent=2) + "\n")
    write_table(rows, HERE / ("results_quick.md" if quick else "results.md"))


def write_table(rows, path: Path) -> None:
    lines = ["| task | seed | search acc: human / found | test acc: best human / found | n test | "
             "trials (pruned) | search s | found prompt |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fs = r["found_fewshot"] or {}
        extra = (f" + {len(fs.get('demo_ids', []))} demos" if fs.get("demo_ids") else "") + \
            (f" + instruction {fs['instruction']!r}" if fs.get("instruction") else "")
        lines.append(f"| {r['task']} | {r['seed']} | {100 * r['search_human']:.1f} / "
                     f"{100 * r['search_found']:.1f} | {100 * r['test_human']:.1f} / "
                     f"{100 * r['test_found']:.1f} | {r['n_test']} | {r['trials']} ({r['pruned']}) | "
                     f"{r['search_seconds']:.0f} | `{r['found_prompt']}`{extra} "
                     f"{json.dumps(r['found_verbalizer'])} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    names = tuple(a for a in sys.argv[1:] if not a.startswith("--")) or tuple(SETTINGS)
    main(quick="--quick" in sys.argv, tasks=names)
