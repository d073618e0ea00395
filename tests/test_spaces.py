"""Search-space YAML: strict loading, Optuna distributions with inclusive bounds, shipped spaces."""

from __future__ import annotations

import optuna
import optuna.distributions as od
import pytest
import yaml

from autoprompt_search.core.errors import UserError
from autoprompt_search.core.spaces import (
    available_spaces,
    insert_triggers,
    load_space,
    parse_distribution,
    space_from_mapping,
)
from autoprompt_search.core.validate import validate_file
from autoprompt_search.search.pools import build_pool, whole_word

SHIPPED = ("sst-2", "sst-5", "agnews", "trec", "bbc-news")


def test_a_space_ships_for_every_shared_task():
    assert set(SHIPPED) <= set(available_spaces())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_validates_against_its_task(name, data_root):
    summary = validate_file(available_spaces()[name], data=True, data_root=data_root)
    assert f"task '{name}'" in summary
    space = load_space(name)
    assert space.task == name and space.max_shots >= 1 and space.max_trigger_slots >= 1


def test_int_bounds_are_inclusive():
    dist = parse_distribution({"type": "int", "low": 0, "high": 4}, "x")
    assert isinstance(dist, od.IntDistribution) and (dist.low, dist.high) == (0, 4)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {study.ask().suggest_int("k", dist.low, dist.high) for _ in range(200)}
    assert seen == {0, 1, 2, 3, 4}


def test_distributions_parse_and_fixed_values_pass_through():
    f = parse_distribution({"type": "float", "low": 0.1, "high": 1.0, "log": True}, "x")
    assert isinstance(f, od.FloatDistribution) and f.log and f.high == 1.0
    c = parse_distribution({"type": "categorical", "choices": ["a", "b"]}, "x")
    assert c.choices == ("a", "b")
    assert parse_distribution(3, "x") == 3


@pytest.mark.parametrize("raw, message", [
    ({"type": "int", "low": 5, "high": 1}, "above high"),
    ({"type": "int", "low": 0, "high": 5, "step": 2}, "not a multiple of step"),
    ({"type": "int", "low": 0}, "needs 'high'"),
    ({"type": "int", "low": 0, "high": 2, "max": 3}, "unknown key 'max'"),
    ({"type": "float", "low": 0, "high": 1, "log": True}, "low > 0"),
    ({"type": "integer", "low": 0, "high": 1}, "did you mean 'int'"),
    ({"type": "categorical", "choices": []}, "non-empty"),
    ({"type": "categorical", "choices": ["a", "a"]}, "repeat"),
    (["a", "b"], "categorical"),
])
def test_bad_distributions_are_clear_errors(raw, message):
    with pytest.raises(UserError, match=message):
        parse_distribution(raw, "space.yaml (params.shots)")


def _write(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    path = _write(tmp_path, {"kind": "space", "task": "sst-2", "tempaltes": ["{sentence} [P]"]})
    with pytest.raises(UserError, match=r"space.yaml.*unknown key 'tempaltes'.*did you mean 'templates'"):
        load_space(path)
    path = _write(tmp_path, {"kind": "space", "params": {"shot": 2}})
    with pytest.raises(UserError, match=r"params.*unknown key 'shot'"):
        load_space(path)
    path = _write(tmp_path, {"kind": "space", "demos": {"split": "test"}})
    with pytest.raises(UserError, match="never searched on"):
        load_space(path)


def test_space_rejects_raw_vocabulary_pools_and_bad_positions():
    with pytest.raises(UserError, match="too many"):
        space_from_mapping({"triggers": {"pool": "frequent", "size": 30000}})
    with pytest.raises(UserError, match="not a trigger position"):
        space_from_mapping({"params": {"trigger_position": {"type": "categorical",
                                                           "choices": ["middle"]}}})
    with pytest.raises(UserError, match="expected a int distribution"):
        space_from_mapping({"params": {"shots": {"type": "float", "low": 0, "high": 1}}})
    with pytest.raises(UserError, match="needs a 'words' list"):
        space_from_mapping({"triggers": {"pool": "words"}})


def test_space_checks_verbalizers_and_shots_against_the_task(toy_task):
    space = space_from_mapping({"verbalizers": {"v": {"negative": ["bad"], "positiv": ["good"]}}})
    with pytest.raises(UserError, match="verbalizer label 'positiv' \\(did you mean 'positive'"):
        space.check_task(toy_task)
    space = space_from_mapping({"params": {"shots": {"type": "int", "low": 0, "high": 9}},
                                "demos": {"pool_size": 4}})
    with pytest.raises(UserError, match="pool_size"):
        space.check_task(toy_task)


def test_validate_command_reads_space_files(tmp_path):
    path = _write(tmp_path, {"kind": "space", "instructions": ["", "Classify."],
                             "params": {"shots": {"type": "int", "low": 0, "high": 2}}})
    assert "2 instructions" in validate_file(path)
    bad = _write(tmp_path, {"kind": "space", "params": {"shots": {"type": "int", "low": 3, "high": 2}}})
    with pytest.raises(UserError, match="above high"):
        validate_file(bad)


@pytest.mark.parametrize("position, expected", [
    ("before_predict", "{sentence} It was [T] [T] [P] ."),
    ("after_input", "{sentence} [T] [T] It was [P] ."),
    ("prefix", "[T] [T] {sentence} It was [P] ."),
])
def test_insert_triggers(position, expected):
    assert insert_triggers("{sentence} It was [P] .", 2, position) == expected
    assert insert_triggers("{sentence} It was [P] .", 0, position) == "{sentence} It was [P] ."


def test_frequent_pool_is_whole_words_without_label_words(tiny_causal, toy_task):
    space = space_from_mapping({"triggers": {"pool": "frequent", "size": 15}})
    examples = toy_task.examples("train")
    pool = build_pool(tiny_causal, toy_task, space, examples, [p.template for p in toy_task.prompts],
                      [toy_task.verbalizer])
    assert 0 < len(pool.token_ids) <= 15 and len(set(pool.token_ids)) == len(pool.token_ids)
    label_ids = {tiny_causal.encoder.text_ids(w, True)[0] for w in ("bad", "great")}
    assert not label_ids & set(pool.token_ids)
    assert all(whole_word(tiny_causal, i, 3) for i in pool.token_ids)
    # the most frequent data word that is not a label word comes first
    assert pool.tokens[0].strip() in {"the", "was", "film", "good", "story"}


def test_words_pool_rejects_multi_token_words(tiny_causal, toy_task):
    space = space_from_mapping({"triggers": {"pool": "words", "words": ["the", "xyzzyplugh"]}})
    with pytest.raises(UserError, match="'xyzzyplugh' is .* tokens"):
        build_pool(tiny_causal, toy_task, space, toy_task.examples("train"),
                   [p.template for p in toy_task.prompts], [toy_task.verbalizer])


@pytest.mark.parametrize("source", ["label_search", "gradient"])
def test_model_based_pools(source, tiny_causal, toy_task):
    space = space_from_mapping({"triggers": {"pool": source, "size": 10, "min_chars": 2}})
    pool = build_pool(tiny_causal, toy_task, space, toy_task.examples("train"),
                      ["{sentence} it was [P] ."], [toy_task.verbalizer])
    assert 0 < len(pool.token_ids) <= 10 and pool.source == source
    assert all(whole_word(tiny_causal, i, 2) for i in pool.token_ids)


def test_space_task_may_be_a_task_file_relative_to_the_space(tmp_path, toy_task):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "d.tsv").write_text("sentence\tlabel\na good film\t1\nbad\t0\n")
    (tmp_path / "tasks" / "mr.yaml").write_text(
        "name: mr\ndata: {train: d.tsv, dev: d.tsv, test: d.tsv}\nfields: [sentence]\n"
        "labels: [negative, positive]\nverbalizer: {negative: [bad], positive: [good]}\n"
        "prompts: ['{sentence} It was [P] .']\n")
    (tmp_path / "spaces").mkdir()
    space_path = _write(tmp_path / "spaces", {"kind": "space", "task": "../tasks/mr.yaml"})
    assert "task 'mr'" in validate_file(space_path)
    space = load_space(space_path)
    from autoprompt_search.core.tasks import Task

    # the same task by file (any spelling of its path) or by name; not another task
    assert space.is_for(Task.load(tmp_path / "tasks" / "mr.yaml"))
    assert space.is_for(Task.load(tmp_path / "spaces" / ".." / "tasks" / "mr.yaml"))
    assert space_from_mapping({"task": "toy"}).is_for(toy_task)
    with pytest.raises(UserError, match="is for task '.*mr.yaml', but the search runs on 'toy'"):
        space.check_task(toy_task)


def test_spaces_do_not_import_validate():
    import ast
    import inspect

    from autoprompt_search.core import spaces

    tree = ast.parse(inspect.getsource(spaces))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "validate" not in imported and "space" in __import__(
        "autoprompt_search.core.validate", fromlist=["validators"]).validators


def test_pool_sources_are_declared_once_and_all_built():
    from autoprompt_search.core.spaces import POOL_SOURCES, PoolSource
    from autoprompt_search.search.pools import pool_builders

    assert set(pool_builders) == {p.value for p in PoolSource} == set(POOL_SOURCES)


def test_tiny_models_leave_the_global_rng_alone():
    import torch

    from autoprompt_search.testing import tiny_causal_lm, tiny_masked_lm

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_causal_lm(seed=5)
    tiny_masked_lm(seed=5)
    assert torch.equal(torch.rand(3), expected)
    a, _ = tiny_causal_lm(seed=5)
    b, _ = tiny_causal_lm(seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
