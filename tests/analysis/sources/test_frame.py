"""analysis.sources.frame: the steps and runs frames, typed, from real offline runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lrscan.analysis.runconfig import CONFIG_IN_RUNS, with_config
from lrscan.analysis.sources import load_runs
from lrscan.pipeline.config import field_names
from lrscan.pipeline.errors import LrscanError
from tests.support.frames import expected_group_a_steps
from tests.support.runfiles import make_run, rows_of


def test_tidy_frame_is_exactly_the_logged_steps(runs_dir: Path) -> None:
    loaded = load_runs(runs_dir, group="A")
    assert_frame_equal(loaded.steps, expected_group_a_steps())
    assert loaded.skipped_records == 0 and loaded.problems == []


def test_runs_frame(runs_dir: Path) -> None:
    runs = load_runs(runs_dir).runs
    assert list(runs.columns[:12]) == ["run_id", "run_name", "group", "sweep", "tags", "job_type", "state",
                                       "exit_code", "path", "n_steps", "first_step", "last_step"]
    assert runs["run_id"].tolist() == ["a1", "a2", "b1"]
    assert runs["tags"].tolist() == ["x,y", "x", "y"]
    assert runs["sweep"].tolist() == ["", "", "swp1"]
    assert runs["state"].tolist() == ["finished", "crashed", "finished"]
    assert runs["exit_code"].tolist() == [0, 1, 0] and runs["exit_code"].dtype == "Int64"
    assert runs["n_steps"].tolist() == [5, 3, 2] and runs["last_step"].tolist() == [4, 2, 1]
    assert runs["lre_min"].dtype == np.float64 and runs["lre_min"].tolist()[:2] == [-3.0, -2.0]
    assert runs["lr"].tolist()[2] == 0.1  # the config field, not the last logged lr
    assert runs["final_step"].dtype == "Int64" and runs["final_step"].tolist() == [4, 2, pd.NA]
    assert runs["train_loss"].tolist() == [2.5, 2.0, 3.0]
    assert runs["stop_reason"].tolist()[1] == "climb"
    summary_at = list(runs.columns).index("train_loss")
    assert list(runs.columns).index("decay_steps") < summary_at  # config fields, then summary keys
    assert all(Path(p).name == f"run-{i}.wandb" for p, i in zip(runs["path"], runs["run_id"]))


def test_explicit_keys(runs_dir: Path) -> None:
    steps = load_runs(runs_dir, group="A", keys=["loss", "dev_loss"]).steps
    assert list(steps.columns[-3:]) == ["step", "loss", "dev_loss"]
    assert steps["dev_loss"].dtype == np.float32


NO_KEYS = ("run n1: no loss and no lr logged (looked for loss: loss, log10_loss, train/loss, raw_loss, train_loss, "
           "training_loss, loss_step, train/loss_step, raw_loss_step, train_loss_step, training_loss_step; lr: lr, "
           "lre, learning_rate, train/learning_rate, lr_0, lr-<Optimizer>; it logged report_seconds); --loss-key and "
           "--lr-key name other keys")


def test_runs_without_a_loss(runs_dir: Path) -> None:
    with pytest.raises(LrscanError) as error:
        load_runs(runs_dir, job_type="analysis")
    assert str(error.value) == f"none of the 1 matching run(s) logged a loss to analyse: {NO_KEYS}"
    loaded = load_runs(runs_dir, group="A", job_type=None)  # one bad run among good ones: reported
    assert loaded.runs["run_id"].tolist() == ["a1", "a2", "n1"]
    assert loaded.runs["n_steps"].tolist() == [5, 3, 0]
    assert loaded.problems == [NO_KEYS]


# -- config values ----------------------------------------------------------------------------------


def test_bool_config_values_are_parsed_not_taken_for_truthy(tmp_path: Path) -> None:
    # a sweep's `--stop_on_climb=False`, a hand-written config: the string "False" is not True
    for run_id, flag in (("f1", "False"), ("f2", "true"), ("f3", 0), ("f4", "1")):
        make_run(tmp_path / run_id, rows_of([-1.0]), run_id=run_id, group="F", config={"stop_on_climb": flag})
    make_run(tmp_path / "odd", rows_of([-1.0]), run_id="odd", group="O", config={"stop_on_climb": "maybe"})
    loaded = load_runs(tmp_path, group="F")
    assert loaded.runs["stop_on_climb"].tolist() == [False, True, False, True]
    assert loaded.runs["stop_on_climb"].dtype == bool
    assert loaded.steps["stop_on_climb"].tolist() == [False, True, False, True]
    odd = load_runs(tmp_path, group="O")  # neither: kept as given, not guessed
    assert odd.runs["stop_on_climb"].tolist() == ["maybe"] and "stop_on_climb" not in odd.steps  # one run: constant
    assert with_config(odd.steps, odd.runs)["stop_on_climb"].tolist() == ["maybe"]


# -- the steps frame holds the config fields that tell runs apart -------------------------------------


def test_steps_hold_only_the_config_fields_that_differ_between_runs(tmp_path: Path) -> None:
    # at 10M rows each config column costs 10 MB: the ones every run shares live in `runs` only
    shared = {"n_hidden": 300, "batch_size": 64, "schedule": "range", "wandb_project": "p"}
    for i, seed in enumerate((1, 2, 1)):
        make_run(tmp_path / f"r{i}", rows_of([-2.0, -1.0]), run_id=f"r{i}", group="G",
                 config={**shared, "seed": seed, "lre_min": -3.0 + i})
    make_run(tmp_path / "s0", rows_of([-2.0]), run_id="s0", group="S", config={**shared, "seed": 7})
    loaded = load_runs(tmp_path, group="G")
    config_on_steps = [c for c in loaded.steps.columns if c in ("n_hidden", "batch_size", "schedule", "wandb_project",
                                                                  "seed", "lre_min")]
    assert config_on_steps == ["seed", "schedule", "lre_min"]  # what differs, and schedule and seed always
    assert loaded.runs["n_hidden"].tolist() == [300, 300, 300] and loaded.runs["wandb_project"].tolist() == 3 * ["p"]
    one = load_runs(tmp_path, group="S")  # one run: seed and schedule still there, the analysis splits by them
    assert [c for c in one.steps.columns if c in ("seed", "schedule", "n_hidden")] == ["seed", "schedule"]
    # the wide frame, when wanted: every field joined back, typed and in TrainConfig's order, as one frame had it
    wide = with_config(loaded.steps, loaded.runs)
    assert wide["n_hidden"].tolist() == 6 * [300] and wide["n_hidden"].dtype == "category"
    assert wide["n_hidden"].cat.categories.dtype == "int64"
    assert wide["wandb_project"].tolist() == 6 * ["p"]
    fields = [c for c in wide.columns if c in field_names() and c not in ("run_id", "lr")]  # lr: the logged one
    assert fields == [f for f in field_names() if f in fields]
    assert list(wide.columns[:4]) == ["run_id", "run_name", "group", "sweep"]
    assert list(wide.columns[-5:]) == ["step", "lr", "lre", "loss", "log10_loss"]
    assert_frame_equal(wide[loaded.steps.columns], loaded.steps)  # the frame's own columns untouched
    # steps says which fields it left to runs (a reader of steps alone that needs them says so); wide lacks none
    assert {"n_hidden", "batch_size", "wandb_project"} <= set(loaded.steps.attrs[CONFIG_IN_RUNS])
    assert CONFIG_IN_RUNS not in wide.attrs
