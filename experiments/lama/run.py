"""LAMA study: precision@1 of the LAMA, LPAQA and AutoPrompt (BERT) prompts on SmolLM2.

Per relation, on the first N test facts (``--limit``), objects ranked over the
candidate vocabulary (``common_vocab_cased.txt``, single-token objects only).
Resumable: relations already in ``raw.json`` are skipped. "ours" comes from run
folders ``experiments/lama/runs/<relation>/result.json`` when they exist.

    .venv/bin/python experiments/lama/run.py --limit 150
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from autoprompt_search.api import spec_from_result
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult, write_json
from autoprompt_search.core.tasks import Task, available_tasks, lama_template
from autoprompt_search.models import load_model
from autoprompt_search.scoring.evaluation import evaluate_prompt

HERE = Path(__file__).resolve().parent
SETS = ("LAMA", "LPAQA", "AutoPrompt-BERT")


def prompt_sets(task: Task, relation: str, data_root: Path) -> dict[str, str]:
    out = {p.name: p.template for p in task.prompts if p.name in ("LAMA", "LPAQA")}
    for line in (data_root / "lama" / "prompts" / "autoprompt.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["relation"] == relation:
            out["AutoPrompt-BERT"] = lama_template(rec["template"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=150, help="test facts per relation")
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get(
        "AUTOPROMPT_SEARCH_DATA", HERE.parents[2] / "shared" / "data")))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=HERE / "raw.json")
    args = ap.parse_args()
    raw = json.loads(args.out.read_text()) if args.out.is_file() else {
        "model": args.model, "limit": args.limit, "split": "test", "relations": {}}
    if raw["limit"] != args.limit or raw["model"] != args.model:
        raise SystemExit(f"{args.out} was made with other settings; delete it to start over")
    backend = load_model(args.model)
    names = sorted(n for n in available_tasks() if n.startswith("lama-"))
    start = time.perf_counter()
    for name in tqdm(names, desc="relations"):
        relation = name.removeprefix("lama-")
        task = Task.load(name, data_root=args.data_root)
        rows = raw["relations"].setdefault(relation, {})
        prompts = prompt_sets(task, relation, args.data_root)
        ours = HERE / "runs" / relation / "result.json"
        for set_name, template in prompts.items():
            if set_name in rows:
                continue
            try:
                ev = evaluate_prompt(backend, task, template, "test", limit=args.limit)
            except UserError as exc:  # e.g. text after [P]: a causal LM cannot read it
                rows[set_name] = {"template": template, "skipped": str(exc)}
            else:
                rows[set_name] = {"template": template, **ev.metrics}
            write_json(args.out, raw)
        if ours.is_file() and "ours" not in rows:
            spec = spec_from_result(PromptResult.load(ours), args.data_root)
            ev = evaluate_prompt(backend, task, spec.template, "test", triggers=spec.triggers,
                                 limit=args.limit)
            rows["ours"] = {"template": spec.name, **ev.metrics}
            write_json(args.out, raw)
    raw.setdefault("seconds", 0.0)
    raw["seconds"] += time.perf_counter() - start
    write_json(args.out, raw)


if __name__ == "__main__":
    main()
