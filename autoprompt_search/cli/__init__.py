"""The ``autoprompt-search`` command line: thin typer commands over library functions."""

from __future__ import annotations

import enum
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..core.config import field_help, load_yaml
from ..core.context import LongInputs
from ..core.devices import DEFAULT_DTYPE
from ..core.errors import UserError
from ..core.verbalizer import Verbalizer
from .checks import (
    BUG_LINE,
    PROG,
    help_hint,
    out_dir,
    out_file,
    print_error,
    print_warning,
    remove_unstarted_run,
    show_value,
)

app = typer.Typer(
    name=PROG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"{PROG} {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Find hard prompts that make a frozen language model do a task better.

    A mistake in the command line or in an input file prints one 'error:' line and exits
    with status 2; an interrupted search exits with 130 and continues with --resume.
    """

# shared option types
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Shipped task name (see `list`) or a task YAML file.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model alias (smollm2-135m), local folder or hub id.")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", help="Folder with the shared data (fewshot/, lama/); default $AUTOPROMPT_SEARCH_DATA or ./data.")]
SplitSeedOpt = Annotated[Optional[int], typer.Option("--split-seed", help="Which 16-shot split (13, 21, 42, 87, 100) for tasks that have several.")]
# --device / --dtype on every command that loads a model (resolved in core/devices.py)
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bfloat16 where the device computes it natively, else float32), float32, bfloat16 or float16.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Examples per forward pass.")]
LongInputsOpt = Annotated[LongInputs, typer.Option("--long-inputs", help="An example longer than the model's context: truncate its text (with a warning saying how many and by how much) or stop with an error.")]
JsonOutOpt = Annotated[Optional[Path], typer.Option("--json", callback=out_file, help="Also write the results to this JSON file.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only N examples: a class-stratified sample drawn with --limit-seed.")]
LimitSeedOpt = Annotated[int, typer.Option("--limit-seed", help="Seed of the --limit sample (same seed, same examples).")]
ScoringOpt = Annotated[Optional[str], typer.Option("--scoring", help="direct (the label word at [P]; a causal LM scores text after [P] from the word on) or channel (the input given the label first); default: direct, or the rule a --prompt-file records.")]
CalibrationOpt = Annotated[Optional[str], typer.Option("--calibration", help="Calibrated class scores: none (default), content-free, train-prior or pmi (see README, Calibration). A prompt saved with a calibration keeps its stored offsets.")]
PremiseOpt = Annotated[Optional[str], typer.Option("--premise", help="Domain premise of --calibration pmi (default 'Answer:').")]


def _calibration(value: str | None, premise: str | None = None) -> str | None:
    """``--calibration`` checked before any model loads (a bad value: one error line)."""
    from ..scoring.calibration import Calibration

    mode = None if value is None else Calibration.parse(value)
    if premise is not None and mode is not Calibration.PMI:
        raise UserError("--premise goes with --calibration pmi")
    return None if mode is None else mode.value


def _scoring(value: str | None) -> str | None:
    """``--scoring`` checked before any model loads (a bad value: one error line)."""
    from ..scoring.sequence import scoring_rule

    return None if value is None else scoring_rule(value).value


def _parse_label_words(items: list[str] | None) -> dict[str, list[str]] | None:
    verbalizer = Verbalizer.from_args(items or [])
    return None if verbalizer is None else verbalizer.to_dict()


@app.command()
def evaluate(
    task: TaskOpt = "sst-2",
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="A template, e.g. '{sentence} It was [P] .'")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option("--prompt-file", help="A result.json (or run folder) from a search or export.")] = None,
    human: Annotated[bool, typer.Option("--human", help="Evaluate every human prompt of the task.")] = False,
    model: ModelOpt = "smollm2-135m",
    split: Annotated[str, typer.Option("--split", help="train, dev or test.")] = "test",
    label_words: Annotated[Optional[list[str]], typer.Option("--label-words", help="Override the verbalizer: CLASS=word[,word] (repeat per class).")] = None,
    data_root: DataRootOpt = None,
    split_seed: SplitSeedOpt = None,
    dtype: DtypeOpt = DEFAULT_DTYPE,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    limit: LimitOpt = None,
    limit_seed: LimitSeedOpt = 0,
    scoring: ScoringOpt = None,
    long_inputs: LongInputsOpt = LongInputs.truncate,
    json_out: JsonOutOpt = None,
    calibration: CalibrationOpt = None,
    premise: PremiseOpt = None,
) -> None:
    """Score prompts on a task split: accuracy, macro-F1, per-class accuracy, n.

    Examples:

      autoprompt-search evaluate --task sst-2 --prompt "{sentence} It was [P] ." --split test

      autoprompt-search evaluate --task sst-2 --human --json human.json

      autoprompt-search evaluate --prompt-file runs/sst2/result.json --split test

      autoprompt-search evaluate --task sst-2 --human --calibration content-free

      autoprompt-search evaluate --task agnews --prompt "[P] News: {text}" --scoring channel --limit 300
    """
    from ..api import evaluate_many, prompts_for

    calibration = _calibration(calibration, premise)
    scoring = _scoring(scoring)
    specs = prompts_for(task, prompt, prompt_file, human, data_root, split_seed,
                        _parse_label_words(label_words))
    from ..models import load_model  # torch loads once the input is known to be good

    backend = load_model(model, dtype=dtype, device=device)
    backend.encoder.context.policy = long_inputs
    rows = evaluate_many(specs, model=backend, split=split, batch_size=batch_size, limit=limit,
                         limit_seed=limit_seed, scoring=scoring, progress=True,
                         calibration=calibration, premise=premise)
    _print_evaluations(rows, split)
    _warn_left_out(rows, backend)
    if json_out:
        from ..core.results import write_json

        write_json(json_out, {"model": model, "split": split, "results": rows})
        console.print(f"wrote {json_out}")


def _warn_left_out(rows: list[dict], backend) -> None:
    """Warnings about examples that were cut (too long) or facts left out (multi-token objects)."""
    cut = backend.encoder.context.summary()
    if cut:
        print_warning(cut)
    skipped = max((r.get("skipped_multi_token", 0) for r in rows), default=0)
    if skipped:
        n = rows[0]["n"]
        print_warning(f"{skipped} of {n + skipped} facts were left out: their object is several "
                      f"tokens in the vocabulary of {backend.name}, and retrieval ranks single tokens")


def _print_evaluations(all_rows: list[dict], split: str) -> None:
    rows = sorted((r for r in all_rows if "skipped" not in r), key=lambda r: -r["accuracy"])
    retrieval = "precision_at_1" in rows[0]
    table = Table(title=f"{rows[0]['task']} - {split} (n={rows[0]['n']})")
    table.add_column("prompt", overflow="fold")
    if retrieval:
        for col in ("P@1", "P@10", "MRR"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(r["prompt"], f"{100 * r['precision_at_1']:.1f}",
                          f"{100 * r['precision_at_10']:.1f}", f"{r['mrr']:.3f}")
    else:
        table.add_column("accuracy", justify="right")
        table.add_column("macro-F1", justify="right")
        table.add_column("per-class accuracy", overflow="fold")
        for r in rows:
            per = ", ".join(f"{k} {100 * v:.0f}" for k, v in r["per_class_accuracy"].items()
                            if v is not None)
            table.add_row(r["prompt"], f"{100 * r['accuracy']:.1f}", f"{100 * r['macro_f1']:.1f}", per)
    console.print(table)
    for r in all_rows:
        if r.get("skipped"):
            err_console.print(f"[yellow]skipped[/] {r['prompt']!r}: {r['skipped']}")


class Listing(str, enum.Enum):
    """What ``list`` lists."""

    tasks = "tasks"
    models = "models"
    strategies = "strategies"


@app.command("list")
def list_(what: Annotated[Listing, typer.Argument(help="What to list.")] = Listing.tasks) -> None:
    """List shipped tasks, model aliases or search strategies."""
    if what == Listing.tasks:
        from ..core.tasks import available_tasks

        for name, path in available_tasks().items():
            console.print(f"{name:16s} {path}")
    elif what == Listing.models:
        from ..models import model_aliases

        for name in model_aliases:
            console.print(name)
    else:
        from ..search import strategies

        for name in strategies:
            console.print(name)


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Task or search-space YAML files.")],
    data: Annotated[bool, typer.Option("--data/--no-data", help="Also read every data split of tasks.")] = False,
    data_root: DataRootOpt = None,
) -> None:
    """Check YAML files: keys, templates, verbalizers (and with --data, the data files)."""
    from ..core.validate import validate_file

    for path in paths:
        console.print(f"[green]ok[/] {path}: {validate_file(path, data=data, data_root=data_root)}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def search(
    ctx: typer.Context,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="Search strategy (see `list strategies`).")] = "gradient",
    task: TaskOpt = "sst-2",
    model: ModelOpt = "smollm2-135m",
    template: Annotated[Optional[str], typer.Option("--template", help="Template with [T] slots and one [P].")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", callback=out_dir, help="Run folder for config, checkpoints, log and result.")] = Path("runs/search"),
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same result.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of strategy settings, or a run's config.json (its strategy, task, model, template and seed apply unless given).")] = None,
    data_root: DataRootOpt = None,
    split_seed: SplitSeedOpt = None,
    dtype: DtypeOpt = DEFAULT_DTYPE,
    device: DeviceOpt = "auto",
    show_options: Annotated[bool, typer.Option("--show-options", help="List the strategy's settings and exit.")] = False,
    calibration: CalibrationOpt = None,
    premise: PremiseOpt = None,
) -> None:
    """Search for a prompt. Strategy settings follow as --name value (see --show-options).

    Example:

      autoprompt-search search --strategy gradient --task sst-2 --template "{sentence} [T] [T] [T] [P] ." --out runs/sst2

      autoprompt-search search --strategy gradient --task sst-2 --calibration content-free --out runs/sst2-cf
    """
    from ..api import apply_run_settings, run_search
    from ..search import strategies

    calibration = _calibration(calibration, premise)
    searcher_cls = strategies.get(strategy)
    if show_options:
        table = Table(title=f"settings of strategy '{strategy}'")
        for col in ("option", "default", "help"):
            table.add_column(col, overflow="fold")
        for name, help_, default in field_help(searcher_cls.Config):
            table.add_row("--" + name.replace("_", "-"), show_value(default), help_)
        console.print(table)
        return
    options = load_yaml(config) if config else {}
    if config:  # a run's config.json: its run settings apply unless given on the command line
        given = {name for name in ("strategy", "task", "model", "template", "seed", "dtype", "split_seed")
                 if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"}
        applied = apply_run_settings(options, given)
        strategy = applied.pop("strategy", strategy)
        task, model, template = (applied.pop(k, v) for k, v in
                                 (("task", task), ("model", model), ("template", template)))
        seed, dtype, split_seed = (applied.pop(k, v) for k, v in
                                   (("seed", seed), ("dtype", dtype), ("split_seed", split_seed)))
    options.update(_extra_options(ctx.args))
    if calibration is not None:
        options["calibration"] = calibration
    if premise is not None:
        options["premise"] = premise
    existed = out.exists()
    try:
        result = run_search(strategy, task=str(task), model=model, template=template, out=out,
                            seed=seed, resume=resume, options=options, data_root=data_root,
                            split_seed=split_seed, dtype=dtype, device=device)
    except UserError:
        remove_unstarted_run(out, existed)
        raise
    console.print(f"[bold]best prompt[/]: {result.prompt}")
    console.print("scores: " + ", ".join(f"{k} {v:.4f}" for k, v in result.scores.items()))
    console.print(f"saved to {out}/result.json and {out}/best_prompt.txt")


def _extra_options(args: list[str]) -> dict[str, str]:
    """``--name value`` / ``--name=value`` / ``--flag`` pairs left over for the strategy."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}; strategy settings are --name value")
        name = arg[2:]
        if "=" in name:
            name, value = name.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        else:
            value = "true"
        out[name] = value
        i += 1
    return out


@app.command()
def demo(
    model: ModelOpt = "smollm2-135m",
    task: TaskOpt = "bbc-news",
    out: Annotated[Path, typer.Option("--out", "-o", callback=out_dir, help="Run folder of the demo's search (replaced each run).")] = Path("runs/demo"),
    dtype: DtypeOpt = DEFAULT_DTYPE,
    device: DeviceOpt = "auto",
) -> None:
    """The main job on the built-in default: BBC News topics with SmolLM2, no data folder needed.

    Evaluates the task's human prompts on its test split, then runs a short gradient search
    from the first human prompt and compares the two."""
    from ..api import run_demo

    run_demo(model=model, task=task, console=console, out=out, dtype=dtype, device=device)


def _load_commands() -> None:
    from .commands import load_all

    load_all()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes print one ``error:`` line and exit 2, without a traceback."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    _load_commands()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except UserError as exc:
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:  # typer's own click: unknown command/option, bad value, ...
        path = exc.ctx.command_path if exc.ctx else _command_path(command, argv)
        print_error(exc.format_message(), help_hint(path))
        sys.exit(2)
    except ClickException as exc:
        print_error(exc.format_message())
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Abort:
        print_error("aborted")
        sys.exit(1)
    except Exception:  # noqa: BLE001 - a bug: show everything a report needs
        traceback.print_exc()
        sys.stderr.write(BUG_LINE + "\n")
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C during a command into exit code 130
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


def _command_path(command, argv: list[str] | None) -> str:
    """``autoprompt-search CMD`` for the command named on the command line, if any."""
    args = sys.argv[1:] if argv is None else argv
    name = next((a for a in args if not a.startswith("-")), None)
    return f"{PROG} {name}" if name in getattr(command, "commands", {}) else PROG


def _interrupted() -> None:
    sys.stderr.write("interrupted; resume a search with --resume\n")
    sys.exit(130)


if __name__ == "__main__":
    main()
