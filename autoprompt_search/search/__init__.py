"""Search strategies, all behind :class:`Searcher`; each registers itself by name."""
# ruff: noqa: I001  (strategies register, and are listed, in this order)

from .base import SearchContext, Searcher, strategies

__all__ = ["SearchContext", "Searcher", "strategies"]
from . import gradient  # noqa: E402,F401  (registers "gradient")
from . import blackbox  # noqa: E402,F401  (registers the 'optuna' strategy)
from . import pez, soft  # noqa: E402,F401  (registers "pez" and "soft")
from . import auto  # noqa: E402,F401  (registers "auto")
