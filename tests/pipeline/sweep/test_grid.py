"""Grid and random expansion: W&B's open-source engine's rules, and a cross-check against it when installed."""

from __future__ import annotations

import pytest

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep.grid import flatten, grid_points, grid_size, random_points


def test_names_sorted_last_varies_fastest():
    params = {"lre_max": {"values": [0, 1]}, "lre_min": {"values": [-4, -3]}, "a": {"value": "x"}}
    assert grid_points(params) == [
        {"a": "x", "lre_max": 0, "lre_min": -4},
        {"a": "x", "lre_max": 0, "lre_min": -3},
        {"a": "x", "lre_max": 1, "lre_min": -4},
        {"a": "x", "lre_max": 1, "lre_min": -3},
    ]
    assert grid_size(params) == 4


def test_int_uniform_includes_max_and_q_uniform_excludes_it_with_float_drift():
    assert [p["n"] for p in grid_points({"n": {"min": 2, "max": 4}})] == [2, 3, 4]
    got = [p["x"] for p in grid_points({"x": {"distribution": "q_uniform", "min": -1.0, "max": 0.0, "q": 0.1}})]
    assert len(got) == 10 and got[0] == -1.0 and 0.0 not in got
    assert got[3] == -0.7000000000000001  # numpy.arange drift, exactly what W&B runs
    assert [p["x"] for p in grid_points({"x": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 5}})] == [0, 5]


def test_equal_values_are_one_point_last_spelling_wins():
    # W&B hashes YAML dumps with whole floats as ints: 1 and 1.0 are one grid value
    assert grid_points({"x": {"values": [1, 2, 1.0]}}) == [{"x": 1.0}, {"x": 2}]


def test_nested_parameters_walk_sorted_per_level_and_give_dicts():
    params = {
        "z": {"values": [1, 2]},
        "opt": {"parameters": {"name": {"value": "sgd"}, "lr": {"values": [0.1, 0.01]}}},
    }
    assert [p.name for p in flatten(params)] == ["opt.lr", "opt.name", "z"]
    assert grid_points(params) == [
        {"opt": {"lr": 0.1, "name": "sgd"}, "z": 1},
        {"opt": {"lr": 0.1, "name": "sgd"}, "z": 2},
        {"opt": {"lr": 0.01, "name": "sgd"}, "z": 1},
        {"opt": {"lr": 0.01, "name": "sgd"}, "z": 2},
    ]


def test_list_and_mapping_values_are_single_values():
    params = {"decay_steps": {"values": [[50000], [100000, 150000]]},
              "pair": {"values": [{"lre_min": -3.0, "lre_max": 0.0}, {"lre_min": -2.0, "lre_max": -0.5}]}}
    assert grid_points(params) == [
        {"decay_steps": [50000], "pair": {"lre_min": -3.0, "lre_max": 0.0}},
        {"decay_steps": [50000], "pair": {"lre_min": -2.0, "lre_max": -0.5}},
        {"decay_steps": [100000, 150000], "pair": {"lre_min": -3.0, "lre_max": 0.0}},
        {"decay_steps": [100000, 150000], "pair": {"lre_min": -2.0, "lre_max": -0.5}},
    ]


@pytest.mark.parametrize("spec, message", [
    ({"min": 0.0, "max": 1.0}, "disallowed type with grid search (uniform)"),
    ({"distribution": "log_uniform_values", "min": 1e-4, "max": 1.0}, "disallowed type with grid search"),
    ({"values": [1, 2], "probabilities": [0.5, 0.5]}, "disallowed type with grid search (categorical_w_probabilities)"),
])
def test_grid_refuses_continuous_distributions(spec, message):
    with pytest.raises(LrscanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        grid_points({"x": spec})


@pytest.mark.parametrize("params, message", [
    ({}, "empty grid"),
    ({"x": {"values": []}}, "non-empty list"),
    ({"x": [1, 2]}, "expected a mapping"),
    ({"x": {"min": 3, "max": 1}}, "min 3 is not less than max 1"),
    ({"x": {"distribution": "int_uniform", "min": 0.5, "max": 3}}, "integer min and max"),
    ({"x": {"distribution": "gamma", "a": 1}}, "unknown distribution 'gamma'"),
    ({"x": {"values": [1], "step": 2}}, "unknown keys \\['step'\\]"),
    ({"x": {"min": "a", "max": 2}}, "min must be a number"),
    ({"x": {"parameters": {}}}, "non-empty mapping"),
    ({"x": {"values": [1, 2], "probabilities": [0.5, 0.6]}}, "do not sum to 1"),
])
def test_malformed_parameters_name_the_problem(params, message):
    with pytest.raises(LrscanError, match=message):
        grid_points(params)


def test_random_is_seeded_in_bounds_and_a_prefix_of_longer_runs():
    params = {"lre_min": {"min": -4.0, "max": -2.0}, "seed": {"min": 1, "max": 1000},
              "lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1.0},
              "q": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 5},
              "opt": {"values": ["sgd", "adam"]}, "fixed": {"value": 7}}
    eight = random_points(params, 8, seed=3)
    assert eight == random_points(params, 8, seed=3)
    assert random_points(params, 3, seed=3) == eight[:3]
    assert random_points(params, 8, seed=4) != eight
    for p in eight:
        assert -4.0 <= p["lre_min"] <= -2.0 and isinstance(p["seed"], int) and 1 <= p["seed"] <= 1000
        assert 1e-3 <= p["lr"] <= 1.0 and p["q"] % 5 == 0 and isinstance(p["q"], int)
        assert p["opt"] in ("sgd", "adam") and p["fixed"] == 7
    with pytest.raises(LrscanError, match="count=0"):
        random_points(params, 0, seed=0)


def test_mapping_values_keep_the_yaml_key_order_and_nested_blocks_come_last():
    # `${args}` renders a dict with str(): its key order is the command line `wandb agent` runs
    params = {"pair": {"values": [{"lre_min": -3.0, "lre_max": 0.0}]}, "z": {"value": 1},
              "opt": {"parameters": {"name": {"value": "sgd"}, "lr": {"values": [0.1]}}}, "a-b": {"value": 2}}
    [point] = grid_points(params)
    assert list(point) == ["a-b", "pair", "z", "opt"]  # the engine's to_config: plain names sorted, nested last
    assert list(point["pair"]) == ["lre_min", "lre_max"]
    assert list(point["opt"]) == ["lr", "name"]
    [drawn] = random_points(params, 1, seed=0)
    assert list(drawn) == list(point) and list(drawn["pair"]) == ["lre_min", "lre_max"]


def test_same_grid_as_wandbs_engine_when_installed():
    try:  # the repo's sweeps/ folder of YAMLs is a namespace package here: ask for the engine's names
        from sweeps import RunState, next_runs
    except ImportError:
        pytest.skip("wandb's `sweeps` engine (pins numpy<2) is not installed here")
    configs = [
        {"method": "grid", "parameters": {"lre_max": {"values": [0, 1]}, "lre_min": {"values": [-4, -3]},
                                          "s": {"value": 1}}},
        {"method": "grid", "parameters": {"b": {"min": 1, "max": 3},
                                          "a": {"distribution": "q_uniform", "min": -1.0, "max": 0.0, "q": 0.25},
                                          "c": {"values": [[1, 2], [3]]}}},
        {"method": "grid", "parameters": {"z": {"values": [1, 2]},
                                          "opt": {"parameters": {"name": {"values": ["sgd", "adam"]},
                                                                 "lr": {"values": [0.1, 0.01]}}}}},
        {"method": "grid", "parameters": {"x": {"values": [1, 2, 1.0]},
                                          "pair": {"values": [{"b": 1, "a": 2}, {"a": 3, "b": 4}]}}},
        {"method": "grid", "parameters": {"z": {"value": 1}, "a-b": {"value": 2}, "y": {"values": [{"m": 1, "c": 2}]},
                                          "a": {"parameters": {"y": {"value": "s"}, "x": {"parameters": {
                                              "q": {"value": 1}, "p": {"value": 2}}}}}}},
    ]
    for config in configs:
        runs = []
        while True:
            [run] = next_runs(config, runs, n=1)[:1] or [None]
            if run is None:
                break
            run.state = RunState.finished
            runs.append(run)
        theirs = [{k: v["value"] for k, v in run.config.items()} for run in runs]
        assert grid_points(config["parameters"]) == theirs
        # and in the same key order, nested dicts and mapping values included: str() is what ${args} renders
        assert [str(p) for p in grid_points(config["parameters"])] == [str(p) for p in theirs]
