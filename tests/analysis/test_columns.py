"""analysis.columns: which logged keys are the loss, lr and step; what is derived; the lr in force; the cadence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lrscan.analysis.columns import (
    KeyChoice,
    canonical_frame,
    choose_keys,
    key_notes,
    keys_to_read,
    logged_keys,
    lr_in_force,
    missing_steps,
    on_step_key,
    read_columns,
)
from lrscan.analysis.plain import frame_records
from lrscan.analysis.sources import load_runs
from tests.support.library_runs import truth as library_truth

REPO = Path(__file__).resolve().parents[2]

NAN = np.nan


@pytest.mark.parametrize("logged, expected", [
    # lrscan's own keys win
    (["lr", "lre", "loss", "log10_loss", "train/loss", "learning_rate"],
     KeyChoice("loss", "lr", other_losses=("train/loss",))),
    (["lre", "log10_loss"], KeyChoice("log10_loss", "lre")),
    # the HF Trainer's callback, with its step counter
    (["train/loss", "train/learning_rate", "train/epoch", "train/global_step"],
     KeyChoice("train/loss", "train/learning_rate", "train/global_step")),
    (["train_loss", "learning_rate"], KeyChoice("train_loss", "learning_rate")),
    (["training_loss", "lr-SGD"], KeyChoice("training_loss", "lr-SGD")),
    # Lightning: lr-<Optimizer>, param groups in name order (pg2 before pg10), momentum is not an lr
    (["loss_step", "lr-AdamW/pg10", "lr-AdamW/pg2-momentum", "lr-AdamW/pg2", "trainer/global_step"],
     KeyChoice("loss_step", "lr-AdamW/pg2", "trainer/global_step", other_lrs=("lr-AdamW/pg10",))),
    (["loss", "lr-SGD-momentum", "lr-SGD-weight_decay"], KeyChoice("loss", None)),
    (["acc", "val_loss"], KeyChoice(None, None)),
    # Lightning's self.log("train_loss", on_step=True, on_epoch=True): the _step key, never the _epoch one
    (["train_loss_epoch", "train_loss_step", "lr-Adam", "epoch", "trainer/global_step"],
     KeyChoice("train_loss_step", "lr-Adam", "trainer/global_step")),
    (["val_loss_epoch", "train/loss_epoch", "lr-Adam"], KeyChoice(None, "lr-Adam")),
    # fastai's WandbCallback: raw_loss is the batch's loss (train_loss is smoothed), lr_0 is param group 0
    (["epoch", "train_loss", "raw_loss", "lr_0", "lr_1", "lr_10", "lr_2", "mom_0", "wd_0", "valid_loss"],
     KeyChoice("raw_loss", "lr_0", other_losses=("train_loss",))),
])
def test_keys_are_chosen_in_the_documented_order(logged: list[str], expected: KeyChoice) -> None:
    assert choose_keys(logged) == expected


def test_named_keys_win_and_an_absent_named_key_is_none() -> None:
    logged = ["loss", "lr", "my/loss", "lr-Adam/pg1", "lr-Adam/pg2"]
    assert choose_keys(logged, loss_key="my/loss", lr_key="lr-Adam/pg2") == KeyChoice(
        "my/loss", "lr-Adam/pg2", other_lrs=("lr-Adam/pg1",), other_losses=("loss",))
    assert choose_keys(logged, loss_key="no/such/key") == KeyChoice(
        None, "lr", other_lrs=("lr-Adam/pg1", "lr-Adam/pg2"), other_losses=("loss",))


def test_the_choice_among_several_candidates_is_said() -> None:
    both = choose_keys(["loss", "train/loss", "lr", "lr-Adam/pg1", "lr-Adam/pg2"])
    assert key_notes(both) == [
        "loss read from loss; it also logged train/loss (--loss-key picks another)",
        "lr read from lr; it also logged lr-Adam/pg1, lr-Adam/pg2 (--lr-key picks another)"]
    assert key_notes(both, named_loss=True, named_lr=True) == []
    fastai = choose_keys(["train_loss", "raw_loss", "lr_0", "lr_1"])
    assert key_notes(fastai) == [
        "loss read from raw_loss (fastai's loss of each batch, not its smoothed train_loss); it also logged "
        "train_loss (fastai's smoothed loss) (--loss-key picks another)"]
    # lrscan's own pairs are one quantity each: nothing to say
    assert key_notes(choose_keys(["lr", "lre", "loss", "log10_loss"])) == []


def test_keys_to_read() -> None:
    assert keys_to_read(KeyChoice("loss", "lr"), ["dev_loss"]) == ["lr", "lre", "loss", "log10_loss", "dev_loss"]
    assert keys_to_read(KeyChoice("train/loss", "lr-SGD", "trainer/global_step")) == [
        "lr-SGD", "train/loss", "trainer/global_step"]


def test_logged_keys_skips_keys_never_logged() -> None:
    history = {"step": np.arange(3), "lr": np.array([0.1, NAN, 0.1]), "lre": np.full(3, NAN), "x": np.zeros(0)}
    assert logged_keys(history) == ["lr"]


def test_missing_keys_are_derived_row_by_row() -> None:
    # lrscan's own pairs are kept as logged; a row missing one of a pair gets it from the other
    history = pd.DataFrame({
        "step": [0, 1, 2],
        "lr": [0.001, NAN, 0.1],
        "lre": [-3.0, -2.0, NAN],
        "loss": [100.0, NAN, 1.0],
        "log10_loss": [NAN, 1.0, 0.0],
    })
    got = canonical_frame(history, choose_keys(["lr", "lre", "loss", "log10_loss"]))
    expected = pd.DataFrame({
        "step": np.array([0, 1, 2], np.int64),
        "lr": [0.001, 0.01, 0.1],
        "lre": [-3.0, -2.0, -1.0],
        "loss": [100.0, 10.0, 1.0],
        "log10_loss": [2.0, 1.0, 0.0],
    })
    assert_frame_equal(got, expected)


def test_other_names_become_the_analysis_columns() -> None:
    history = pd.DataFrame({"step": [0, 1], "train/loss": [10.0, 1.0], "learning_rate": [0.01, 0.1],
                            "grad_norm": [1.0, 2.0]})
    got = canonical_frame(history, choose_keys(history.columns), carried=["dev_loss"])
    expected = pd.DataFrame({"step": np.array([0, 1], np.int64), "lr": [0.01, 0.1], "lre": [-2.0, -1.0],
                             "loss": [10.0, 1.0], "log10_loss": [1.0, 0.0], "dev_loss": [NAN, NAN]})
    assert_frame_equal(got, expected)


def test_lr_and_loss_on_alternating_steps_pair_the_loss_with_the_lr_in_force() -> None:
    # lr logged at step k (before the update), the loss at step k + 1: one row per loss, lr of the step before
    history = pd.DataFrame({"step": [0, 1, 2, 3, 4, 5],
                            "lr": [0.001, NAN, 0.01, NAN, 0.1, NAN],
                            "loss": [NAN, 3.0, NAN, 2.0, NAN, 1.0]})
    got = canonical_frame(history, choose_keys(["lr", "loss"]))
    expected = pd.DataFrame({"step": np.array([1, 3, 5], np.int64), "lr": [0.001, 0.01, 0.1],
                             "lre": [-3.0, -2.0, -1.0], "loss": [3.0, 2.0, 1.0],
                             "log10_loss": np.log10([3.0, 2.0, 1.0])})
    assert_frame_equal(got, expected)


def test_an_infinite_loss_is_a_measured_step_a_nan_one_is_not() -> None:
    history = pd.DataFrame({"step": [0, 1, 2], "lr": [0.1, 1.0, 10.0], "loss": [2.0, np.inf, NAN]})
    got = canonical_frame(history, choose_keys(["lr", "loss"]))
    assert got["step"].tolist() == [0, 1] and np.isinf(got["loss"].iloc[1]) and np.isinf(got["log10_loss"].iloc[1])


def test_a_global_step_counter_merges_the_rows_of_one_step() -> None:
    # Lightning: the lr monitor's row and the metrics' row are two W&B steps of one global step
    history = pd.DataFrame({
        "step": [0, 1, 2, 3, 4],
        "lr-SGD": [0.01, NAN, 0.1, NAN, NAN],
        "loss_step": [NAN, 2.0, NAN, 1.5, NAN],
        "trainer/global_step": [0.0, 0.0, 50.0, 50.0, 50.0],
    })
    expected_merged = pd.DataFrame({"step": np.array([0, 50], np.int64), "lr-SGD": [0.01, 0.1],
                                    "loss_step": [2.0, 1.5]})
    assert_frame_equal(on_step_key(history, "trainer/global_step"), expected_merged)
    got = canonical_frame(history, choose_keys(history.columns))
    assert got["step"].tolist() == [0, 50] and got["lr"].tolist() == [0.01, 0.1] and got["loss"].tolist() == [2.0, 1.5]


def test_rows_without_the_counter_take_the_counter_in_force_at_their_wandb_step() -> None:
    # a user's own wandb.log({"loss": ...}) beside Lightning's lr monitor (which logs the counter):
    # each loss row belongs to the global step of the lr row before it; a row before any counter, to the first
    history = pd.DataFrame({
        "step": [0, 1, 2, 3, 4, 5, 6],
        "lr-SGD": [NAN, 0.01, NAN, 0.1, NAN, 1.0, NAN],
        "loss": [9.0, NAN, 3.0, NAN, 2.0, NAN, 1.0],
        "trainer/global_step": [NAN, 0.0, NAN, 1.0, NAN, 2.0, NAN],
    })
    columns = read_columns(history, choose_keys(history.columns))
    expected = pd.DataFrame({"step": np.array([0, 1, 2], np.int64), "lr": [0.01, 0.1, 1.0], "lre": [-2.0, -1.0, 0.0],
                             "loss": [3.0, 2.0, 1.0], "log10_loss": np.log10([3.0, 2.0, 1.0])})
    # step 0's loss: 9.0 was logged before the first training step, 3.0 at it; merged, the later one wins ...
    assert columns.choice.step == "_step" and columns.notes == (
        "loss logged more often than trainer/global_step counts steps (1 of its rows share one): its rows are "
        "numbered by W&B's _step instead, so none is lost",)
    # ... which is a clash: so the rows are numbered by W&B's _step, every loss kept, each with the lr in force
    got = columns.frame
    assert got["step"].tolist() == [0, 2, 4, 6] and got["loss"].tolist() == [9.0, 3.0, 2.0, 1.0]
    np.testing.assert_array_equal(got["lr"], [NAN, 0.01, 0.1, 1.0])
    # without the early row the counter tells the rows apart and numbers them
    later = read_columns(history.iloc[1:], choose_keys(history.columns))
    assert later.choice.step == "trainer/global_step" and later.notes == ()
    assert_frame_equal(later.frame, expected)
    np.testing.assert_array_equal(later.lr_step, [0, 1, 2])
    np.testing.assert_array_equal(later.lr_logged, [0.01, 0.1, 1.0])


def lightning_every_50_and_a_loss_of_your_own(steps: int, calls_per_step: int) -> pd.DataFrame:
    """Lightning logs its lr and counter every 50 steps (log_every_n_steps); the user's own wandb.log of the loss
    at every step carries the counter wandb's step_sync fills in: the last one Lightning logged."""
    rows = []
    for t in range(steps):
        if t % 50 == 0:
            rows.append({"lr-SGD": 10.0 ** (-3 + t / 100), "trainer/global_step": float(t)})
        rows += [{"loss": 2.0 + t / 1000 + i / 10, "trainer/global_step": float(t - t % 50)}
                 for i in range(calls_per_step)]
    return pd.DataFrame(rows).assign(step=np.arange(len(rows)))


def test_a_loss_logged_every_step_beside_a_counter_logged_every_50_is_numbered_step_by_step() -> None:
    history = lightning_every_50_and_a_loss_of_your_own(200, 1)
    columns = read_columns(history, choose_keys(history.columns))
    assert columns.choice.step == "trainer/global_step"
    assert columns.notes == ("196 row(s) of loss share a trainer/global_step with an earlier one (logged without it: "
                             "a wandb.log of your own): each is the step after the one before it",)
    expected_lr = 10.0 ** (-3 + (np.arange(200) // 50 * 50) / 100)
    assert columns.frame["step"].tolist() == list(range(200))
    assert columns.frame["loss"].tolist() == history["loss"].dropna().tolist()
    np.testing.assert_allclose(columns.frame["lr"], expected_lr)
    np.testing.assert_array_equal(columns.lr_step, [0, 50, 100, 150])


def test_a_loss_logged_twice_a_step_is_numbered_by_wandbs_step_and_every_row_kept() -> None:
    history = lightning_every_50_and_a_loss_of_your_own(200, 2)
    columns = read_columns(history, choose_keys(history.columns))
    assert columns.choice.step == "_step" and "numbered by W&B's _step instead" in columns.notes[0]
    assert columns.frame["loss"].tolist() == history["loss"].dropna().tolist()
    assert columns.frame["step"].tolist() == history["step"][history["loss"].notna()].tolist()


def test_the_lr_trace_is_the_lr_as_logged_not_carried_forward() -> None:
    # a range test whose lr is logged every 10 steps and its loss every step
    step = np.arange(100)
    history = pd.DataFrame({"step": step, "lr": np.where(step % 10 == 0, 10.0 ** (step / 10 - 5), NAN),
                            "loss": np.ones(100)})
    columns = read_columns(history, choose_keys(["lr", "loss"]))
    np.testing.assert_array_equal(columns.lr_step, np.arange(0, 100, 10))
    assert len(columns.frame) == 100 and columns.frame["lr"].nunique() == 10


def test_lr_in_force() -> None:
    got = lr_in_force(np.arange(6), np.array([NAN, 0.1, NAN, NAN, 0.01, NAN]))
    np.testing.assert_array_equal(got, [NAN, 0.1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("steps, expected", [
    (np.arange(100), (0, None, 1)),
    (np.r_[0:10, 15:20], (5, 9, 1)),                      # 10..14 lost
    (np.arange(10, 1001, 10), (0, None, 10)),             # logged every 10 steps: nothing missing
    (np.r_[10:500:10, 510:1001:10], (1, 490, 10)),        # one logged point (500) lost
    (np.arange(1, 200, 2), (0, None, 2)),                 # the loss on odd steps only
    (np.array([1, 2, 4, 8, 16, 32, 64]), (0, None, 1)),   # no regular cadence: nothing is "missing"
    (np.array([5]), (0, None, 1)),
])
def test_missing_steps_are_holes_in_the_runs_own_cadence(steps: np.ndarray, expected: tuple) -> None:
    assert missing_steps(steps) == expected


# -- runs the real libraries wrote (tests/support/library_runs.py; fastai's committed in tests/fixtures) --

FASTAI = REPO / "tests" / "fixtures" / "user_runs" / "fastai"


def loaded_run(path: Path) -> tuple[pd.DataFrame, dict, list[str]]:
    """(steps, the runs-table row, notes) of one run file as `load_runs` reads it."""
    loaded = load_runs(path)
    [info] = frame_records(loaded.runs)
    return loaded.steps, info, loaded.notes


@pytest.mark.slow
@pytest.mark.parametrize("run_id, keys", [
    # self.log("train_loss", on_step=True, on_epoch=True): train_loss_step, never train_loss_epoch
    ("lightning_every_step", ("train_loss_step", "lr-SGD", "trainer/global_step")),
    # the user's own wandb.log({"loss"}) every step beside Lightning logging every 10: every row kept, step by step
    ("lightning_own_loss", ("loss", "lr-SGD", "trainer/global_step")),
])
def test_lightning_runs_read_step_for_step_as_the_trainer_ran_them(library_runs, run_id, keys) -> None:
    steps, info, notes = loaded_run(library_runs[run_id])
    truth = pd.DataFrame(library_truth(library_runs[run_id]))
    assert (info["loss_key"], info["lr_key"], info["step_key"], info["schedule"]) == (*keys, "range")
    assert steps["step"].tolist() == truth["step"].tolist() == list(range(200))
    np.testing.assert_allclose(steps["loss"], truth["loss"], rtol=1e-6)
    if run_id == "lightning_every_step":
        np.testing.assert_allclose(steps["lr"], truth["lr"], rtol=1e-12)
        assert notes == []
    else:  # Lightning logged the lr at steps 9, 19, ...: the lr in force is the last one it logged
        logged_at = (np.arange(200) + 1) // 10 * 10 - 1
        expected = np.where(logged_at >= 0, truth["lr"].to_numpy()[np.maximum(logged_at, 0)], np.nan)
        np.testing.assert_allclose(steps["lr"], expected, rtol=1e-12)
        assert notes == [f"run {run_id}: loss read from loss; it also logged train_loss_step (--loss-key picks "
                         f"another)",
                         f"run {run_id}: 179 row(s) of loss share a trainer/global_step with an earlier one (logged "
                         f"without it: a wandb.log of your own): each is the step after the one before it"]


@pytest.mark.slow
def test_hf_trainer_runs_read_at_their_logging_steps(library_runs) -> None:
    steps, info, notes = loaded_run(library_runs["hf_range"])
    truth = pd.DataFrame(library_truth(library_runs["hf_range"])).set_index("step")
    assert (info["loss_key"], info["lr_key"], info["step_key"]) == ("train/loss", "train/learning_rate",
                                                                  "train/global_step")
    assert steps["step"].tolist() == list(range(10, 201, 10)) and notes == []
    # the lr logged at step k is the lr step k trained with
    np.testing.assert_allclose(steps["lr"], truth.loc[steps["step"], "lr"], rtol=1e-12)


def test_fastai_runs_read_the_raw_loss_and_group_0s_lr() -> None:
    for name in ("range", "one_cycle"):
        steps, info, notes = loaded_run(FASTAI / f"run-fastai_{name}.wandb")
        truth = pd.DataFrame(json.loads((FASTAI / f"fastai_{name}.json").read_text()))
        assert (info["loss_key"], info["lr_key"], info["step_key"]) == ("raw_loss", "lr_0", "_step")
        assert notes[0] == (f"run fastai_{name}: loss read from raw_loss (fastai's loss of each batch, not its "
                            f"smoothed train_loss); it also logged train_loss (fastai's smoothed loss) (--loss-key "
                            f"picks another)")
        # WandbCallback logs batch i at W&B step i (`step=` of its own); the range test's losses after it diverged
        # were logged as NaN: rows with a NaN loss and their lr
        assert steps["step"].tolist() == list(range(300))
        assert name == "one_cycle" or np.isnan(truth["raw_loss"].iloc[-1])
        np.testing.assert_allclose(steps["loss"], truth["raw_loss"], rtol=1e-6)
        np.testing.assert_allclose(steps["lr"], truth["lr_0"], rtol=1e-12)


@pytest.mark.slow
def test_a_key_of_your_own_named_step_never_replaces_wandbs_step(tmp_path) -> None:
    import wandb

    run = wandb.init(mode="offline", dir=tmp_path, id="ownstep", settings=wandb.Settings(console="off"))
    for i in range(50):
        # an lr under a name of its own sends the reader through every key, `step` among them
        run.log({"step": 1000 + 10 * i, "loss": 2.0 + i / 100, "my/lr": 0.1})
    run.finish()
    wandb.teardown()
    loaded = load_runs(tmp_path / "wandb", lr_key=None)
    assert loaded.steps["step"].tolist() == list(range(50))
    assert loaded.steps["loss"].tolist() == pytest.approx([2.0 + i / 100 for i in range(50)])
