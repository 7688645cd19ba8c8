"""Block means (the seed's view(-1, 1000).mean(1)) and the step-decay summary.

The synthetic frames live in tests/support/frames.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

from lrscan.analysis.blocks import PartialBlockWarning, block_means, decay_grid, decay_summary
from lrscan.analysis.runconfig import with_config
from lrscan.pipeline.errors import LrscanError
from tests.support.frames import (
    decay_history,
    decay_loaded,
    make_loaded,
    one_run,
    range_loaded,
)


def test_block_means_is_the_seeds_view_mean():
    lossi = torch.rand(5000, generator=torch.Generator().manual_seed(0)) + 0.3
    expected_means = torch.tensor(lossi.tolist()).view(-1, 1000).mean(1)  # the seed's line

    got = block_means(one_run(lossi.numpy()), block_steps=1000)

    expected = pd.DataFrame({
        "run_id": pd.Categorical(["a"] * 5),
        "block": np.arange(5, dtype="int64"),
        "step_start": np.arange(0, 5000, 1000, dtype="int64"),
        "step_end": np.arange(1000, 5001, 1000, dtype="int64"),
        "n_steps": np.full(5, 1000, dtype="int64"),
        "log10_loss": expected_means.double().numpy(),
    })
    assert_frame_equal(got, expected, check_exact=False, rtol=1e-6)
    assert got.attrs["partial_blocks_dropped"] == 0


def test_partial_tail_is_dropped_with_a_warning_or_kept_on_request():
    values = np.arange(2500, dtype="float64") / 1000
    with pytest.warns(PartialBlockWarning, match="dropped 1 block"):
        dropped = block_means(one_run(values), block_steps=1000)
    assert dropped["block"].tolist() == [0, 1]
    assert dropped.attrs["partial_blocks_dropped"] == 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = block_means(one_run(values), block_steps=1000, keep_partial=True)
    expected = pd.DataFrame({
        "run_id": pd.Categorical(["a"] * 3), "block": [0, 1, 2], "step_start": [0, 1000, 2000],
        "step_end": [1000, 2000, 2500], "n_steps": [1000, 1000, 500],
        "log10_loss": [values[:1000].mean(), values[1000:2000].mean(), values[2000:].mean()],
    }).astype({c: "int64" for c in ("block", "step_start", "step_end", "n_steps")})
    assert_frame_equal(kept, expected, check_exact=False, rtol=1e-6)


def test_missing_steps_are_not_measured_never_padded():
    # a run that lost step 1500 and everything from 2300 on: blocks by step position, no padding
    steps = np.r_[np.arange(0, 1500), np.arange(1501, 2300)].astype("int64")
    values = np.where(steps < 1000, 1.0, 2.0)
    kept = block_means(one_run(values, steps), block_steps=1000, keep_partial=True)
    assert kept[["block", "n_steps", "step_end"]].values.tolist() == [[0, 1000, 1000], [1, 999, 2000], [2, 300, 2300]]
    assert kept["log10_loss"].tolist() == pytest.approx([1.0, 2.0, 2.0])  # never pulled toward 0 or inf
    with pytest.warns(PartialBlockWarning):
        assert block_means(one_run(values, steps), block_steps=1000)["block"].tolist() == [0]


def blocks_frame(blocks: list[int], step_end: list[int], n_steps: list[int], means: list[float]) -> pd.DataFrame:
    """block_means' frame for one run "a" of blocks of 1000 steps."""
    return pd.DataFrame({
        "run_id": pd.Categorical(["a"] * len(blocks)), "block": blocks, "step_start": [b * 1000 for b in blocks],
        "step_end": step_end, "n_steps": n_steps, "log10_loss": means,
    }).astype({c: "int64" for c in ("block", "step_start", "step_end", "n_steps")})


def block_mean(steps: np.ndarray, values: np.ndarray, block: int) -> float:
    inside = steps // 1000 == block
    return float(values.astype("float32")[inside].astype("float64").mean())


def test_a_run_logged_every_10_steps_averages_the_steps_logged_in_each_block():
    # the HF Trainer's cadence: a loss after every 10th step, from step 10 on
    steps = np.arange(10, 3001, 10)
    values = 2.0 + np.sin(steps / 300.0)
    with pytest.warns(PartialBlockWarning, match="dropped 1 block"):  # step 3000 alone opens block 3
        got = block_means(one_run(values, steps), block_steps=1000)
    means = [block_mean(steps, values, b) for b in range(3)]
    expected = blocks_frame([0, 1, 2], [1000, 2000, 3000], [99, 100, 100], means)
    assert_frame_equal(got, expected, check_exact=False, rtol=1e-6)


def test_a_hole_in_the_runs_own_cadence_makes_its_block_partial():
    steps = np.setdiff1d(np.arange(0, 3000, 10), [1500])  # logged every 10 steps; the record of step 1500 lost
    values = np.ones(len(steps))
    kept = block_means(one_run(values, steps), block_steps=1000, keep_partial=True)
    assert kept["n_steps"].tolist() == [100, 99, 100]
    with pytest.warns(PartialBlockWarning, match="dropped 1 block"):
        assert block_means(one_run(values, steps), block_steps=1000)["block"].tolist() == [0, 2]


def test_a_block_without_a_logged_step_is_missing_never_zero():
    steps = np.r_[0:1000, 2000:3000]
    values = np.full(len(steps), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # blocks 0 and 2 are whole; block 1 is simply not there
        got = block_means(one_run(values, steps), block_steps=1000)
    assert_frame_equal(got, blocks_frame([0, 2], [1000, 3000], [1000, 1000], [0.5, 0.5]))


def test_a_loss_logged_on_odd_steps_fills_whole_blocks():
    steps = np.arange(1, 2000, 2)  # lr on even steps, the loss on odd ones
    values = np.linspace(1.0, 2.0, len(steps))
    got = block_means(one_run(values, steps), block_steps=1000)
    expected = blocks_frame([0, 1], [1000, 2000], [500, 500], [block_mean(steps, values, b) for b in range(2)])
    assert_frame_equal(got, expected, check_exact=False, rtol=1e-6)


def test_nan_inside_a_block_makes_its_mean_nan_as_torch():
    values = np.ones(2000)
    values[1500] = np.nan
    got = block_means(one_run(values), block_steps=1000)["log10_loss"].to_numpy()
    expected = torch.tensor(values).view(-1, 1000).mean(1).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert got[0] == 1.0


def test_runs_keep_their_config_columns_and_are_independent():
    # one run each: their config lives in `runs` (one value only); joined on, as the wide frame had it
    one = decay_loaded(seeds=(1,), decay_steps=(2000,), decay_lrs=(0.01,), steps=3000)
    two = decay_loaded(seeds=(2,), decay_steps=(1000,), decay_lrs=(0.001,), steps=2000)
    other = with_config(two.steps, two.runs).assign(run_id=lambda d: d["run_id"].cat.rename_categories(["zzz"]))
    steps = pd.concat([with_config(one.steps, one.runs), other], ignore_index=True)
    steps["run_id"] = steps["run_id"].astype("category")

    got = block_means(steps, block_steps=1000)

    assert got.groupby("run_id", observed=True).size().to_dict() == {"run000": 3, "zzz": 2}
    zzz = got.loc[got["run_id"] == "zzz", ["seed", "decay_steps", "decay_lrs"]].drop_duplicates()
    assert zzz.values.tolist() == [[2, "[1000]", "[0.001]"]]
    by_block = steps.loc[steps["run_id"] == "zzz"].groupby(steps["step"] // 1000)["log10_loss"]
    expected = by_block.mean().to_numpy(dtype="float64")
    np.testing.assert_allclose(got.loc[got["run_id"] == "zzz", "log10_loss"], expected, rtol=1e-6)
    assert list(got.columns[:6]) == ["run_id", "block", "step_start", "step_end", "n_steps", "log10_loss"]
    assert "lr" not in got.columns  # the logged lr is per step, not a config column


@pytest.mark.parametrize("block_steps", [0, -5, 2.5])
def test_bad_block_steps(block_steps):
    with pytest.raises(LrscanError, match="block_steps"):
        block_means(one_run(np.ones(10)), block_steps=block_steps)


def test_missing_column_is_named():
    with pytest.raises(LrscanError, match="'smooth_loss'"):
        block_means(one_run(np.ones(10)), column="smooth_loss")


# -- decay_summary ---------------------------------------------------------------------------------


def test_decay_summary_averages_seeds_per_config_and_finds_the_best():
    loaded = decay_loaded()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 6000 steps are 6 whole blocks: nothing dropped
        summary = decay_summary(loaded.steps, loaded.runs, block_steps=1000)

    assert summary.by == ["decay_steps", "decay_lrs"]
    assert summary.metric == "final_dev_loss"
    # the earliest drop to the lowest lr ends lowest in this synthetic grid
    assert (summary.best["decay_steps"], summary.best["decay_lrs"]) == ("[2000]", "[0.001]")

    # curves: the plain mean over the two seeds' blocks
    blocks = loaded.steps.assign(block=loaded.steps["step"] // 1000)
    one = blocks.loc[(blocks["decay_steps"] == "[4000]") & (blocks["decay_lrs"] == "[0.01]")]
    per_run = one.groupby(["run_id", "block"], observed=True)["log10_loss"].mean().astype("float64")
    expected = per_run.groupby("block").mean()
    curve = summary.curves.loc[summary.curves["config"] == "decay_steps=[4000] decay_lrs=[0.01]"]
    got = curve.set_index("block")["log10_loss"]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9)
    assert set(summary.curves["n_runs"]) == {2}

    table = summary.table.set_index("config")
    label = "decay_steps=" + loaded.runs["decay_steps"] + " decay_lrs=" + loaded.runs["decay_lrs"]
    runs = loaded.runs.assign(config=label)
    expected_dev = runs.groupby("config")["dev_loss"].mean()
    np.testing.assert_allclose(table["final_dev_loss"].sort_index(), expected_dev.sort_index(), rtol=1e-12)
    assert table["n_seeds"].tolist() == [2, 2, 2, 2]
    assert table["final_block"].tolist() == [5, 5, 5, 5]
    assert summary.table["final_dev_loss"].is_monotonic_increasing


def test_final_block_is_the_last_one_every_seed_measured():
    loaded = decay_loaded(seeds=(1, 2), decay_steps=(2000,), decay_lrs=(0.01,))
    short = loaded.steps["run_id"].eq("run001") & loaded.steps["step"].ge(4000)  # seed 2 stopped at step 4000
    steps = loaded.steps.loc[~short]
    summary = decay_summary(steps, loaded.runs, block_steps=1000, by=["decay_steps"])
    row = summary.table.iloc[0]
    assert row["final_block"] == 3
    expected = steps.loc[steps["step"].between(3000, 3999)].groupby("run_id", observed=True)["log10_loss"].mean().mean()
    assert row["final_block_loss"] == pytest.approx(expected, rel=1e-6)


def test_lr_swept_is_found_from_the_runs_frame():
    runs = [({"seed": s, "schedule": "constant", "lr": lr, "steps": 3000}, decay_history(s, 10**9, lr, 3000, lr))
            for s in (1, 2) for lr in (0.1, 0.03)]
    loaded = make_loaded(runs)
    summary = decay_summary(loaded.steps, loaded.runs, block_steps=1000)
    assert summary.by == ["lr"]
    assert summary.best["lr"] == 0.03


def test_decay_summary_without_dev_loss_scores_the_final_block():
    loaded = decay_loaded(seeds=(1,), decay_steps=(2000, 4000), decay_lrs=(0.01,))
    summary = decay_summary(loaded.steps, None, block_steps=1000)
    assert summary.metric == "final_block_loss"
    assert summary.best["decay_steps"] == "[2000]"


def test_decay_summary_needs_decay_runs():
    with pytest.raises(LrscanError, match="no step-decay"):
        decay_summary(range_loaded(seeds=(1,)).steps, block_steps=100)


def test_decay_grid_orders_labels_by_value():
    table = pd.DataFrame({
        "decay_steps": ["[100000]", "[50000]", "[100000]", "[50000]"],
        "decay_lrs": ["[0.01]", "[0.01]", "[0.001]", "[0.001]"],
        "final_dev_loss": [2.1, 2.2, 2.3, 2.4],
    })
    grid = decay_grid(table, "decay_steps", "decay_lrs", "final_dev_loss")
    expected = pd.DataFrame([[2.4, 2.2], [2.3, 2.1]], index=pd.Index(["[50000]", "[100000]"], name="decay_steps"),
                            columns=pd.Index(["[0.001]", "[0.01]"], name="decay_lrs"))
    assert_frame_equal(grid, expected, check_index_type=False, check_column_type=False)
