"""``project``: map a soft prompt to its nearest vocabulary tokens; ``fluency``: prompt perplexity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ...core.devices import DEFAULT_DTYPE
from ...core.errors import UserError
from .. import (  # noqa: F401
    BatchOpt,
    CalibrationOpt,
    DataRootOpt,
    DeviceOpt,
    DtypeOpt,
    LimitOpt,
    LimitSeedOpt,
    PremiseOpt,
    SplitSeedOpt,
    _calibration,
    app,
    console,
)
from ..checks import out_file


@app.command()
def project(
    soft: Annotated[Path, typer.Argument(help="A soft prompt (run folder of --strategy soft, or its "
                                              "soft_prompt.json) or a PEFT prompt-tuning adapter folder.")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model (default: the one the soft prompt records).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task to evaluate on (default: the soft prompt's).")] = None,
    template: Annotated[Optional[str], typer.Option("--template", help="Template whose [T] slots the vectors fill (default: the saved one; for PEFT adapters the virtual tokens before the task's first human prompt).")] = None,
    metric: Annotated[str, typer.Option("--metric", help="cosine, euclidean or dot.")] = "cosine",
    top: Annotated[int, typer.Option("--top", min=1, help="Neighbours to list per slot.")] = 5,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate the soft and projected prompt on.")] = "dev",
    limit: LimitOpt = None,
    limit_seed: LimitSeedOpt = 0,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Evaluate soft and projected prompts.")] = True,
    whole_words: Annotated[bool, typer.Option("--whole-words/--any-tokens", help="Project onto word-start alphabetic tokens only (the gradient search's filter).")] = True,
    ascii_only: Annotated[bool, typer.Option("--ascii-only/--any-script", help="Project onto printable-ASCII tokens only.")] = True,
    data_root: DataRootOpt = None,
    split_seed: SplitSeedOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", callback=out_file, help="Also write the report to this JSON file.")] = None,
    dtype: DtypeOpt = DEFAULT_DTYPE,
    device: DeviceOpt = "auto",
    calibration: CalibrationOpt = None,
    premise: PremiseOpt = None,
) -> None:
    """Project a soft prompt to its nearest vocabulary tokens and compare the two.

    Prints, per [T] slot, the nearest token, its distance and the next neighbours; the
    projected prompt as text; and the accuracy of the soft and of the projected prompt
    on the same examples.

    Examples:

      autoprompt-search project runs/soft-sst2 --split test --limit 200

      autoprompt-search project my-peft-adapter/ --model smollm2-135m --task sst-2
    """
    from ...api import load_task
    from ...core.projection import check_metric
    from ...core.results import write_json
    from ...models import load_model
    from ...scoring.softprompt import SoftPrompt, project_soft_prompt

    check_metric(metric)
    calibration = _calibration(calibration, premise)
    sp = SoftPrompt.load(soft)
    model = model or sp.model
    if model is None:
        raise UserError(f"{soft}: the soft prompt names no base model; pass --model")
    task_name = task or sp.task
    if task is None and sp.task is not None:
        # the task the soft prompt was trained on: its file and its split seed
        source = sp.config.get("task_source")
        if source and Path(source).is_file():
            task_name = source
        if split_seed is None:
            split_seed = sp.config.get("data_seed")
    task_obj = load_task(task_name, data_root, split_seed) if task_name else None
    backend = load_model(model, dtype=dtype, device=device)
    report = project_soft_prompt(sp, backend, metric=metric, top_n=top, whole_words=whole_words,
                                 ascii_only=ascii_only, task=task_obj, template=template, split=split,
                                 limit=limit, limit_seed=limit_seed, evaluate=evaluate, progress=True,
                                 calibration=calibration, premise=premise)
    table = Table(title=f"nearest tokens ({metric} distance) - {backend.name}")
    for col in ("slot", "nearest", "distance", "next neighbours"):
        table.add_column(col, overflow="fold")
    for s in report["slots"]:
        neigh = ", ".join(f"{n['token']!r} {n['distance']:.3f}" for n in s["neighbours"])
        table.add_row(str(s["slot"]), repr(s["token"]), f"{s['distance']:.3f}", neigh)
    console.print(table)
    console.print(f"mean distance to the nearest token: {report['mean_distance']:.4f}")
    if "prompt" in report:
        console.print(f"[bold]projected prompt[/]: {report['prompt']}")
        if not report["round_trips"]:
            console.print("[yellow]note[/]: this text does not re-tokenise to the projected ids")
    ev = report.get("evaluation")
    if ev:
        res = Table(title=f"{ev['task']} - {ev['split']} (n={ev['n']})")
        for col in ("prompt", "accuracy", "macro-F1"):
            res.add_column(col)
        for name in ("soft", "projected"):
            res.add_row(name, f"{100 * ev[name]['accuracy']:.1f}", f"{100 * ev[name]['macro_f1']:.1f}")
        console.print(res)
    elif task_obj is None:
        console.print("no task known: pass --task to evaluate the soft and the projected prompt")
    if json_out:
        write_json(json_out, report)
        console.print(f"wrote {json_out}")


@app.command()
def fluency(
    results: Annotated[list[Path], typer.Argument(help="result.json files (or run folders) of found prompts.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Causal LM that judges fluency.")] = "smollm2-135m",
    dtype: DtypeOpt = DEFAULT_DTYPE,
    device: DeviceOpt = "auto",
) -> None:
    """Perplexity of found prompts under a causal LM: of the trigger tokens and of the whole prompt.

    Example:

      autoprompt-search fluency runs/pez-sst2 runs/gradient-sst2
    """
    from ...analysis.fluency import prompt_fluency
    from ...core.results import PromptResult
    from ...models import load_model

    backend = load_model(model, dtype=dtype, device=device)
    table = Table(title=f"prompt perplexity under {backend.name}")
    for col in ("prompt", "trigger ppl", "prompt ppl"):
        table.add_column(col, overflow="fold")
    for path in results:
        res = PromptResult.load(path)
        trig = "".join(res.trigger_tokens)
        f = prompt_fluency(backend, trig, res.prompt)
        table.add_row(res.prompt, f"{f['trigger_ppl']:.1f}" if "trigger_ppl" in f else "-",
                      f"{f['prompt_ppl']:.1f}")
    console.print(table)
