"""float32 against bfloat16: throughput of scoring and of a gradient-search step, and whether
the two precisions agree (accuracy per prompt, same predictions, same prompt ranking).

    python bench/bench_dtype.py                    # SmolLM2 on SST-2 (200 test examples) if the data is there
    python bench/bench_dtype.py --model tiny       # tiny random model (seconds)
    python bench/bench_dtype.py --device cuda      # on a GPU

Prints the CPU's bfloat16 instruction flags first: without AMX or AVX-512 BF16 a CPU
emulates bfloat16 and ``--dtype auto`` stays at float32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from autoprompt_search.api import run_search
from autoprompt_search.core.devices import cpu_bf16_flags, resolve_device, resolve_dtype
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.tasks import Task
from autoprompt_search.core.templates import Template
from autoprompt_search.models import load_model, wrap_model
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.testing import tiny_causal_lm

DTYPES = ("float32", "bfloat16")


def backend_for(model: str, dtype: str, device: str):
    if model == "tiny":
        m, tok = tiny_causal_lm()
        return wrap_model(m.to(dtype=getattr(torch, dtype), device=resolve_device(device)), tok, name="tiny")
    return load_model(model, dtype=dtype, device=device)


def readable(template: str, task) -> bool:
    """Whether a causal LM can read the prompt ([P] at the end, only punctuation after it)."""
    try:
        Template.parse(template, task.fields).for_causal()
    except UserError:
        return False
    return True


def score(backend, task, prompts, examples, batch_size):
    """Per prompt: class log-probs [N, C]; and the examples scored per second overall."""
    out = {}
    PromptScorer(backend, task, prompts[0].template, batch_size=batch_size).class_logprobs(examples[:16])
    start = time.perf_counter()
    for p in prompts:
        out[p.name] = PromptScorer(backend, task, p.template, batch_size=batch_size).class_logprobs(examples)
    return out, len(prompts) * len(examples) / (time.perf_counter() - start)


def gradient_step_seconds(backend, task, model, iterations: int = 4) -> float:
    """Seconds per gradient-search iteration (gradient, candidates, dev check), from the run log's
    clock, after the first iteration (warm-up)."""
    import json

    with tempfile.TemporaryDirectory() as out:
        run_search("gradient", task=task, model=model, template="{sentence} [T] [T] [T] It was [P] .",
                   out=Path(out) / "run", seed=0, backend=backend, progress=False,
                   options={"iterations": iterations, "k": 8, "batch_size": 8, "init": "random"})
        log = [json.loads(line) for line in (Path(out) / "run" / "log.jsonl").read_text().splitlines()]
    times = [r["time"] for r in log if "time" in r]
    return (times[-1] - times[0]) / (len(times) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model spec, or 'tiny'")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--n", type=int, default=200, help="test examples per prompt")
    ap.add_argument("--prompts", type=int, default=4, help="human prompts compared (ranking)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=2, help="gradient iterations timed (the first is warm-up)")
    ap.add_argument("--no-gradient", action="store_true", help="skip the gradient-step timing")
    args = ap.parse_args()

    where = resolve_device(args.device)
    flags = cpu_bf16_flags()
    print(f"device {where}; CPU bfloat16 flags: {', '.join(flags) or 'none (bfloat16 is emulated)'}; "
          f"--dtype auto here -> {resolve_dtype('auto', where).value}; {torch.get_num_threads()} threads; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    if (Path(args.data_root) / "fewshot").is_dir():
        task = Task.load("sst-2", data_root=args.data_root)
    else:
        task = Task.load("bbc-news")
    prompts = [p for p in task.prompts if readable(p.template, task)][: args.prompts]
    examples = task.examples("test")[: args.n]
    gold = torch.tensor([ex.label for ex in examples])
    print(f"model {args.model}, task {task.name}, {len(prompts)} human prompts x {len(examples)} test examples",
          flush=True)

    results, rate, step = {}, {}, {}
    for dtype in DTYPES:
        backend = backend_for(args.model, dtype, args.device)
        results[dtype], rate[dtype] = score(backend, task, prompts, examples, args.batch_size)
        print(f"{dtype}: scoring {rate[dtype]:.1f} examples/s", flush=True)
        if not args.no_gradient:
            step[dtype] = gradient_step_seconds(backend, task, args.model, args.iterations)
            print(f"{dtype}: gradient step {step[dtype]:.2f} s/iteration", flush=True)
        del backend

    print(f"\n{'':<28}{'float32':>12}{'bfloat16':>12}{'bf16/f32':>10}")
    print(f"{'scoring, examples/s':<28}{rate['float32']:>12.1f}{rate['bfloat16']:>12.1f}"
          f"{rate['bfloat16'] / rate['float32']:>9.2f}x")
    if step:
        print(f"{'gradient step, s/iteration':<28}{step['float32']:>12.2f}{step['bfloat16']:>12.2f}"
              f"{step['float32'] / step['bfloat16']:>9.2f}x")

    print(f"\n{'prompt':<16}{'acc f32':>9}{'acc bf16':>9}{'same pred':>11}")
    acc, same_total = {d: [] for d in DTYPES}, 0
    for p in prompts:
        pred = {d: results[d][p.name].argmax(-1) for d in DTYPES}
        for d in DTYPES:
            acc[d].append(float((pred[d] == gold).float().mean()))
        same = int((pred["float32"] == pred["bfloat16"]).sum())
        same_total += same
        print(f"{p.name:<16}{100 * acc['float32'][-1]:>9.1f}{100 * acc['bfloat16'][-1]:>9.1f}"
              f"{same:>7d}/{len(examples)}")
    diff = np.abs(np.array(acc["float32"]) - np.array(acc["bfloat16"]))
    order = {d: list(np.argsort(-np.array(acc[d]), kind="stable")) for d in DTYPES}
    rho = spearmanr(acc["float32"], acc["bfloat16"]).statistic if len(prompts) > 1 else float("nan")
    print(f"\nsame predictions: {same_total}/{len(prompts) * len(examples)} "
          f"({100 * same_total / (len(prompts) * len(examples)):.1f}%); accuracy difference: mean "
          f"{100 * diff.mean():.2f}, max {100 * diff.max():.2f} points")
    print(f"prompt ranking: Spearman rho {rho:.3f}; same best prompt: "
          f"{prompts[order['float32'][0]].name == prompts[order['bfloat16'][0]].name}; identical order: "
          f"{order['float32'] == order['bfloat16']}")


if __name__ == "__main__":
    main()
