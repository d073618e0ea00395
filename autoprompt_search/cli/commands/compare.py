"""``autoprompt-search compare``: found vs human prompts on the same examples, with reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...core.devices import DEFAULT_DTYPE
from .. import (
    BatchOpt,
    CalibrationOpt,
    DataRootOpt,
    DeviceOpt,
    DtypeOpt,
    LimitOpt,
    LimitSeedOpt,
    PremiseOpt,
    ScoringOpt,
    SplitSeedOpt,
    _calibration,
    _parse_label_words,
    _scoring,
    app,
    console,
)
from ..checks import out_dir


@app.command()
def compare(
    runs: Annotated[Optional[list[Path]], typer.Argument(help="Run folders or result.json files of found prompts.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task name or YAML (default: the task of the first run).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model (default: the runs' model, else smollm2-135m).")] = None,
    split: Annotated[str, typer.Option("--split", help="train, dev or test.")] = "test",
    human: Annotated[bool, typer.Option("--human/--no-human", help="Include the task's human prompts.")] = True,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="A template typed here (repeatable).")] = None,
    label_words: Annotated[Optional[list[str]], typer.Option("--label-words", help="Verbalizer for human/typed prompts: CLASS=word[,word] (repeat per class).")] = None,
    limit: LimitOpt = None,
    limit_seed: LimitSeedOpt = 0,
    scoring: ScoringOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", callback=out_dir, help="Folder for compare.json, report.html, report.md and plots.")] = Path("compare-report"),
    resamples: Annotated[int, typer.Option("--resamples", min=100, help="Bootstrap resamples for intervals and the paired test.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    similarity: Annotated[bool, typer.Option("--similarity/--no-similarity", help="Semantic similarity to the human prompts (all-MiniLM-L6-v2).")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Keep per-prompt evaluations here and reuse them in later comparisons.")] = None,
    data_root: DataRootOpt = None,
    split_seed: SplitSeedOpt = None,
    dtype: DtypeOpt = DEFAULT_DTYPE,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    calibration: CalibrationOpt = None,
    premise: PremiseOpt = None,
    select_on: Annotated[str, typer.Option("--select-on", help="How the human baseline a user would pick is chosen, without test labels: dev (best on the dev split) or cv (k-fold cross-validation on train + dev, for a tiny dev split). Found prompts are tested against it.")] = "dev",
    folds: Annotated[Optional[int], typer.Option("--folds", help="Folds of --select-on cv (default 4; drawn with --seed).")] = None,
) -> None:
    """Compare found prompts with the task's human prompts on the same examples.

    Per prompt: accuracy and macro-F1 with bootstrap 95% intervals, a paired McNemar
    test against the human prompt a user would pick (best on dev, or --select-on cv) and
    against the oracle (the best human prompt on the compared split), similarity to the
    human prompts, the model's perplexity of the prompt text and its length in tokens; plus
    the human baselines: the literature's standard prompt, the selected one, mean/std/range
    of the human prompts and the oracle, without and with --calibration. Writes
    compare.json, report.html (self-contained) and report.md.
    Found prompts keep their stored calibration; --calibration (default: the mode the found
    prompts share) calibrates the human and typed prompts.

    Examples:

      autoprompt-search compare runs/sst2-a runs/sst2-b --task sst-2 --split test --limit 500

      autoprompt-search compare --task sst-2 --human --prompt "{sentence} Verdict: [P]" --out cmp

      autoprompt-search compare runs/trec --select-on cv --folds 4 --calibration content-free
    """
    from ...analysis.baselines import parse_selection
    from ...analysis.compare import collect_prompts, compare_prompts
    from ...analysis.report import print_table, write_reports

    calibration = _calibration(calibration, premise)
    scoring = _scoring(scoring)
    parse_selection(select_on, folds)  # a bad choice is one error line, before the model loads
    task_obj, entries = collect_prompts(task, runs or [], human, prompt or [], data_root=data_root,
                                        split_seed=split_seed,
                                        verbalizer=_parse_label_words(label_words))
    if model is None:
        models = {e.result.model for e in entries if e.result is not None}
        model = models.pop() if len(models) == 1 else "smollm2-135m"
    comp = compare_prompts(task_obj, entries, model=model, split=split, limit=limit,
                           limit_seed=limit_seed, scoring=scoring,
                           batch_size=batch_size, dtype=dtype, device=device, resamples=resamples, seed=seed,
                           similarity=similarity, cache_dir=cache_dir,
                           calibration=calibration, premise=premise, select_on=select_on,
                           folds=folds)
    print_table(comp, console)
    paths = write_reports(comp, out)
    console.print(f"wrote {paths['json']}, {paths['html']} and {paths['markdown']}")
