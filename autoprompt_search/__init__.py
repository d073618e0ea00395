"""autoprompt-search: find hard prompts that make a frozen language model do a task better.

    from autoprompt_search import load_model, Task, evaluate_prompt
    backend = load_model("smollm2-135m")
    task = Task.load("sst-2", data_root="../shared/data")
    print(evaluate_prompt(backend, task, "{sentence} It was [P] .", split="test").metrics)
"""

__version__ = "0.1.0"

# the public names, imported on first use: the command line starts (and reports a mistake in
# its arguments) without loading torch and transformers
_EXPORTS = {
    "PromptSpec": "api", "evaluate_many": "api", "run_search": "api",
    "FewShot": "models.encoding", "PromptEncoder": "models.encoding",
    "UserError": "core.errors", "evaluate_prompt": "scoring.evaluation",
    "LMBackend": "models", "load_model": "models", "wrap_model": "models",
    "PromptResult": "core.results", "PromptScorer": "scoring.scorer",
    "SearchContext": "search", "Searcher": "search", "strategies": "search",
    "Task": "core.tasks", "Template": "core.templates",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "FewShot", "LMBackend", "PromptEncoder", "PromptResult", "PromptScorer", "PromptSpec",
    "SearchContext", "Searcher", "Task", "Template", "UserError", "__version__", "evaluate_many",
    "evaluate_prompt", "load_model", "run_search", "strategies", "wrap_model",
]
