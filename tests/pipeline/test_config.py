import dataclasses
from pathlib import Path

import pytest

from lrscan.pipeline import config
from lrscan.pipeline.config import TrainConfig, field_names, help_text, parse_args, parse_value
from lrscan.pipeline.errors import LrscanError


def test_defaults_follow_the_seed():
    c = TrainConfig()
    assert (c.block_size, c.n_embd, c.n_hidden, c.batch_size) == (3, 2, 100, 32)
    assert (c.schedule, c.lre_min, c.lre_max, c.steps) == ("range", -3.0, 0.0, 1000)
    assert c.wandb_mode == "offline"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.steps = 5  # type: ignore[misc]


def test_a_run_of_a_real_wandb_agent_logs_online_unless_told_otherwise(monkeypatch):
    # `wandb agent` sets WANDB_SWEEP_ID and not WANDB_MODE: its runs belong to the sweep on the server
    monkeypatch.delenv("WANDB_MODE")
    assert TrainConfig().wandb_mode == "offline"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert TrainConfig().wandb_mode == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert TrainConfig().wandb_mode == "offline"


def test_agent_style_arguments_parse_to_typed_values():
    # exactly what `wandb agent` writes with ${args}: str() of each value
    c = parse_args(["--lre_min=-3.0", "--lre_max=0", "--steps=200000", "--decay_steps=[100000, 150000]",
                    "--decay_lrs=[0.01, 0.001]", "--stop_on_climb=False", "--wandb_tags=['a', 'b']", "--schedule=step"])
    assert c.lre_min == -3.0 and isinstance(c.lre_max, float) and c.lre_max == 0.0
    assert c.steps == 200000 and c.decay_steps == (100000, 150000) and c.decay_lrs == (0.01, 0.001)
    assert c.stop_on_climb is False and c.wandb_tags == ("a", "b")


def test_other_spellings():
    c = parse_args(["--resume", "--steps", "50", "--decay_steps=100,200", "--decay_lrs=0.01,0.001", "--wandb_tags=x,y"])
    assert parse_value("wandb_tags", "[a, b]") == ["a", "b"]  # a list typed unquoted by hand
    assert c.resume is True and c.steps == 50 and c.decay_steps == (100, 200) and c.wandb_tags == ("x", "y")
    assert parse_args(["--decay_steps=100000", "--decay_lrs=0.01"]).decay_steps == (100000,)
    assert parse_value("lre_min", "-2") == -2


@pytest.mark.parametrize("argv, fragment", [
    (["--lre_mni=-3"], "unknown config key 'lre_mni'. Valid keys: data,"),
    (["--steps=1.5"], "steps=1.5: expected int"),
    (["--steps=abc"], "--steps='abc': expected int"),
    (["--resume=maybe"], "expected a bool"),
    (["--schedule=cosine"], "schedule='cosine': expected one of range, step, constant"),
    (["--lre_min=1", "--lre_max=0"], "lre_min=1.0 > lre_max=0.0"),
    (["--decay_steps=[3, 2]", "--decay_lrs=[0.1, 0.1]"], "strictly increasing"),
    (["--decay_steps=[3]", "--decay_lrs=[0.1, 0.1]"], "give one lr per decay step"),
    (["--steps=0"], "steps=0: must be >= 1"),
    (["steps=3"], "unexpected argument 'steps=3'"),
    (["--steps=3", "--steps=4"], "given twice"),
    (["--lr=nan"], "must be a finite number"),
])
def test_bad_flags_name_the_problem(argv, fragment):
    with pytest.raises(LrscanError) as e:
        parse_args(argv)
    assert fragment in str(e.value)


def test_from_mapping_takes_wandb_config_values():
    # wandb.config hands back lists and may turn 1e5 into a float
    c = TrainConfig.from_mapping({"steps": 1e5, "decay_steps": [50000], "decay_lrs": [0.01], "lre_min": -2})
    assert c.steps == 100000 and c.decay_steps == (50000,) and c.lre_min == -2.0
    with pytest.raises(LrscanError, match="unknown config key 'bogus'"):
        TrainConfig.from_mapping({"bogus": 1})
    with pytest.raises(LrscanError, match="expected bool"):
        TrainConfig.from_mapping({"resume": 3})


def test_round_trip_through_to_dict():
    c = parse_args(["--decay_steps=[1, 2]", "--decay_lrs=[0.1, 0.01]", "--wandb_tags=[]"])
    assert TrainConfig.from_mapping(c.to_dict()) == c


def test_help_lists_every_key():
    text = help_text()
    assert all(f"--{k}=" in text for k in field_names())


def test_help_is_one_column_within_its_width(monkeypatch):
    monkeypatch.setenv("LRSCAN_DATA", "/a/very/long/path/to/a/word/list/that/takes/the/whole/column/words.txt")
    lines = help_text(width=80).splitlines()[3:]
    # a flag too long for the column stands on its own line; every help line starts in the same column
    assert all(len(line) <= 80 or " " not in line.strip() for line in lines)
    starts = {len(line) - len(line.lstrip()) for line in lines if not line.lstrip().startswith("--")}
    assert len(starts) == 1
    assert all(line.startswith("  --") and (len(line.split(None, 1)) == 1 or line.index(line.split(None, 1)[1])
                                            == next(iter(starts)))
               for line in lines if line.lstrip().startswith("--"))


def test_data_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LRSCAN_DATA", "/somewhere/words.txt")
    assert TrainConfig().data == "/somewhere/words.txt"


def test_coupled_parameter_sweeps_hand_picked_pairs():
    # W&B renders a dict value with ${args} as Python repr, and puts the dict itself in wandb.config
    c = parse_args(["--lre_range={'lre_min': -2.0, 'lre_max': -0.5}", "--seed=3"])
    assert (c.lre_min, c.lre_max, c.seed) == (-2.0, -0.5, 3)
    locked = {**TrainConfig().to_dict(), "lre_range": {"lre_min": -1, "lre_max": 0},
              "_wandb": {"cli_version": "0.31.0"}}
    c = TrainConfig.from_mapping(locked)
    assert (c.lre_min, c.lre_max) == (-1.0, 0.0)
    with pytest.raises(LrscanError, match="coupled parameter 'lre_range' has unknown key\\(s\\) 'lre_mn'"):
        parse_args(["--lre_range={'lre_mn': 1}"])
    with pytest.raises(LrscanError, match="--lre_min given twice"):
        parse_args(["--lre_range={'lre_min': -2.0}", "--lre_min=-1"])
    with pytest.raises(LrscanError, match="coupled parameter 'bogus' has unknown key\\(s\\) 'x'"):
        parse_args(["--bogus={'x': 1}"])
    with pytest.raises(LrscanError, match="unknown config key 'bogus'"):
        parse_args(["--bogus=3"])


def test_every_field_declares_its_kind_and_both_readers_use_it():
    from lrscan.analysis.blocks import NOT_HYPERPARAMETERS
    from lrscan.pipeline.config import (
        FIELD_KINDS,
        HYPER,
        LOCATION,
        OPERATIONAL,
        field_kind,
        fields_of_kind,
        hyperparameter_names,
    )

    assert all(field_kind(name) in FIELD_KINDS for name in field_names())
    assert set(fields_of_kind(*FIELD_KINDS)) == set(field_names())
    # a run may be renamed, retagged or evaluated more often when resumed; its numbers and its home stay
    assert {"wandb_name", "wandb_tags", "wandb_group", "eval_every_steps", "resume", "run_id", "data"} \
        <= set(fields_of_kind(OPERATIONAL))
    assert set(fields_of_kind(LOCATION)) == {"wandb_project", "wandb_entity"}
    assert {"lr", "lre_min", "steps", "seed", "n_hidden", "stop_on_climb"} <= set(hyperparameter_names())
    assert hyperparameter_names() == fields_of_kind(HYPER)
    # the analysis' "not swept" fields are exactly the fields that are not hyperparameters
    assert NOT_HYPERPARAMETERS == set(field_names()) - set(hyperparameter_names())
    with pytest.raises(ValueError, match="unknown field kind"):
        fields_of_kind("hyperparameter")


def test_task_and_task_args_arrive_as_flags_as_wandb_config_and_round_trip():
    # what `wandb agent` renders with ${args} for a dict value: its Python repr
    c = parse_args(["--task=examples/my_task.py:make", "--task_args=" + str({"width": 64, "dims": (2, 3)})])
    assert c.task == "examples/my_task.py:make" and c.task_args == {"width": 64, "dims": [2, 3]}  # as W&B stores it
    assert TrainConfig.from_mapping(c.to_dict()) == c
    # a sweep's locked config hands the mapping back as a dict; a field's mapping is never a coupled parameter
    from lrscan.pipeline.config import expand_coupled

    assert expand_coupled("task_args", {"width": 32}) == {"task_args": {"width": 32}}
    locked = TrainConfig.from_mapping({"task": "pkg.mod:make", "task_args": {"width": 32, "act": "gelu"}})
    assert locked.task_args == {"width": 32, "act": "gelu"}
    assert parse_args(["--task=pkg.mod:make", "--task_args={}"]).task_args == {}
    assert TrainConfig().task == "" and TrainConfig().task_args == {}


def test_task_and_task_args_are_hyperparameters():
    from lrscan.pipeline.config import HYPER, field_kind

    assert field_kind("task") == HYPER and field_kind("task_args") == HYPER


@pytest.mark.parametrize("argv, fragment", [
    (["--task_args={'width': 64}"], "given without --task"),
    (["--task=pkg.mod:make", "--task_args={width: 64}"],
     "--task_args='{width: 64}': expected mapping, e.g. {'width': 64}"),
    (["--task=pkg.mod:make", "--task_args=[1, 2]"], "task_args=[1, 2]: expected mapping"),
    (["--task=pkg.mod:make", "--task_args={1: 2}"], "task_args: key 1 is not a string"),
    (["--task=pkg.mod:make", "--task_args={'s': {1, 2}}"], "task_args['s']={1, 2}: a set; use numbers"),
    (["--task=my_task.py"], "task='my_task.py': expected path/to/file.py:FUNCTION or package.module:FUNCTION"),
])
def test_bad_task_flags_name_the_problem(argv, fragment):
    with pytest.raises(LrscanError) as e:
        parse_args(argv)
    assert fragment in str(e.value)


def test_the_word_list_is_found_from_any_folder(tmp_path, monkeypatch):
    """--data's default: $LRSCAN_DATA, else data/names.txt here, else the set-up's copy beside the package."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LRSCAN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    if config.SETUP_DATA.is_file():  # after `make data`: a folder without data/ uses the set-up's copy
        assert config.default_data_path() == str(config.SETUP_DATA) == TrainConfig().data
    else:
        assert config.default_data_path() == "data/names.txt"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "names.txt").write_text("emma\n")
    assert config.default_data_path() == "data/names.txt"
    monkeypatch.setenv("LRSCAN_DATA", "/elsewhere/words.txt")
    assert config.default_data_path() == "/elsewhere/words.txt" == TrainConfig().data
    assert "make data" not in config.missing_data_message("x.txt")


def test_the_per_user_cache_follows_xdg():
    assert config.cached_names_path({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path("/x/cache/lrscan/names.txt")
    assert config.cached_names_path({"HOME": "/h"}) == Path("/h/.cache/lrscan/names.txt")


def test_an_installed_lrscan_finds_the_word_list_in_the_per_user_cache(tmp_path, monkeypatch):
    # no $LRSCAN_DATA, no data/ here, no set-up copy beside the package (an installed wheel has none)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LRSCAN_DATA", raising=False)
    monkeypatch.setattr(config, "SETUP_DATA", tmp_path / "site-packages" / "data" / "names.txt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert config.default_data_path() == "data/names.txt"  # none yet: the error will name it
    cached = tmp_path / "cache" / "lrscan" / "names.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("emma\n")
    assert config.default_data_path() == str(cached) == TrainConfig().data


def test_step_mode_is_a_range_test_field():
    assert TrainConfig().step_mode == "exp"
    assert parse_args(["--step_mode=linear"]).step_mode == "linear"
    with pytest.raises(LrscanError, match=r"^step_mode='log': expected one of exp, linear$"):
        TrainConfig(step_mode="log")
    with pytest.raises(LrscanError, match=r"lre_max=400.0 with step_mode=linear: 10\*\*lre_max overflows"):
        TrainConfig(step_mode="linear", lre_max=400.0)
