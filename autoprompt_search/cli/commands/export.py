"""``autoprompt-search export``: found prompts as text or JSON, or filled in for each example."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import DataRootOpt, SplitSeedOpt, app, console


@app.command()
def export(
    runs: Annotated[list[Path], typer.Argument(help="Run folders, result.json files, or a folder of run folders.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="txt (template<TAB>label words per line), json (result record, loads with evaluate --prompt-file), jsonl, peft (a soft run as a PEFT prompt-tuning adapter folder) or lm-eval (lm-evaluation-harness task YAMLs and data in a folder).")] = "txt",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (a folder for several prompts as json, and for peft and lm-eval); default: print.")] = None,
    fill: Annotated[Optional[Path], typer.Option("--fill", help="A data file (.tsv/.csv/.jsonl): write each prompt filled in with every row.")] = None,
    answer: Annotated[Optional[str], typer.Option("--answer", help="With --fill: text put at [P] (e.g. '[MASK]'); default: the prompt ends where the answer goes.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="With --fill: only the first N rows.")] = None,
    data_root: DataRootOpt = None,
    split_seed: SplitSeedOpt = None,
) -> None:
    """Export the best prompts of runs as plain templates or JSON records.

    Examples:

      autoprompt-search export runs/sst2 --format txt

      autoprompt-search export runs/sst2 --format json --out sst2-prompt.json
      autoprompt-search evaluate --prompt-file sst2-prompt.json --task sst-2

      autoprompt-search export runs/sst2 --fill reviews.tsv --format jsonl --out filled.jsonl

      autoprompt-search export runs/soft-sst2 --format peft --out sst2-adapter

      autoprompt-search export runs/sst2 --format lm-eval --out lm-eval-tasks
      lm_eval --model hf --model_args pretrained=... --include_path lm-eval-tasks --tasks autoprompt_sst_2_sst2
    """
    from ...analysis.export import FORMATS, export_prompts, fill_prompts, write_filled
    from ...core.errors import UserError

    if fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fill is not None:
        records = fill_prompts(runs, fill, answer=answer, data_root=data_root, limit=limit)
        text = write_filled(records, fmt, out)
        if text is not None:
            sys.stdout.write(text)
        else:
            console.print(f"wrote {len(records)} filled prompts to {out}")
        return
    if answer is not None or limit is not None:
        raise UserError("--answer and --limit go with --fill DATA")
    result = export_prompts(runs, fmt, out, data_root=data_root, split_seed=split_seed)
    if isinstance(result, str):
        sys.stdout.write(result)
    else:
        console.print("wrote " + ", ".join(str(p) for p in result))
