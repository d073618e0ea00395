"""Issue 12's evidence: ``--strategy auto`` on the suite tasks against the human baselines a user has.

For each task and split seed (and ablation variant) this runs

    autoprompt-search search --strategy auto --task T --split-seed S --seed S --time-budget B

into ``runs/<variant>/<task>-s<seed>/`` (resumed with ``--resume`` when a checkpoint is there, skipped
when ``result.json`` is), scores the found prompt on the calibration study's test subset (1,000
examples drawn by ``stratified_sample(test, 1000, seed=0)``, TREC its 500 -- the same examples as
every human prompt in ``experiments/calibration/test_scores``) into ``tests/<variant>/<task>-s<seed>.json``
and writes ``table.md`` / ``table.json`` against the baselines of the calibration study:

(a) the literature's standard prompt (uncalibrated), (b) the human prompt *and* calibration mode a
user picks on dev (the best dev accuracy over every human prompt x calibration mode, direct rule),
(c) the test-oracle: the best human prompt with its best calibration on test (an upper reference
nobody has). McNemar and a paired bootstrap against (b) of the same split seed.

    OMP_NUM_THREADS=1 python experiments/auto/run.py search --tasks sst-2 --seeds 13
    python experiments/auto/run.py table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "calibration"))

from study import DATA, MODES, TEST_N, TEST_SEED, dev_pick, load_split, load_test  # noqa: E402

TASKS = ["sst-2", "sst-5", "agnews", "trec"]
SEEDS = [13, 21, 42]
VARIANTS = {  # name -> extra search options (ablations switch one part off)
    "auto": [],
    "no-demos": ["--no-demos"],
    "no-calibration": ["--no-calibration"],
    "no-cv": ["--no-cv"],
    "no-edit": ["--no-edit"],
    "no-verbalizer": ["--no-verbalizer"],
    "no-generate": ["--no-generate"],
}


def run_dir(variant: str, task: str, seed: int) -> Path:
    return HERE / "runs" / variant / f"{task}-s{seed}"


def search(args) -> None:
    for variant in args.variants:
        for task in args.tasks:
            for seed in args.seeds:
                out = run_dir(variant, task, seed)
                if (out / "result.json").exists():
                    print(f"{variant} {task} {seed}: done", flush=True)
                else:
                    cmd = [sys.executable, "-m", "autoprompt_search.cli", "search", "--strategy", "auto",
                           "--task", task, "--split-seed", str(seed), "--seed", str(seed),
                           "--model", args.model, "--data-root", args.data_root,
                           "--time-budget", str(args.time_budget), "--out", str(out),
                           *VARIANTS[variant]]
                    if out.exists():
                        cmd.append("--resume")
                    print(" ".join(cmd), flush=True)
                    subprocess.run(cmd, check=True, cwd=ROOT)
                score_test(args, variant, task, seed)


def score_test(args, variant: str, task_name: str, seed: int) -> None:
    path = HERE / "tests" / variant / f"{task_name}-s{seed}.json"
    if path.exists():
        return
    from autoprompt_search.core.results import PromptResult
    from autoprompt_search.models import load_model
    from autoprompt_search.scoring.evaluation import evaluate_ensemble, evaluate_prompt
    from autoprompt_search.scoring.specs import spec_calibration, spec_from_result

    result = PromptResult.load(run_dir(variant, task_name, seed) / "result.json")
    spec = spec_from_result(result, args.data_root, None)
    backend = load_model(spec.model or args.model)
    start = time.perf_counter()
    if spec.ensemble:
        ev = evaluate_ensemble(backend, spec, "test", limit=TEST_N, limit_seed=TEST_SEED)
    else:
        ev = evaluate_prompt(backend, spec.task, spec.template, "test", verbalizer=spec.verbalizer,
                             triggers=spec.triggers, fewshot=spec.fewshot, limit=TEST_N,
                             limit_seed=TEST_SEED, rule=spec.scoring,
                             calibration=spec_calibration(spec, None, None))
    reference = next(rec for rec in (load_test(task_name, p.name, "direct") for p in spec.task.prompts)
                     if rec)
    if list(ev.gold) != list(reference["gold"]):
        raise SystemExit(f"{task_name}: the test subset differs from the calibration study's")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"variant": variant, "task": task_name, "seed": seed, "template": spec.template,
              "verbalizer": spec.verbalizer, "accuracy": float(ev.correct.mean()),
              "correct": ev.correct.astype(int).tolist(), "test_seconds": round(time.perf_counter() - start, 1),
              "search_seconds": (result.extra or {}).get("seconds"),
              "cv_score": (result.scores or {}).get("cv_score")}
    path.write_text(json.dumps(record) + "\n")
    print(f"{variant} {task_name} {seed}: test {record['accuracy']:.3f}", flush=True)


# --- table -------------------------------------------------------------------------------------
def human_views(task, seed: int) -> dict:
    """(prompt, mode) -> dev accuracy, test correctness, from the calibration study's caches."""
    import torch

    from autoprompt_search.scoring.calibration import apply_offsets

    views = {}
    for prompt in task.prompts:
        split, test = load_split(task.name, seed, prompt.name, "direct"), load_test(task.name, prompt.name, "direct")
        if split is None or test is None:
            continue
        for mode in MODES:
            if mode not in split["offsets"]:
                continue
            off = torch.tensor(split["offsets"][mode])
            dev = (apply_offsets(torch.tensor(split["dev"]), off).argmax(-1).numpy()
                   == np.asarray(split["dev_gold"])).mean()
            correct = apply_offsets(torch.tensor(test["scores"]), off).argmax(-1).numpy() == np.asarray(test["gold"])
            views[(prompt.name, mode)] = (float(dev), correct)
    return views


def table(args) -> None:
    from autoprompt_search.analysis.stats import mcnemar, paired_bootstrap
    from autoprompt_search.core.tasks import Task

    rows, lines = [], ["# `--strategy auto` against the human baselines", "",
                       "SmolLM2-135M-Instruct; test accuracy (%) on the calibration study's test subset "
                       "(1,000 stratified examples, seed 0; TREC all 500), the same examples for every prompt. "
                       "(b) = the human prompt and calibration mode with the best dev accuracy; oracle = the "
                       "best human prompt and mode on test (selected on test). Δ, McNemar p and the paired "
                       "bootstrap 95 % interval are against (b) of the same split seed.", "",
                       "| variant | task | seed | (a) standard | (b) dev-picked | oracle | found | Δ vs (b) | "
                       "95 % CI | McNemar p | search s | found prompt |", "|---" * 12 + "|"]
    for variant in args.variants:
        for name in args.tasks:
            task = Task.load(name, data_root=args.data_root)
            for seed in args.seeds:
                path = HERE / "tests" / variant / f"{name}-s{seed}.json"
                if not path.exists():
                    continue
                found = json.loads(path.read_text())
                views = human_views(task, seed)
                if not views:
                    continue
                pick = dev_pick([(key, dev) for key, (dev, _) in views.items()])
                b = views[pick][1]
                oracle = max(c.mean() for _, c in views.values())
                standard = views.get((task.prompts[0].name, "none"))
                correct = np.asarray(found["correct"], bool)
                test = mcnemar(correct, b)
                boot = paired_bootstrap(correct, b)
                row = {"variant": variant, "task": name, "seed": seed,
                       "standard": None if standard is None else float(standard[1].mean()),
                       "dev_pick": float(b.mean()), "dev_pick_prompt": f"{pick[0]}/{pick[1]}",
                       "oracle": float(oracle), "found": float(correct.mean()), "delta": test.delta,
                       "ci": list(boot.delta_ci), "p": test.p_exact,
                       "search_seconds": found.get("search_seconds"), "template": found["template"]}
                rows.append(row)
                pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
                lines.append(f"| {variant} | {name} | {seed} | {pct(row['standard'])} | {pct(row['dev_pick'])} "
                             f"({row['dev_pick_prompt']}) | {pct(oracle)} | {pct(row['found'])} | "
                             f"{100 * test.delta:+.1f} | [{100 * boot.delta_ci[0]:+.1f}, {100 * boot.delta_ci[1]:+.1f}] "
                             f"| {test.p_exact:.2g} | {row['search_seconds']} | `{row['template']}` |")
    lines += ["", "Mean over the runs present, per variant and task:", "",
              "| variant | task | runs | (b) dev-picked | oracle | found | Δ vs (b) | above oracle |",
              "|---|---|---|---|---|---|---|---|"]
    for variant in args.variants:
        for name in args.tasks:
            sel = [r for r in rows if r["variant"] == variant and r["task"] == name]
            if not sel:
                continue
            m = lambda k: 100 * float(np.mean([r[k] for r in sel]))  # noqa: E731
            s = lambda k: 100 * float(np.std([r[k] for r in sel], ddof=1)) if len(sel) > 1 else 0.0  # noqa: E731
            lines.append(f"| {variant} | {name} | {len(sel)} | {m('dev_pick'):.1f} ± {s('dev_pick'):.1f} | "
                         f"{m('oracle'):.1f} | {m('found'):.1f} ± {s('found'):.1f} | {m('delta'):+.1f} | "
                         f"{sum(r['found'] > r['oracle'] for r in sel)}/{len(sel)} |")
    (HERE / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["search", "table"])
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--variants", nargs="+", default=["auto"], choices=sorted(VARIANTS))
    ap.add_argument("--time-budget", type=int, default=900)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data-root", default=str(DATA))
    args = ap.parse_args()
    (search if args.stage == "search" else table)(args)


if __name__ == "__main__":
    main()
