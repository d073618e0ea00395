"""Human-prompt baselines on the study's test subsets (first N test examples).

The best paraphrase of the sensitivity study (experiments/sensitivity, first 150 test
examples) and the literature's / causal-rewrite prompt of each task, scored on the same
test subsets as the soft prompts: SST-2 first 200, AG News first 100 test examples.

    .venv/bin/python experiments/waywardness/human.py
"""

from __future__ import annotations

import json
from pathlib import Path

from autoprompt_search.evaluation import evaluate_prompt
from autoprompt_search.models import load_model
from autoprompt_search.results import PromptResult
from autoprompt_search.tasks import Task

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data"


def main() -> None:
    out = {}
    backend = load_model("smollm2-135m")
    for task_name, names, limit in (("sst-2", ("quote", "it-was"), 200),
                                    ("agnews", ("article-about", "topic"), 100)):
        task = Task.load(task_name, data_root=DATA)
        by_name = {p.name: p for p in task.prompts}
        for name in names:
            ev = evaluate_prompt(backend, task, by_name[name].template, "test", limit=limit,
                                 progress=True)
            out[f"{task_name}/{name}"] = {"prompt": by_name[name].template, "n": ev.metrics["n"],
                                          "accuracy": ev.metrics["accuracy"]}
            print(task_name, name, ev.metrics["accuracy"], flush=True)
    # the gradient search's prompts (experiments/gradient-sst2), on the same SST-2 subset
    task = Task.load("sst-2", data_root=DATA)
    for run in sorted((HERE.parent / "gradient-sst2" / "runs").glob("split-*/result.json")):
        res = PromptResult.load(run)
        ev = evaluate_prompt(backend, task, res.template, "test", triggers=res.trigger_ids, limit=200,
                             progress=True)
        out[f"sst-2/gradient-{run.parent.name}"] = {"prompt": res.prompt, "n": ev.metrics["n"],
                                                    "accuracy": ev.metrics["accuracy"]}
        print(run.parent.name, res.prompt, ev.metrics["accuracy"], flush=True)
    (HERE / "human.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
