"""CLI commands beyond the core ones, one module each (``search-labels``, ``project``, ...).

Each module here adds its commands to :data:`autoprompt_search.cli.app` with
``@app.command()``; :func:`autoprompt_search.cli` imports them all at start-up.
"""

import importlib
import pkgutil


def load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
