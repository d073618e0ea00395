"""Ray worker pools: a local pool, and a two-node ``Cluster`` that loses a node mid-search.

Ray's start costs seconds and ~500 MB, so these tests are few and small (tiny models),
stay on loopback and start no dashboard.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import yaml

from autoprompt_search.api import run_search

for _key, _value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
    os.environ.setdefault(_key, _value)
ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)  # each test starts Ray (about 10 s on an idle 2-core machine)

SPACE = {
    "kind": "space", "task": "toy", "templates": ["{sentence} so it was [P]"],
    "instructions": ["", "Sentiment:"],
    "params": {"shots": {"type": "int", "low": 0, "high": 1},
               "trigger_slots": {"type": "int", "low": 0, "high": 1}},
    "demos": {"pool_size": 2}, "triggers": {"pool": "frequent", "size": 10},
}
LOOPBACK = {"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"}


@pytest.fixture
def toy_yaml(toy_task, tmp_path):
    from autoprompt_search.core.tasks import Task

    raw = {"name": "toy", "data": {s: str(tmp_path / f"{s}.tsv") for s in ("train", "dev", "test")},
           "fields": toy_task.fields, "labels": toy_task.labels, "verbalizer": toy_task.verbalizer,
           "prompts": [p.template for p in toy_task.prompts]}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return Task.from_yaml(tmp_path / "toy.yaml")


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _search(task, backend, run, trials, **options):
    return run_search("optuna", task=task, model="tiny-causal", out=run, seed=0, backend=backend,
                      progress=False, options={"space": str(run.parent / "space.yaml"),
                                               "trials": trials, "search_splits": "dev",
                                               "search_examples": 12, "batch_size": 2,
                                               "pruner": "none", "plots": False, **options})


def test_two_node_cluster_survives_losing_a_node(toy_yaml, tiny_causal, tmp_path):
    trials = 200
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(LOOPBACK))
    worker = cluster.add_node(**LOOPBACK)
    cluster.wait_for_nodes()
    # the driver joins on loopback too (else it looks for a raylet at the machine's address)
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    run = tmp_path / "run"
    removed = threading.Event()

    def remove_worker_node():  # once the search is under way, pull the plug on one node
        deadline = time.time() + 600
        while time.time() < deadline:
            if (run / "log.jsonl").is_file() and len(_log(run)) >= 2:
                cluster.remove_node(worker, allow_graceful=False)
                removed.set()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_worker_node, daemon=True)
    try:
        watcher.start()
        # enough trials that the search is still running when the node is gone (a short search
        # can finish during remove_node, before the dead actor's jobs fail)
        result = _search(toy_yaml, tiny_causal, run, trials=trials, workers=2)
        watcher.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed.is_set(), "the search ended before the node could be removed"
    records = _log(run)
    # every trial accounted for: all finished, each once, each scored on every example once
    assert [r["step"] for r in records] == list(range(1, trials + 1))
    assert len({r["trial"] for r in records}) == trials
    assert all(r["state"] == "COMPLETE" and r["examples"] == 12 for r in records)
    assert result.extra["trials_done"] == trials
    # the jobs the dead node held were handed back and re-run on the surviving worker; a
    # replacement actor (if one was started) waits for a free CPU and never came up
    assert result.extra["lost_jobs"] >= 1, result.extra
    assert result.extra["workers"] == 1, result.extra


def test_local_ray_pool_matches_in_process_scores(toy_yaml, tiny_causal, tmp_path):
    """Two Ray workers on this machine score each design exactly as the in-process path does."""
    os.environ["RAY_ADDRESS"] = ""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray_result = _search(toy_yaml, tiny_causal, tmp_path / "ray", trials=5, workers=2,
                             sampler="random")
    finally:
        ray.shutdown()
    local = _search(toy_yaml, tiny_causal, tmp_path / "local", trials=5, workers=1, sampler="random")
    by_params = {json.dumps(r["params"], sort_keys=True): r["value"] for r in _log(tmp_path / "local")}
    ray_records = _log(tmp_path / "ray")
    assert ray_result.extra["workers"] == 2 and len(ray_records) == 5
    for r in ray_records:
        key = json.dumps(r["params"], sort_keys=True)
        if key in by_params:
            assert r["value"] == pytest.approx(by_params[key])
    assert sum(json.dumps(r["params"], sort_keys=True) in by_params for r in ray_records) >= 2
