"""Hugging Face ``datasets`` as a data source: hub ids, ``save_to_disk`` folders, parquet files.

A task file names the dataset under ``data.hub`` and may map split and column names::

    data:
      hub: glue                # a hub id, a folder written by save_to_disk, or a .parquet file
      hub_config: sst2         # the dataset's configuration, if it has several
      splits: {dev: validation}  # our split -> the dataset's (this mapping is the default)
      columns: {sentence: text}  # our field or label_field -> the dataset's column

The dataset is loaded once per task (all splits together) and each split's rows are
kept, so ``Task.examples`` can be called repeatedly without reloading. Integer labels
(``ClassLabel``) index the task's ``labels`` in order. Loading needs the ``hub`` extra
(``pip install 'autoprompt-search[hub]'``), and a network only for hub ids that are
not yet in the Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

DEFAULT_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


class HubSource:
    """One ``datasets`` dataset with its split and column mappings; loads once, on first use."""

    def __init__(self, name: str, *, config: str | None = None, splits: dict[str, str] | None = None,
                 columns: dict[str, str] | None = None, base_dir: Path = Path(".")) -> None:
        self.name = str(name)
        self.config = config
        self.splits = {**DEFAULT_SPLITS, **{str(k): str(v) for k, v in (splits or {}).items()}}
        self.columns = {str(k): str(v) for k, v in (columns or {}).items()}
        local = Path(self.name).expanduser()
        self.local = local if local.is_absolute() else base_dir / local
        self._dataset: Any = None
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self.loads = 0  # how many times the dataset was read (once per task)

    @property
    def source(self) -> str:
        return f"dataset {self.name}" + (f" ({self.config})" if self.config else "")

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The rows of our ``split`` (train, dev or test), columns renamed to the task's names."""
        if split not in self._rows:
            dataset = self._load()
            name = self._split_name(dataset, split)
            rows = [dict(r) for r in dataset[name]]
            self._rows[split] = [self._rename(r, name) for r in rows]
        return self._rows[split]

    # --- loading ---------------------------------------------------------------------
    def _load(self):
        if self._dataset is None:
            datasets = _datasets_module(self.name)
            self._dataset = self._read(datasets)
            self.loads += 1
        return self._dataset

    def _read(self, datasets):
        path = self.local
        try:
            if path.is_dir() and ((path / "dataset_dict.json").is_file()
                                  or (path / "dataset_info.json").is_file()):
                ds = datasets.load_from_disk(str(path))
            elif path.is_file() and path.suffix.lower() == ".parquet":
                ds = datasets.load_dataset("parquet", data_files={"train": str(path)})
            elif path.exists():
                ds = datasets.load_dataset(str(path), self.config)
            else:
                ds = datasets.load_dataset(self.name, self.config)
        except Exception as exc:  # noqa: BLE001 - any datasets failure is the user's to fix
            where = str(path) if path.exists() else f"'{self.name}' from the hub"
            raise UserError(
                f"could not load the dataset {where} ({type(exc).__name__}: {_first_line(exc)}); "
                "without a network, save it elsewhere with save_to_disk or as parquet and point "
                "the task's data.hub at that folder or file"
            ) from None
        if isinstance(ds, datasets.Dataset):  # a single split (one parquet file, a saved Dataset)
            ds = datasets.DatasetDict({"train": ds})
        return ds

    def _split_name(self, dataset, split: str) -> str:
        available = list(dataset.keys())
        wanted = self.splits.get(split, split)
        for name in (wanted, split):
            if name in available:
                return name
        raise UserError(f"{self.source} has no split '{wanted}' for our '{split}' split; its splits are "
                        f"{', '.join(available)} (map them with data.splits, e.g. {{dev: {available[0]}}})")

    def _rename(self, row: dict[str, Any], split: str) -> dict[str, Any]:
        if not self.columns:
            return row
        missing = [c for c in self.columns.values() if c not in row]
        if missing:
            raise UserError(f"{self.source} split '{split}' has no column {', '.join(missing)} named in "
                            f"data.columns; its columns: {', '.join(row)}")
        theirs = {v: k for k, v in self.columns.items()}
        return {theirs.get(k, k): v for k, v in row.items()}


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file (needs pyarrow, which the ``hub`` extra installs)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading parquet files needs pyarrow: "
                        "pip install 'autoprompt-search[hub]'") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's to fix
        raise UserError(f"{path}: not a readable parquet file ({_first_line(exc)})") from None


def _datasets_module(name: str):
    try:
        import datasets
    except ImportError:
        raise UserError(f"the task reads the dataset '{name}', which needs the datasets package: "
                        "pip install 'autoprompt-search[hub]'") from None
    return datasets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
