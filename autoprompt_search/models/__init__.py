"""LM backends: one small interface, masked and causal implementations, loading."""

from .base import LMBackend, PaddedBatch, PrefixCache
from .causal import CausalLMBackend
from .loading import cache_dir, cached_gguf, load_model, model_aliases, model_kind, wrap_model
from .masked import MaskedLMBackend

__all__ = [
    "CausalLMBackend", "LMBackend", "MaskedLMBackend", "PaddedBatch", "PrefixCache",
    "cache_dir", "cached_gguf", "load_model", "model_aliases", "model_kind", "wrap_model",
]
