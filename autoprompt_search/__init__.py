"""autoprompt-search: find hard prompts that make a frozen language model do a task better.

    from autoprompt_search import load_model, Task, evaluate_prompt
    backend = load_model("smollm2-135m")
    task = Task.load("sst-2", data_root="../shared/data")
    print(evaluate_prompt(backend, task, "{sentence} It was [P] .", split="test").metrics)
"""

__version__ = "0.1.0"

from .api import PromptSpec, evaluate_many, run_search  # noqa: E402
from .models.encoding import FewShot, PromptEncoder  # noqa: E402
from .core.errors import UserError  # noqa: E402
from .scoring.evaluation import evaluate_prompt  # noqa: E402
from .models import LMBackend, load_model, wrap_model  # noqa: E402
from .core.results import PromptResult  # noqa: E402
from .scoring.scorer import PromptScorer  # noqa: E402
from .search import SearchContext, Searcher, strategies  # noqa: E402
from .core.tasks import Task  # noqa: E402
from .core.templates import Template  # noqa: E402

__all__ = [
    "FewShot", "LMBackend", "PromptEncoder", "PromptResult", "PromptScorer", "PromptSpec",
    "SearchContext", "Searcher", "Task", "Template", "UserError", "__version__", "evaluate_many",
    "evaluate_prompt", "load_model", "run_search", "strategies", "wrap_model",
]
