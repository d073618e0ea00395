"""Ray worker pools: a two-node ``Cluster`` that loses a node mid-search, and a ``--workers 2``
process killed and resumed; both give exactly the trials of an in-process run.

Ray's start costs seconds and ~500 MB, so these tests are few and small (tiny models),
stay on loopback and start no dashboard.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import yaml
from blackbox_helpers import cli_search, log_records, same_result, stop_after, tiny_dir  # noqa: F401
from blackbox_helpers import trials as trials_of

from autoprompt_search.api import run_search
from autoprompt_search.core.results import PromptResult
from autoprompt_search.search import blackbox

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
    """One record per trial (the base loop's step-0 record, before any trial, left out)."""
    return log_records(run)


OPTIONS = {"search_splits": "dev", "search_examples": 12, "batch_size": 2, "sampler": "tpe",
           "startup_trials": 3, "plots": False}


def _search(task, backend, run, trials, **options):
    return run_search("optuna", task=task, model="tiny-causal", out=run, seed=0, backend=backend,
                      progress=False, options={"space": str(run.parent / "space.yaml"),
                                               "trials": trials, **OPTIONS, **options})


def _capture_pools(monkeypatch) -> list:
    """The worker pools the searches make, so a test can watch them."""
    pools = []
    real = blackbox.make_pool

    def make_pool(*args, **kwargs):
        pools.append(real(*args, **kwargs))
        return pools[-1]

    monkeypatch.setattr(blackbox, "make_pool", make_pool)
    return pools


def test_two_node_cluster_survives_losing_a_node(toy_yaml, tiny_causal, tmp_path, monkeypatch):
    """A node dies with jobs in flight: they are re-queued on the other node, no trial is lost
    or counted twice, and the trials are exactly those of an in-process run."""
    trials = 10
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(LOOPBACK))
    worker = cluster.add_node(**LOOPBACK)
    cluster.wait_for_nodes()
    # the driver joins on loopback too (else it looks for a raylet at the machine's address)
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    pools = _capture_pools(monkeypatch)
    lost = {}

    def lose_node():
        """Freeze the doomed node's actor (SIGSTOP: its jobs can no longer finish), wait until
        the pool has handed it a job, then remove the node: that job is certainly lost."""
        deadline = time.time() + 240
        while time.time() < deadline:
            pool = pools[0] if pools else None
            actor = pool and next((a for a in list(pool.actors) if a.node == worker.node_id), None)
            if actor is not None and "pid" not in lost:
                os.kill(actor.pid, signal.SIGSTOP)
                lost["pid"] = actor.pid
            if "pid" in lost and pool.in_flight_by_node().get(worker.node_id, 0) > 0:
                lost["jobs"] = pool.in_flight_by_node()[worker.node_id]
                cluster.remove_node(worker, allow_graceful=False)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=lose_node, daemon=True)
    try:
        watcher.start()
        result = _search(toy_yaml, tiny_causal, tmp_path / "run", trials=trials, workers=2)
        watcher.join(timeout=5)
    finally:
        if "pid" in lost:
            try:
                os.kill(lost["pid"], signal.SIGKILL)  # the frozen actor, if its node left it
            except ProcessLookupError:
                pass
        ray.shutdown()
        cluster.shutdown()
    assert lost.get("jobs", 0) >= 1, "the node was not removed with jobs in flight"
    records = _log(tmp_path / "run")
    # every trial accounted for: all finished, each once, each scored on every example once
    assert [r["step"] for r in records] == list(range(1, trials + 1))
    assert len({r["trial"] for r in records}) == trials
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in records)
    assert all(r["examples"] == 12 for r in records if r["state"] == "COMPLETE")
    # the jobs the dead node held were handed back and re-run on the surviving worker; a
    # replacement actor (if one was started) waits for a free CPU and never came up
    assert result.extra["lost_jobs"] >= lost["jobs"] and result.extra["requeued_jobs"] >= 1
    assert result.extra["workers"] == 1, result.extra
    # trials in flight = 2 workers x 2 jobs: the same trials as in-process with 4 in flight
    local = _search(toy_yaml, tiny_causal, tmp_path / "local", trials=trials, trials_in_flight=4)
    assert trials_of(tmp_path / "run") == trials_of(tmp_path / "local")
    same_result(result, local)


def test_killed_ray_run_resumes_as_if_it_never_stopped(toy_yaml, tiny_dir, tiny_causal, tmp_path):  # noqa: F811
    """`--workers 2` (two Ray actors) in a real process, killed with SIGKILL (with its Ray)
    mid-run and resumed: the same trials and result as an uninterrupted in-process run with
    the same number of trials in flight (so the Ray pool changes nothing either)."""
    run = tmp_path / "run"
    args = ["--strategy", "optuna", "--task", str(toy_yaml.source), "--model", str(tiny_dir),
            "--out", str(run), "--seed", "0", "--space", str(tmp_path / "space.yaml"),
            "--trials", "16", "--workers", "2"]
    args += [a for k, v in OPTIONS.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    assert stop_after(cli_search(args, run), run, 4, signal.SIGKILL) == -signal.SIGKILL
    assert len(_log(run)) < 16
    assert cli_search([*args, "--resume"], run).wait(timeout=280) == 0
    resumed = PromptResult.load(run)
    assert resumed.extra["workers"] == 2 and resumed.extra["trials_in_flight"] == 4
    local = _search(toy_yaml, tiny_causal, tmp_path / "local", trials=16, trials_in_flight=4)
    assert trials_of(run) == trials_of(tmp_path / "local")
    same_result(resumed, local)
