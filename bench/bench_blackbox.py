"""Black-box search throughput: trials per second with 1 and 2 workers, same space, same run.

Every configuration runs the same study (random sampler, pruner off, so every trial
scores the same number of examples) on the same space, each in a fresh process.
Reported: trials/s with one in-process worker (1 torch thread, as one Ray actor with
num_cpus=1 gets), with two Ray actors on this machine (a two-node
``ray.cluster_utils.Cluster``, one CPU and one actor per node), the scaling efficiency
``tps(2) / (2 * tps(1))``, and the simulated multi-node runs (N one-CPU nodes, one
actor each). Timings exclude Ray's start and the model loads (the pool waits for its
actors before the clock starts).

    python bench/bench_blackbox.py --model smollm2-135m --trials 8 --nodes 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from autoprompt_search.api import run_search
from autoprompt_search.core.tasks import Task

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"}


def one_run(args, workers: int, address: str | None = None) -> dict:
    task = Task.load(args.task, data_root=args.data_root)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_search(
            "optuna", task=task, model=args.model, out=Path(tmp) / "run", seed=0, progress=False,
            options={"space": args.task, "trials": args.trials, "workers": workers,
                     "ray_address": address or "", "sampler": "random", "pruner": "none",
                     "storage": "memory", "search_examples": args.examples,
                     "batch_size": args.batch_size, "plots": False})
    secs = result.extra["loop_seconds"]
    return {"workers": result.extra["workers"], "trials": result.extra["trials_done"],
            "seconds": secs, "trials_per_s": result.extra["trials_done"] / secs}


def single(args) -> dict:
    """One configuration in this process: 'in-process' or 'cluster:N'."""
    torch.set_num_threads(1)  # one worker = one thread, as each Ray actor (num_cpus=1)
    if args.single == "in-process":
        return one_run(args, 1)
    import ray
    from ray.cluster_utils import Cluster

    n = int(args.single.split(":")[1])
    cluster = Cluster(initialize_head=True, head_node_args=dict(LOOPBACK))
    try:
        for _ in range(n - 1):
            cluster.add_node(**LOOPBACK)
        cluster.wait_for_nodes()
        # the driver joins on loopback too (else it looks for a raylet at the machine's address)
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        return one_run(args, n, address=cluster.address)  # Ray actors even for n=1
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sst-2")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--examples", type=int, default=8, help="search examples per trial")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 3],
                    help="simulated cluster sizes (one 1-CPU node per worker; 2 is always run)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray reads this at import: 0 makes every simulated node use the loopback address
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if args.single:
        print("RESULT " + json.dumps(single(args)), flush=True)
        return
    # each configuration in a fresh process: Ray is started and stopped cleanly every time
    configs = ["in-process"] + [f"cluster:{n}" for n in sorted(set(args.nodes) | {2})]
    rows = {}
    for config in configs:
        cmd = [sys.executable, __file__, "--single", config] + [
            a for a in sys.argv[1:] if a != "--json" and not a.endswith(".json")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows[config] = json.loads(next(line[7:] for line in out.splitlines()
                                       if line.startswith("RESULT ")))
        print(f"  {config:12s} {rows[config]['trials_per_s']:.3f} trials/s", flush=True)
    one, two = rows["in-process"]["trials_per_s"], rows["cluster:2"]["trials_per_s"]
    eff = two / (2 * one)
    base = rows["cluster:1"]["trials_per_s"] if "cluster:1" in rows else None
    print(f"\nblack-box search throughput: {args.model}, task {args.task}, {args.examples} examples "
          f"per trial, {args.trials} trials per configuration, {os.cpu_count()} CPUs "
          "(random sampler, pruner off: every configuration runs the same trials)")
    print(f"  1 worker, in-process (1 thread)  {one:7.3f} trials/s")
    print(f"  2 workers, Ray actors           {two:7.3f} trials/s")
    print(f"  scaling efficiency at 2 workers: {eff:.2f}  (target >= 0.85)")
    print("  simulated cluster (ray.cluster_utils.Cluster, 1 CPU per node, 1 actor per node):")
    for config, r in rows.items():
        if config.startswith("cluster:"):
            speed = f", {r['trials_per_s'] / base:.2f}x over 1 node" if base else ""
            print(f"    {config[8:]} node(s): {r['trials_per_s']:7.3f} trials/s{speed}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "efficiency": eff}, indent=2) + "\n")


if __name__ == "__main__":
    main()
