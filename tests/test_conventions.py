"""Conventions a user relies on: one declaration per closed choice, the dashboard extra, the
dependency declarations, the platform cache folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.projection import METRICS, DistanceMetric, check_metric, distances

ROOT = Path(__file__).resolve().parent.parent


def test_distance_metrics_are_declared_once():
    assert METRICS == tuple(m.value for m in DistanceMetric) == ("cosine", "euclidean", "dot")
    v, e = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(distances(v, e, DistanceMetric.dot), torch.tensor([[-1.0, 0.0]]))
    assert check_metric(DistanceMetric.euclidean) == "euclidean"
    with pytest.raises(UserError, match="unknown distance 'manhattan'"):
        check_metric("manhattan")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_dependencies_match_what_the_code_calls():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower(): d for d in project["dependencies"]}
    assert "peft" not in names and "accelerate" not in names  # not imported at run time
    floor = names["transformers"].split(">=")[1]
    assert tuple(int(x) for x in floor.split(".")[:2]) >= (4, 56)  # from_pretrained(dtype=...)
    extras = project["optional-dependencies"]
    for extra, package in (("hub", "datasets"), ("peft", "peft"), ("lm-eval", "lm-eval"),
                           ("dashboard", "optuna-dashboard"), ("dev", "ruff")):
        assert any(d.startswith(package) for d in extras[extra]), extra
    pins = {line.split("==")[0].lower().replace("_", "-") for line in
            (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    for package in ("datasets", "peft", "lm-eval", "optuna-dashboard", "ruff", "platformdirs"):
        assert package in pins, package


def test_cache_dir_is_the_platform_cache_folder(monkeypatch):
    from platformdirs import user_cache_dir

    from autoprompt_search.models.loading import cache_dir

    monkeypatch.delenv("AUTOPROMPT_SEARCH_CACHE", raising=False)
    assert cache_dir() == Path(user_cache_dir("autoprompt-search", appauthor=False))


def test_optuna_dashboard_reads_a_runs_study_journal(toy_task, tiny_causal, tmp_path):
    """The README's dashboard line: optuna-dashboard opens a black-box run's study.journal."""
    pytest.importorskip("optuna_dashboard", reason="the dashboard extra is not installed")
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna_dashboard import wsgi

    from autoprompt_search.api import run_search

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "kind": "space", "task": "toy", "templates": ["{sentence} so it was [P] ."],
        "instructions": ["", "Sentiment:"],
        "params": {"shots": {"type": "int", "low": 0, "high": 1},
                   "trigger_slots": {"type": "int", "low": 0, "high": 1}},
        "demos": {"pool_size": 2}, "triggers": {"pool": "frequent", "size": 10}}))
    run_search("optuna", task=toy_task, model="tiny-causal", out=tmp_path / "run", seed=0, backend=tiny_causal,
               progress=False, options={"trials": 3, "startup_trials": 1, "search_examples": 8,
                                        "plots": False, "space": str(space)})
    journal = tmp_path / "run" / "study.journal"
    app = wsgi(JournalStorage(JournalFileBackend(str(journal))))
    from wsgiref.util import setup_testing_defaults

    environ = {"PATH_INFO": "/api/studies"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), body[:500]
    studies = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["run"]  # the study name is the run folder's
