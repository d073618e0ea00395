"""The Searcher interface every strategy implements, and the strategy registry.

Like Optuna's ``BaseSampler``: a tiny abstract core, a config dataclass, its own
RNG seeded in the constructor, no global state. ``search`` returns a
:class:`~autoprompt_search.core.results.PromptResult` instead of mutating its inputs.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.config import from_mapping, to_jsonable
from ..models import LMBackend, load_model
from ..core.registry import Registry
from ..core.results import PromptResult
from ..core.runs import RunDir
from ..core.tasks import Task


@dataclass
class SearchContext:
    """What a search works on: the task, the model, the template and the run folder."""

    task: Task
    model: str  # model spec (alias, folder or hub id); workers may load their own copy
    template: str | None = None
    run: RunDir | None = None
    resume: bool = False
    progress: bool = True
    dtype: str = "float32"  # resolved by api.run_search: never "auto" in a run's config.json
    device: str | None = None  # resolved likewise: "cpu", "cuda:0", "mps"
    backend_override: LMBackend | None = field(default=None, repr=False)

    @cached_property
    def backend(self) -> LMBackend:
        """The model, loaded once on first use (or the backend passed in)."""
        if self.backend_override is not None:
            return self.backend_override
        return load_model(self.model, dtype=self.dtype, device=self.device)


class Searcher(ABC):
    """A prompt-search strategy. Subclasses set ``name`` and ``Config`` and implement ``search``."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any = None, seed: int = 0) -> None:
        self.config = config if config is not None else self.Config()
        self.seed = int(seed)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.torch_rng = torch.Generator().manual_seed(self.seed)

    @classmethod
    def from_options(cls, options: dict[str, Any], seed: int = 0, source: str = "options") -> Searcher:
        """Build from a mapping of option names (``kebab-case`` or ``snake_case``)."""
        data = {k.replace("-", "_"): v for k, v in options.items()}
        return cls(from_mapping(cls.Config, data, f"{source} for strategy '{cls.name}'"), seed)

    def resolved_config(self, ctx: SearchContext) -> dict[str, Any]:
        """The full config recorded in the run folder and the result."""
        return {
            "strategy": self.name, "seed": self.seed, "task": ctx.task.name,
            "task_source": ctx.task.source, "data_seed": ctx.task.data_seed if not
            ctx.task.data.get("hub") else None, "model": ctx.model, "dtype": ctx.dtype,
            "device": ctx.device, "template": ctx.template, **to_jsonable(self.config),
        }

    @abstractmethod
    def search(self, ctx: SearchContext) -> PromptResult:
        """Run the search and return the best prompt found."""


strategies: Registry[type[Searcher]] = Registry("search strategy")
