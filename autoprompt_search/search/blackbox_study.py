"""The Optuna side of the black-box search: samplers, pruners and storages by name,
trial records, plots, and a scope that quiets Optuna's logging and restores it.

Samplers, pruners and storage kinds are closed choices (``str`` enums); each name is
declared once, in its enum, and dispatched through a :class:`Registry`.
"""

from __future__ import annotations

import contextlib
import enum
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..core.errors import UserError
from ..core.registry import Registry

if TYPE_CHECKING:
    from .blackbox import OptunaConfig


class SamplerName(str, enum.Enum):
    tpe = "tpe"
    nsga2 = "nsga2"
    random = "random"


class PrunerName(str, enum.Enum):
    wilcoxon = "wilcoxon"
    none = "none"


class StorageKind(str, enum.Enum):
    journal = "journal"  # study.journal in the run folder
    memory = "memory"
    rdb = "rdb"  # a database URL (postgresql://..., sqlite:///...)


SamplerFactory = Callable[["OptunaConfig", int], optuna.samplers.BaseSampler]
samplers: Registry[SamplerFactory] = Registry("sampler")
pruners: Registry[Callable[[OptunaConfig], optuna.pruners.BasePruner]] = Registry("pruner")
StorageFactory = Callable[[str, "Path | None"], optuna.storages.BaseStorage]
storages: Registry[StorageFactory] = Registry("storage")


@samplers.register(SamplerName.tpe.value)
def _tpe(cfg: OptunaConfig, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                      n_startup_trials=cfg.startup_trials)


@samplers.register(SamplerName.nsga2.value)
def _nsga2(cfg: OptunaConfig, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=cfg.population)


@samplers.register(SamplerName.random.value)
def _random(cfg: OptunaConfig, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


@pruners.register(PrunerName.wilcoxon.value)
def _wilcoxon(cfg: OptunaConfig) -> optuna.pruners.BasePruner:
    with warnings.catch_warnings():  # WilcoxonPruner is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.WilcoxonPruner(p_threshold=cfg.p_threshold)


@pruners.register(PrunerName.none.value)
def _no_pruner(cfg: OptunaConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


E = TypeVar("E", bound=enum.Enum)


def choice(names: type[E], registry: Registry, value: Any, option: str) -> E:
    """The enum member for ``value``; an unknown name is a user error naming the choices."""
    value = value.value if isinstance(value, enum.Enum) else str(value)
    if value not in registry:
        raise UserError(f"{option} {value!r}: choose {', '.join(m.value for m in names)}")
    return names(value)


def storage_kind(value: str) -> StorageKind:
    """``journal``, ``memory``, or ``rdb`` for a database URL."""
    if "://" in value:
        return StorageKind.rdb
    if value == StorageKind.rdb.value or value not in storages:
        raise UserError(f"--storage {value!r}: use journal, memory or a database URL such as "
                        "postgresql://user@host/db or sqlite:///study.db")
    return StorageKind(value)


@storages.register(StorageKind.journal.value)
def _journal(value: str, folder: Path | None) -> optuna.storages.BaseStorage:
    if folder is None:  # no run folder: nothing to write the journal into
        return optuna.storages.InMemoryStorage()
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(folder / "study.journal")))


@storages.register(StorageKind.memory.value)
def _memory(value: str, folder: Path | None) -> optuna.storages.BaseStorage:
    return optuna.storages.InMemoryStorage()


@storages.register(StorageKind.rdb.value)
def _rdb(value: str, folder: Path | None) -> optuna.storages.BaseStorage:
    try:
        return optuna.storages.RDBStorage(value)
    except ImportError as exc:
        raise UserError(f"--storage {value}: a database driver is missing ({exc})") from None


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs warnings only inside the block; its verbosity is restored after."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


# --- trial records --------------------------------------------------------------------
def counted(t: FrozenTrial) -> bool:
    """Whether a finished trial uses up budget (interrupted trials are re-run instead)."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and "error" in t.user_attrs)


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Counted trials in the order they finished."""
    done = [t for t in study.get_trials(deepcopy=False) if counted(t)]
    return sorted(done, key=lambda t: (t.datetime_complete or t.datetime_start, t.number))


def best_value(study: optuna.Study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


def record(t: FrozenTrial, step: int) -> dict[str, Any]:
    """One log.jsonl / trials.json record."""
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    value = t.value if t.state == TrialState.COMPLETE else None
    return {"step": step, "trial": t.number, "state": t.state.name, "value": value,
            "partial_accuracy": t.user_attrs.get("partial_accuracy"),
            "examples": t.user_attrs.get("examples"), "human": t.user_attrs.get("human"),
            "error": t.user_attrs.get("error"), "seconds": seconds, "params": t.params}


def save_plots(study: optuna.Study, folder: Path) -> dict[str, str]:
    """Optimisation history and parameter importances as PNG files (the current matplotlib backend; closed after saving)."""
    import matplotlib.pyplot as plt  # no backend switch: savefig works under any backend
    from optuna.visualization import matplotlib as ovm

    out: dict[str, str] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {"optimization_history.png": ovm.plot_optimization_history}
    varied = {k for t in complete for k in t.params if len({str(s.params.get(k)) for s in complete}) > 1}
    if len(complete) >= 2 and varied:
        plots["param_importances.png"] = ovm.plot_param_importances
    else:
        out["param_importances.png"] = "skipped: fewer than 2 completed trials with varied params"
    for name, fn in plots.items():
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = fn(study)
        except (ValueError, RuntimeError) as exc:  # optuna refuses (e.g. one distinct value)
            out[name] = f"skipped: {exc}"
            continue
        ax.figure.tight_layout()
        ax.figure.savefig(folder / name, dpi=100)
        plt.close(ax.figure)
        out[name] = str(folder / name)
    return out
