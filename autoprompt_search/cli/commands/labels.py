"""``autoprompt-search search-labels``: propose label words per class (AutoPrompt section 2.3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ...core.devices import DEFAULT_DTYPE
from .. import DataRootOpt, DeviceOpt, DtypeOpt, ModelOpt, SplitSeedOpt, TaskOpt, app, console


@app.command("search-labels")
def search_labels(
    task: TaskOpt = "sst-2",
    model: ModelOpt = "smollm2-135m",
    template: Annotated[Optional[str], typer.Option("--template", help="Template with one [P] (its [T] slots hold [MASK] / --init-word); default: the task's first human prompt.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Label words per class.")] = 3,
    whole_words: Annotated[bool, typer.Option("--whole-words/--no-whole-words", help="Only whole-word tokens (letters, start of a word).")] = True,
    deny: Annotated[Optional[list[str]], typer.Option("--deny", help="A word never proposed (repeat).")] = None,
    l2: Annotated[float, typer.Option("--l2", min=0.0, help="L2 penalty of the logistic-regression probe.")] = 1e-2,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the verbalizer YAML here.")] = None,
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
    """
    from ...api import load_task
    from ...models import load_model
    from ...search.labels import search_label_words

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
    console.print("\nverbalizer for a task file:")
    block = "verbalizer:\n" + "".join(f"  {lab}: [{', '.join(json.dumps(w) for w in words)}]\n"
                                      for lab, words in result.verbalizer.items())
    console.print(block, markup=False, highlight=False)
    console.print("as evaluate arguments: " + result.label_words_args(), markup=False,
                  highlight=False)
    if out is not None:
        result.save(out)
        console.print(f"wrote {out}")
