"""``python -m autoprompt_search.cli``: the same as the ``autoprompt-search`` command."""

from . import main

main()
