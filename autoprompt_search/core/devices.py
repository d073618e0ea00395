"""Where a model runs and in which precision: ``--device`` and ``--dtype``.

* :func:`resolve_device` turns ``auto | cpu | cuda | cuda:N | mps`` into a concrete
  device, checking that it exists (``auto``: the first CUDA GPU, else Apple's MPS, else
  the CPU);
* :func:`resolve_dtype` turns ``auto | float32 | bfloat16 | float16`` into a concrete
  dtype name for that device. ``auto`` picks bfloat16 where the hardware computes it
  natively -- CUDA GPUs that support it, CPUs with AMX or AVX-512 BF16 -- and float32
  everywhere else (a CPU without those instructions emulates bfloat16 and is slower
  than float32; see ``bench/bench_dtype.py``).

Both raise :class:`~autoprompt_search.core.errors.UserError` for unknown or absent
choices, so a CLI user sees one ``error:`` line.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import torch

from .errors import UserError


class Dtype(str, Enum):
    """The precisions a model can be loaded in (``auto`` resolves per device)."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"

    @property
    def torch(self) -> torch.dtype:
        if self is Dtype.AUTO:
            raise ValueError("resolve 'auto' with resolve_dtype first")
        return getattr(torch, self.value)


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
# the --dtype default of every command (see the README's "Devices and precision" for why)
DEFAULT_DTYPE = "float32"
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def parse_dtype(name: str | Dtype) -> Dtype:
    try:
        return Dtype(str(getattr(name, "value", name)).strip().lower())
    except ValueError:
        raise UserError(f"unknown dtype '{name}'; use one of {', '.join(d.value for d in Dtype)}") from None


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """A concrete, available device for ``spec`` (None means ``auto``)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UserError(f"unknown device '{spec}'; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise UserError(f"--device {text}: no CUDA GPU is visible to this process "
                        f"(torch {torch.__version__}); use --device cpu or auto")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(f"--device {text}: only {count} CUDA device(s) visible (cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)


def resolve_dtype(dtype: str | Dtype, device: torch.device) -> Dtype:
    """The concrete dtype for ``device``; ``auto`` is bfloat16 where it is native, else float32."""
    choice = parse_dtype(dtype)
    if choice is not Dtype.AUTO:
        if choice is Dtype.BFLOAT16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} does not support "
                            "bfloat16; use --dtype float16 or float32")
        return choice
    return Dtype.BFLOAT16 if native_bf16(device) else Dtype.FLOAT32


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (not emulated through float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False  # MPS: bfloat16 support varies by OS version; float32 is the safe choice


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The bfloat16 instruction flags (``amx_bf16``, ``avx512_bf16``) this CPU reports.

    Read from ``/proc/cpuinfo`` on Linux; elsewhere from torch's CPU capability (which
    names AMX when present)."""
    path = Path(cpuinfo)
    if path.is_file():
        flags: set[str] = set()
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
        return [f for f in _CPU_BF16_FLAGS if f in flags]
    capability = ""
    try:
        capability = str(torch.backends.cpu.get_cpu_capability()).lower()
    except (AttributeError, RuntimeError):
        pass
    return ["amx_bf16"] if "amx" in capability else []


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())
