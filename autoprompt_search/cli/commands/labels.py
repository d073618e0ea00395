"""``autoprompt-search search-labels``: propose label words per class (AutoPrompt section 2.3,
or ``--mode cached``: candidates screened from one cached pass and chosen by held-out folds)."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ...core.devices import DEFAULT_DTYPE
from ...core.errors import UserError
from .. import (
    DataRootOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    SplitSeedOpt,
    TaskOpt,
    _parse_label_words,
    app,
    console,
)
from ..checks import out_file


class LabelMode(str, enum.Enum):
    """How search-labels finds words."""

    PROBE = "probe"  # AutoPrompt's logistic-regression probe
    CACHED = "cached"  # candidates screened from cached distributions, chosen by folds


class CalibrateChoice(str, enum.Enum):
    NONE = "none"
    TRAIN_PRIOR = "train-prior"


@app.command("search-labels")
def search_labels(
    task: TaskOpt = "sst-2",
    model: ModelOpt = "smollm2-135m",
    template: Annotated[str | None, typer.Option("--template", help="Template with one [P] (its [T] slots hold [MASK] / --init-word); default: the task's first human prompt.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Label words per class.")] = 3,
    whole_words: Annotated[bool, typer.Option("--whole-words/--no-whole-words", help="Only whole-word tokens (letters, start of a word).")] = True,
    deny: Annotated[list[str] | None, typer.Option("--deny", help="A word never proposed (repeat).")] = None,
    l2: Annotated[float, typer.Option("--l2", min=0.0, help="L2 penalty of the logistic-regression probe.")] = 1e-2,
    mode: Annotated[LabelMode, typer.Option("--mode", help="probe: AutoPrompt's probe; cached: screen candidates from one cached pass, choose by held-out folds.")] = LabelMode.PROBE,
    candidates: Annotated[list[str] | None, typer.Option("--candidates", help="cached: candidate words CLASS=w1,w2 (repeat per class).")] = None,
    neighbours: Annotated[int, typer.Option("--neighbours", min=0, help="cached: nearest tokens to the class name (input-embedding cosine) added as candidates.")] = 5,
    probe_words: Annotated[int, typer.Option("--probe-words", min=0, help="cached: probe words per class added as candidates (refit per fold; 0: no probe).")] = 3,
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="cached: candidates per class kept by contrast score before combining.")] = 4,
    max_words: Annotated[int, typer.Option("--max-words", min=1, help="cached: settings tried: 1 up to this many words per class.")] = 2,
    folds: Annotated[int, typer.Option("--folds", min=2, help="cached: folds over train + dev for choosing.")] = 4,
    spread_penalty: Annotated[float, typer.Option("--spread-penalty", min=0.0, help="cached: choose by mean held-out accuracy minus this times its standard deviation.")] = 0.5,
    calibrate: Annotated[list[CalibrateChoice] | None, typer.Option("--calibrate", help="cached: calibration settings tried (repeat; default none).")] = None,
    cache_top_k: Annotated[int | None, typer.Option("--cache-top-k", min=1, help="cached: keep only each example's top-k tokens (large data).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", callback=out_file, help="Write the verbalizer YAML here (cached: and the fold scores to the same name with .json).")] = None,
    data_root: DataRootOpt = None,
    split_seed: SplitSeedOpt = None,
    dtype: DtypeOpt = DEFAULT_DTYPE,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Find label words: train a logistic regression on the [P] features, rank the vocabulary.

    Prints the words per class, a ``verbalizer:`` YAML block to paste into a task file, and
    the same words as ``evaluate --label-words`` arguments.

    Example:

      autoprompt-search search-labels --task sst-2 --template "{sentence} It was [P] ." --top-k 3 --out labels.yaml

      autoprompt-search search-labels --mode cached --task sst-2 --candidates positive=good,fine --out labels.yaml
    """
    from ...api import load_task
    from ...models import load_model
    from ...search.labels import search_label_words

    if mode is LabelMode.CACHED:
        _search_cached(task, model, template, _parse_label_words(candidates), neighbours,
                       probe_words, per_class, max_words, folds, spread_penalty,
                       calibrate or [CalibrateChoice.NONE], cache_top_k, whole_words, deny, l2,
                       out, data_root, split_seed, dtype, device, seed)
        return
    if candidates:
        raise UserError("--candidates is for --mode cached")
    task_obj = load_task(task, data_root, split_seed)
    backend = load_model(model, dtype=dtype, device=device)
    result = search_label_words(backend, task_obj, template, top_k=top_k, whole_words=whole_words,
                                deny=deny or (), l2=l2, seed=seed)
    table = Table(title=f"label words for {task_obj.name} ({backend.name}), template {result.template!r}")
    table.add_column("class")
    table.add_column("words (score)", overflow="fold")
    for label, words in result.verbalizer.items():
        table.add_row(label, ", ".join(f"{w} ({s:.2f})" for w, s in zip(words, result.scores[label])))
    console.print(table)
    dev = f"; template with these words: dev accuracy {result.dev_accuracy:.3f}" \
        if result.dev_accuracy is not None else ""
    console.print(f"probe accuracy: train {result.probe_train_accuracy:.3f}, "
                  f"dev {result.probe_dev_accuracy:.3f}{dev}")
    _print_block(result)
    if out is not None:
        result.save(out)
        console.print(f"wrote {out}")


def _print_block(result) -> None:
    console.print("\nverbalizer for a task file:")
    block = "verbalizer:\n" + "".join(f"  {lab}: [{', '.join(json.dumps(w) for w in words)}]\n"
                                      for lab, words in result.verbalizer.items())
    console.print(block, markup=False, highlight=False)
    console.print("as evaluate arguments: " + result.label_words_args(), markup=False,
                  highlight=False)


def _search_cached(task, model, template, candidates, neighbours, probe_words, per_class,
                   max_words, folds, spread_penalty, calibrate, cache_top_k, whole_words, deny,
                   l2, out, data_root, split_seed, dtype, device, seed) -> None:
    from ...api import load_task
    from ...models import load_model
    from ...search.cached_labels import search_label_words_cached
    from ...search.verbalizers import Calibration

    task_obj = load_task(task, data_root, split_seed)
    backend = load_model(model, dtype=dtype, device=device)
    result = search_label_words_cached(
        backend, task_obj, template, candidates=candidates, neighbours=neighbours,
        probe_words=probe_words, per_class=per_class, max_words=max_words, folds=folds,
        spread_penalty=spread_penalty, calibrations=[Calibration(c.value) for c in calibrate],
        cache_top_k=cache_top_k, whole_words=whole_words, deny=deny or (), l2=l2, seed=seed)
    table = Table(title=f"settings by held-out accuracy over {folds} folds ({task_obj.name}, "
                        f"{backend.name}), template {result.template!r}")
    for col in ("setting", "held-out mean", "std", "score", "in-fold mean"):
        table.add_column(col)
    for r in sorted(result.settings, key=lambda r: -r["score"]):
        table.add_row(r["setting"], f"{r['mean']:.3f}", f"{r['std']:.3f}", f"{r['score']:.3f}",
                      f"{sum(r['in_fold']) / len(r['in_fold']):.3f}")
    console.print(table)
    console.print(f"chosen: {result.setting} (refit on all {result.timing['examples']} train + dev "
                  f"examples; accuracy on them {result.in_sample_accuracy:.3f}, optimistic)")
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    _print_block(result)
    if out is not None:
        json_path = out.with_suffix(".json")
        result.save(out, json_path)
        console.print(f"wrote {out} and {json_path}")
