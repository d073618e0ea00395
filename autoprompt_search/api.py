"""Library functions behind the CLI commands (usable from Python as they are)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.errors import UserError
from .core.results import PromptResult
from .core.runs import RunDir
from .scoring.specs import PromptSpec, load_task, spec_calibration, spec_from_result

__all__ = ["PromptSpec", "evaluate_many", "load_task", "prompts_for", "run_demo", "run_search",
           "spec_from_result"]
from .core.tasks import Task

if TYPE_CHECKING:  # torch loads on first use, so bad input is reported without waiting for it
    from .models import LMBackend
    from .scoring.calibration import Calibration


def prompts_for(task: str, prompt: str | None, prompt_file: Path | None, human: bool,
                data_root=None, split_seed=None,
                verbalizer: dict[str, list[str]] | None = None) -> list[PromptSpec]:
    """The prompts an ``evaluate`` call asks for."""
    specs: list[PromptSpec] = []
    if prompt_file is not None:
        specs.append(spec_from_result(PromptResult.load(prompt_file), data_root, split_seed))
    if prompt is not None or human:
        t = load_task(task, data_root, split_seed)
        if prompt is not None:
            specs.append(PromptSpec(t, prompt, prompt, verbalizer))
        if human:
            if not t.prompts:
                raise UserError(f"task '{t.name}' lists no human prompts")
            specs += [PromptSpec(t, p.template, p.name or p.template, verbalizer or p.verbalizer)
                      for p in t.prompts]
    if not specs:
        raise UserError("nothing to evaluate: pass --prompt TEMPLATE, --prompt-file FILE or --human")
    return specs


def evaluate_many(specs: list[PromptSpec], *, model: str | LMBackend, split: str = "test",
                  dtype: str = "float32", batch_size: int = 32, limit: int | None = None,
                  limit_seed: int = 0, scoring: str | None = None,
                  progress: bool = False, device: str | None = "auto",
                  calibration: Calibration | str | None = None, premise: str | None = None,
                  **_: Any) -> list[dict[str, Any]]:
    """Evaluate prompt specs with one model load; prompts a model cannot read are skipped.

    ``limit`` scores a seeded (``limit_seed``) class-stratified sample of the split;
    ``scoring`` overrides each spec's scoring rule (None: the rule a saved result records).
    ``calibration`` (a mode) calibrates prompts without a stored calibration; a prompt with
    one (a result found with calibration) is scored with its stored offsets."""
    from .models import LMBackend, load_model
    from .scoring.evaluation import evaluate_ensemble, evaluate_prompt
    from .scoring.sequence import scoring_rule

    if scoring is not None:
        scoring = scoring_rule(scoring).value  # a bad rule is reported once, before the model loads
    backend = model if isinstance(model, LMBackend) else load_model(model, dtype=dtype, device=device)
    rows = []
    for spec in specs:
        if spec.triggers and spec.model and spec.model != backend.name:
            raise UserError(f"the prompt's trigger ids were found for model '{spec.model}', "
                            f"not '{backend.name}'; evaluate with --model {spec.model}")
        base = {"task": spec.task.name, "prompt": spec.name or spec.template,
                "template": spec.template, "model": backend.name, "split": split,
                "scoring": scoring or spec.scoring}
        try:
            if spec.ensemble:  # --strategy auto --ensemble K: the members as one predictor
                ev = evaluate_ensemble(backend, spec, split, batch_size=batch_size, limit=limit,
                                       limit_seed=limit_seed, progress=progress,
                                       calibration=calibration, premise=premise, scoring=scoring)
            else:
                ev = evaluate_prompt(backend, spec.task, spec.template, split,
                                     verbalizer=spec.verbalizer, triggers=spec.triggers,
                                     fewshot=spec.fewshot, batch_size=batch_size, limit=limit,
                                     progress=progress, rule=base["scoring"], limit_seed=limit_seed,
                                     calibration=spec_calibration(spec, calibration, scoring),
                                     premise=premise)
        except UserError as exc:
            if len(specs) == 1:
                raise
            rows.append({**base, "skipped": str(exc)})
            continue
        rows.append({**base, **ev.metrics, "calibration": (
            ev.calibration.to_json() if ev.calibration is not None else None)})
    kept = [r for r in rows if "skipped" not in r]
    if not kept:
        raise UserError("no prompt could be evaluated: " + "; ".join(r["skipped"] for r in rows))
    return kept + [r for r in rows if "skipped" in r]


def run_search(strategy: str, *, task: str | Task, model: str, template: str | None = None,
               out: str | Path = "runs/search", seed: int = 0, resume: bool = False,
               options: dict[str, Any] | None = None, data_root=None, split_seed=None,
               dtype: str = "float32", backend: LMBackend | None = None,
               progress: bool = True, device: str | None = "auto") -> PromptResult:
    """Run a search strategy; the searcher saves its result in ``out``.

    ``options`` may be a run's ``config.json``: its context keys (strategy, task, model,
    seed, ...) are checked against this call's arguments, its strategy keys applied.
    ``device`` and ``dtype`` may be ``auto``; the run's ``config.json`` records what they
    resolved to (a given ``backend`` keeps its own device and dtype)."""
    from .scoring.sequence import scoring_rule
    from .search import SearchContext, strategies

    context, settings = split_context_options(options or {})
    task_obj = task if isinstance(task, Task) else load_task(task, data_root, split_seed)
    device, dtype = _resolved_placement(backend, device, dtype)
    check_context(context, strategy=strategy, task=task_obj, model=model, seed=seed, dtype=dtype,
                  template=template)
    searcher_cls = strategies.get(strategy)
    rule = scoring_rule(settings.get("scoring", "direct")).value
    if rule != "direct" and "scoring" not in searcher_cls.Config.__dataclass_fields__:
        raise UserError(f"--scoring {rule}: the {strategy} strategy reads the label word at [P] "
                        "(direct scoring only); search with --scoring channel through the "
                        "black-box strategy (--strategy optuna)")
    searcher = searcher_cls.from_options(settings, seed=seed)
    ctx = SearchContext(task=task_obj, model=model, template=template, run=RunDir(out),
                        resume=resume, progress=progress, dtype=dtype, device=device,
                        backend_override=backend)
    return searcher.search(ctx)


def split_context_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(context keys, strategy settings) of a config mapping such as a run's ``config.json``."""
    from .search.base import CONTEXT_KEYS

    context = {k: v for k, v in options.items() if k in CONTEXT_KEYS}
    return context, {k: v for k, v in options.items() if k not in CONTEXT_KEYS}


def apply_run_settings(options: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """Take a run's settings (strategy, task, model, template, seed, dtype, data seed) out of a
    config mapping such as a run's ``config.json``; return those to apply, i.e. the ones not
    in ``given`` (the options given on the command line, which win). The strategy is checked,
    not overridden; other recorded keys (versions, the task's source) are dropped."""
    applied: dict[str, Any] = {}
    names = {"strategy": "strategy", "task": "task", "model": "model", "template": "template",
             "seed": "seed", "dtype": "dtype", "data_seed": "split_seed"}
    for key, name in names.items():
        if key not in options:
            continue
        value = options.pop(key)
        if key == "strategy" and "strategy" in given:
            options["strategy"] = value  # checked by run_search against --strategy
        elif name not in given and value is not None:
            applied[name] = value
    if "task" in given:
        options.pop("task_name", None)  # another task on purpose
    for key in ("versions", "task_source"):
        options.pop(key, None)
    return applied


def check_context(context: dict[str, Any], *, strategy: str, task: Task, model: str, seed: int,
                  dtype: str, template: str | None) -> None:
    """Refuse a config whose recorded run (strategy, task, model, seed, ...) is not this one."""
    from .core.results import task_reference

    actual = {"strategy": strategy, "model": model, "seed": seed, "dtype": dtype,
              "task_name": task.name}
    for key, value in actual.items():
        if key in context and context[key] != value:
            raise UserError(f"the config says {key} {context[key]!r} but this search has "
                            f"{value!r}; drop the key or run with --{key.replace('_', '-')} "
                            f"{context[key]}")
    if "task" in context and context["task"] not in (task.name, task_reference(task), task.source):
        raise UserError(f"the config is for task {context['task']!r}, not {task.name!r} "
                        f"({task.source}); pass --task {context['task']}")
    if template is not None and context.get("template") not in (None, template):
        raise UserError(f"the config's template {context['template']!r} differs from --template "
                        f"{template!r}")
    if context.get("data_seed") is not None and not task.data.get("hub") \
            and context["data_seed"] != task.data_seed:
        raise UserError(f"the config's data split seed {context['data_seed']} differs from this "
                        f"task's {task.data_seed}; pass --split-seed {context['data_seed']}")


def _resolved_placement(backend: LMBackend | None, device: str | None, dtype: str) -> tuple[str, str]:
    """The concrete (device, dtype) names of a search: the backend's own, or resolved."""
    from .core.devices import dtype_name, resolve_device, resolve_dtype

    if backend is not None:
        return str(backend.device), dtype_name(backend.dtype)
    where = resolve_device(device)
    return str(where), resolve_dtype(dtype, where).value


def run_demo(model: str = "smollm2-135m", task: str = "bbc-news", console=None,
             out: str | Path = "runs/demo", dtype: str = "float32",
             device: str | None = "auto") -> list[dict]:
    """The built-in demo: the human prompts of the built-in task on its test split, then a
    short gradient search from the first human prompt, saved in ``out`` (replaced each run)."""
    from rich.console import Console

    from .models import load_model

    console = console or Console()
    t = load_task(task)
    start = time.perf_counter()
    console.print(f"[bold]autoprompt-search demo[/]: task {t.name} ({t.description})")
    console.print(f"loading model {model} ...")
    backend = load_model(model, dtype=dtype, device=device)
    console.print(f"evaluating {len(t.prompts)} human prompts on the test split ...")
    rows = evaluate_many([PromptSpec(t, p.template, p.template) for p in t.prompts],
                         model=backend, split="test", progress=True)
    rows.sort(key=lambda r: -r["accuracy"])
    best, worst = rows[0], rows[-1]
    chance = 1 / len(t.labels)
    console.print(f"\n[bold]summary[/] ({time.perf_counter() - start:.0f} s, n={best['n']} test examples, "
                  f"chance {100 * chance:.0f}%):")
    for r in rows:
        console.print(f"  {100 * r['accuracy']:5.1f}%  acc, {100 * r['macro_f1']:5.1f} macro-F1  {r['prompt']}")
    console.print(f"best human prompt: {best['prompt']!r} ({100 * best['accuracy']:.1f}%); the spread "
                  f"across human wordings is {100 * (best['accuracy'] - worst['accuracy']):.1f} points.")
    found = _demo_search(t, model, backend, console, Path(out))
    start_row = next(r for r in rows if r["template"] == t.prompts[0].template)
    console.print(f"\n[bold]gradient search[/] ({found['seconds']:.0f} s, {found['iterations']} iterations, "
                  f"started from the human prompt {start_row['prompt']!r}):")
    console.print(f"  found prompt: {found['prompt']!r}")
    console.print(f"  dev accuracy {100 * found['initial_dev_accuracy']:.1f}% -> "
                  f"{100 * found['dev_accuracy']:.1f}%")
    console.print(f"  test accuracy {100 * found['accuracy']:.1f}% vs {100 * start_row['accuracy']:.1f}% "
                  f"for the starting prompt and {100 * best['accuracy']:.1f}% for the best human prompt "
                  f"({100 * (found['accuracy'] - best['accuracy']):+.1f} points)")
    console.print(f"saved: {out}/result.json, {out}/best_prompt.txt, {out}/log.jsonl")
    console.print(f"total {time.perf_counter() - start:.0f} s")
    return rows + [found]


def _demo_search(task: Task, model: str, backend: LMBackend, console, out: Path) -> dict[str, Any]:
    """A short gradient search for the demo: from the task's first human prompt, about a minute.

    The budget is in iterations, not seconds, so the demo gives the same prompt every time."""
    import shutil

    console.print("\nrunning a short gradient search from the first human prompt "
                  "(k=8, 16 examples per step, 12 iterations) ...")
    if (out / "config.json").is_file():
        shutil.rmtree(out)  # the demo's own run folder: start afresh
    result = run_search("gradient", task=task, model=model, out=out, seed=0, backend=backend,
                        options={"init": "human", "k": 8, "batch_size": 16, "iterations": 12,
                                 "position": "cycle"})
    spec = PromptSpec(task, result.template, result.prompt, result.verbalizer or None,
                      list(result.trigger_ids), None, result.model)
    row = evaluate_many([spec], model=backend, split="test", progress=True)[0]
    return {**row, "prompt": result.prompt, "dev_accuracy": result.scores["dev_accuracy"],
            "initial_dev_accuracy": result.scores["initial_dev_accuracy"],
            "iterations": result.extra["iterations"], "seconds": result.extra["seconds"],
            "strategy": "gradient"}
