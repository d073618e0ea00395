"""Human-prompt baselines on the study's test subsets (first N test examples).

Every human prompt of the task file (``--all``; else the best paraphrase of the
sensitivity study and the literature's prompt) and the gradient search's prompts
(experiments/gradient-sst2), scored on the same test subset as the soft prompts.

    .venv/bin/python experiments/waywardness/human.py                       # 200 / 100, human.json
    .venv/bin/python experiments/waywardness/human.py --all --limit 500 --out long/human.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult
from autoprompt_search.core.tasks import Task
from autoprompt_search.models import load_model
from autoprompt_search.scoring.evaluation import evaluate_prompt

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, nargs=2, default=[200, 100], metavar=("SST2", "AGNEWS"),
                    help="first N test examples of sst-2 and of agnews")
    ap.add_argument("--all", action="store_true", help="every human prompt of the task files")
    ap.add_argument("--out", default="human.json", help="output file (relative to this folder)")
    args = ap.parse_args()
    path = HERE / args.out
    out = json.loads(path.read_text()) if path.is_file() else {}  # resumable: scored keys stay
    backend = load_model("smollm2-135m")
    for task_name, names, limit in (("sst-2", ("quote", "it-was"), args.limit[0]),
                                    ("agnews", ("article-about", "topic"), args.limit[1])):
        task = Task.load(task_name, data_root=DATA)
        by_name = {p.name: p for p in task.prompts}
        for name in (by_name if args.all else names):
            if f"{task_name}/{name}" in out:
                continue
            try:
                ev = evaluate_prompt(backend, task, by_name[name].template, "test", limit=limit,
                                     progress=True)
            except UserError as err:  # words after [P]: a causal LM cannot read the prompt
                print(task_name, name, "skipped:", err, flush=True)
                continue
            out[f"{task_name}/{name}"] = {"prompt": by_name[name].template, "n": ev.metrics["n"],
                                          "accuracy": ev.metrics["accuracy"]}
            print(task_name, name, ev.metrics["accuracy"], flush=True)
    # the gradient search's prompts: experiments/gradient-sst2 (SST-2, 40 iterations) and the
    # suite's runs (experiments/suite/runs, both tasks, 12 iterations), on the same subsets
    runs = [("sst-2", "gradient-", p) for p in
            sorted((HERE.parent / "gradient-sst2" / "runs").glob("split-*/result.json"))]
    for task_name in ("sst-2", "agnews"):
        runs += [(task_name, "gradient-suite-", p) for p in sorted(
            (HERE.parent / "suite" / "runs").glob(f"{task_name}-s*-gradient/result.json"))]
    tasks = {}
    for task_name, prefix, run in runs:
        res = PromptResult.load(run)
        key = f"{task_name}/{prefix}split-{res.config['data_seed']}"
        if key in out:
            continue
        task = tasks.setdefault(task_name, Task.load(task_name, data_root=DATA))
        limit = args.limit[0] if task_name == "sst-2" else args.limit[1]
        ev = evaluate_prompt(backend, task, res.template, "test", triggers=res.trigger_ids,
                             limit=limit, progress=True)
        out[key] = {"prompt": res.prompt, "n": ev.metrics["n"], "accuracy": ev.metrics["accuracy"]}
        print(key, res.prompt, ev.metrics["accuracy"], flush=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
