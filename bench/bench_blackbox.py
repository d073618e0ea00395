"""Black-box search throughput: trials per second with 1 and 2 workers, same space, same run.

Every configuration runs the same study (random sampler, pruner off, so every trial
scores the same number of examples) on the same space. Reported: trials/s with one
in-process worker (1 torch thread, the same as one Ray actor gets), with two Ray
actors on this machine, the scaling efficiency ``tps(2) / (2 * tps(1))``, and a
simulated multi-node run (``ray.cluster_utils.Cluster`` with N one-CPU nodes, one
actor per node). Timings exclude Ray's start and the model loads (the pool waits for
its actors before the clock starts).

    python bench/bench_blackbox.py --model smollm2-135m --trials 8 --nodes 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from autoprompt_search.api import run_search
from autoprompt_search.tasks import Task

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sst-2")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--examples", type=int, default=8, help="search examples per trial")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 3],
                    help="simulated cluster sizes (one 1-CPU node per worker)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    rows = {}
    torch.set_num_threads(1)  # one worker = one thread, as each Ray actor (num_cpus=1)
    rows["in-process, 1 worker"] = one_run(args, 1)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        rows["ray, 2 workers"] = one_run(args, 2)
    finally:
        ray.shutdown()
    eff = rows["ray, 2 workers"]["trials_per_s"] / (2 * rows["in-process, 1 worker"]["trials_per_s"])

    from ray.cluster_utils import Cluster

    cluster_rows = {}
    for n in args.nodes:
        cluster = Cluster(initialize_head=True, connect=True, head_node_args=dict(LOOPBACK))
        try:
            for _ in range(n - 1):
                cluster.add_node(**LOOPBACK)
            cluster.wait_for_nodes()
            cluster_rows[n] = one_run(args, n)
        finally:
            ray.shutdown()
            cluster.shutdown()
    base = cluster_rows[min(cluster_rows)]["trials_per_s"] if cluster_rows else None

    print(f"\nblack-box search throughput: {args.model}, task {args.task}, {args.examples} examples "
          f"per trial, {args.trials} trials per configuration, {os.cpu_count()} CPUs")
    for name, r in rows.items():
        print(f"  {name:24s} {r['trials_per_s']:7.3f} trials/s  ({r['trials']} trials in "
              f"{r['seconds']:.1f} s)")
    print(f"  scaling efficiency at 2 workers: {eff:.2f}  (target >= 0.85)")
    if cluster_rows:
        print("  simulated cluster (ray.cluster_utils.Cluster, 1 CPU per node, 1 worker per node):")
        for n, r in cluster_rows.items():
            print(f"    {n} node(s): {r['trials_per_s']:7.3f} trials/s, speed-up "
                  f"{r['trials_per_s'] / base:.2f}x over 1 node")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "efficiency": eff,
                                               "cluster": cluster_rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
