"""analysis.prove: candidates and their merging, the paired decision on synthetic losses, and a user's own lr grid."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from scipy import stats

from lrscan.analysis.__main__ import main as analysis_main
from lrscan.analysis.prove import (
    TRAIN_TAIL,
    constant_lr_grids,
    final_losses,
    prove_candidates,
    prove_decision,
    prove_table,
)
from lrscan.analysis.sources import load_runs
from lrscan.pipeline.errors import LrscanError

PICK = {"best_lre": -1.0, "best_lre_ci": [-1.06, -0.8], "steepest_lre": -1.5, "valley_lre": -1.95}


def finals(losses: dict[float, list[float]], seeds=(1, 2, 3)) -> pd.DataFrame:
    """A final-losses frame: lr -> one loss per seed."""
    rows = [{"run_id": f"r{lr}-{s}", "lr": lr, "seed": float(s), "loss": v, "judged_by": "dev_loss"}
            for lr, vs in losses.items() for s, v in zip(seeds, vs)]
    return pd.DataFrame(rows)


def test_candidates_merge_within_a_tenth_of_a_decade_and_name_all_their_suggesters():
    got = prove_candidates(PICK, extra_lrs=[0.01, 0.5])
    # fastai_minimum (-2.0) absorbs valley (-1.95) and the user's 0.01; ci_low (-1.06) joins min_loss
    expected = pd.DataFrame({
        "name": ["fastai_minimum", "steepest", "min_loss", "ci_high", "user_0.5"],
        "suggested_by": ["fastai_minimum, valley, user", "steepest", "min_loss, ci_low", "ci_high", "user"],
        "lr": [0.01, 10 ** -1.5, 0.1, 10 ** -0.8, 0.5],
        "lre": [-2.0, -1.5, -1.0, -0.8, math.log10(0.5)],
    })
    assert_frame_equal(got, expected)


def test_candidates_from_an_exponent_pick_object_and_bad_lrs():
    class Pick:
        best_lre, best_lre_ci, steepest_lre, valley_lre = -1.0, (math.nan, math.nan), -1.5, -2.5

    got = prove_candidates(Pick())
    assert got["name"].tolist() == ["valley", "fastai_minimum", "steepest", "min_loss"]  # no CI: no CI ends
    with pytest.raises(LrscanError, match="not a learning rate"):
        prove_candidates(PICK, extra_lrs=[-0.1])
    with pytest.raises(LrscanError, match="no pick"):
        prove_candidates({"best_lre": None})


def test_paired_ci_is_the_t_interval_of_the_per_seed_differences():
    # seeds vary a lot (seed 3 is hard at every lr) but the difference is steady: pairing sees it
    losses = {0.1: [2.00, 2.10, 2.60], 0.03: [2.05, 2.17, 2.64], 0.01: [2.30, 2.35, 2.95]}
    candidates = prove_candidates({"best_lre": -1.0, "steepest_lre": math.log10(0.03), "valley_lre": -2.0})
    got = prove_table(finals(losses), candidates)
    d = np.array([0.05, 0.07, 0.04])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    d2 = np.array([0.30, 0.25, 0.35])
    half2 = stats.t.ppf(0.975, 2) * d2.std(ddof=1) / math.sqrt(3)
    expected = pd.DataFrame({
        "name": ["min_loss", "steepest", "fastai_minimum"],
        "suggested_by": ["min_loss", "steepest", "fastai_minimum, valley"],
        "lr": [0.1, 0.03, 0.01], "lre": [-1.0, math.log10(0.03), -2.0],
        "losses": [[2.00, 2.10, 2.60], [2.05, 2.17, 2.64], [2.30, 2.35, 2.95]],
        "seeds": [[1, 2, 3]] * 3,
        "mean": [np.mean(v) for v in losses.values()],
        "diff_to_best": [0.0, d.mean(), d2.mean()],
        "diff_ci": [[0.0, 0.0], [d.mean() - half, d.mean() + half], [d2.mean() - half2, d2.mean() + half2]],
    })
    assert_frame_equal(got, expected, check_exact=False, rtol=1e-9)
    decision = prove_decision(got)
    assert (decision.winner, decision.runner_up, decision.distinguishable) == ("min_loss", "steepest", True)
    # unpaired, the same numbers could not tell them apart: the seeds' spread (0.3) dwarfs 0.05
    unpaired = finals(losses).assign(seed=np.nan)
    assert prove_decision(prove_table(unpaired, candidates)).distinguishable is False


def test_not_distinguishable_ties_and_divergence():
    candidates = prove_candidates({"best_lre": -1.0, "steepest_lre": -2.0, "valley_lre": -0.5})
    # steepest wins on the mean, but the per-seed differences change sign
    noisy = prove_table(finals({0.1: [2.0, 2.3, 2.1], 0.01: [2.1, 2.0, 2.2], 10 ** -0.5: [math.inf] * 3}), candidates)
    assert noisy["name"].tolist() == ["fastai_minimum", "min_loss", "valley"]  # min_loss/10 = 0.01 = steepest
    d = prove_decision(noisy)
    assert d.winner == "fastai_minimum" and d.distinguishable is False and "NOT distinguishable" in d.verdict()
    assert noisy["suggested_by"].tolist()[0] == "fastai_minimum, steepest"
    assert math.isinf(noisy["mean"].iloc[2]) and math.isinf(noisy["diff_to_best"].iloc[2])
    # an exact tie goes to the candidate first in SUGGESTERS order: the min-loss pick
    tie = prove_table(finals({0.1: [2.0, 2.1, 2.2], 0.01: [2.0, 2.1, 2.2], 10 ** -0.5: [3.0, 3.0, 3.0]}), candidates)
    assert tie["name"].tolist()[:2] == ["min_loss", "fastai_minimum"]
    assert tie["diff_to_best"].iloc[1] == 0.0 and prove_decision(tie).distinguishable is False
    # one seed: a winner, no interval
    one = prove_table(finals({0.1: [2.0], 0.01: [2.5], 10 ** -0.5: [2.4]}, seeds=(7,)), candidates)
    assert prove_decision(one).distinguishable is None and math.isnan(one["diff_ci"].iloc[1][0])
    with pytest.raises(LrscanError, match="finite"):
        prove_decision(prove_table(finals({0.1: [math.inf]}, seeds=(1,)), candidates))


def test_final_losses_use_the_held_out_loss_else_the_last_tenth_of_training():
    steps = pd.DataFrame({"run_id": ["a"] * 20 + ["b"] * 20, "step": list(range(20)) * 2,
                          "lr": [0.1] * 20 + [0.01] * 20, "loss": np.r_[np.full(18, 5.0), [1.0, 2.0], np.arange(20.0)],
                          "seed": [1] * 40})
    runs = pd.DataFrame({"run_id": ["a", "b"], "seed": [1, 1], "val_loss": [np.nan, 1.25]})
    got = final_losses(steps, runs)
    expected = pd.DataFrame({"run_id": ["a", "b"], "lr": [0.1, 0.01], "seed": [1.0, 1.0], "loss": [1.5, 1.25],
                             "judged_by": [TRAIN_TAIL, "val_loss"]})
    assert_frame_equal(got, expected)


def test_constant_lr_grids_are_groups_of_constant_runs_that_differ_in_lr():
    runs = pd.DataFrame({"run_id": list("abcdef"), "group": ["g1", "g1", "g1", "g2", "g2", "g3"],
                         "schedule": ["constant", "constant", "range", "constant", "constant", "constant"],
                         "lr": [0.1, 0.01, np.nan, 0.1, 0.1, 0.3]})
    assert constant_lr_grids(runs) == {"g1": ["a", "b"]}


GRID_SCRIPT = '''
import math, random, sys
import wandb
# a user's own lr grid, as Lightning users log it: train_loss every step, val_loss at the end; no lrscan
for lr in (0.003, 0.01, 0.03, 0.1, 0.3):
    for seed in (1, 2):
        random.seed(seed)
        run = wandb.init(project="mine", group="my-lr-grid", config={"lr": lr, "seed": seed}, reinit="create_new",
                         settings=wandb.Settings(console="off"))
        hard = 0.2 * seed   # seed 2 is harder at every lr: paired seeds see through it
        for step in range(60):
            run.log({"lr": lr, "train_loss": 2 + hard + (math.log10(lr) + 1.5) ** 2 + random.gauss(0, 0.01)})
        run.log({"val_loss": 2.1 + hard + (math.log10(lr) + 1.5) ** 2})
        run.finish()
'''


@pytest.fixture(scope="module")
def user_grid(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(root), "PATH": "/usr/bin:/bin",
           "HOME": str(root)}
    done = subprocess.run([sys.executable, "-c", GRID_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "wandb"


@pytest.mark.slow
def test_python_m_analysis_proves_a_users_constant_lr_grid(user_grid, tmp_path, capsys):
    loaded = load_runs(str(user_grid))
    assert constant_lr_grids(loaded.runs) == {"my-lr-grid": sorted(loaded.runs["run_id"].astype(str))}
    out = tmp_path / "report"
    assert analysis_main([str(user_grid), "--out", str(out), "--block-steps", "20"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    (grid,) = summary["prove"]
    assert grid["group"] == "my-lr-grid" and grid["judged_by"] == ["val_loss"] and grid["steps"] == 60
    table = pd.DataFrame(grid["table"])
    assert table["lr"].tolist()[:3] == pytest.approx([0.03, 0.01, 0.1])  # 0.03 is nearest 10**-1.5
    assert table["seeds"].tolist() == [[1, 2]] * 5
    assert table["losses"].iloc[0] == pytest.approx([2.1 + 0.2 + (math.log10(0.03) + 1.5) ** 2,
                                                     2.1 + 0.4 + (math.log10(0.03) + 1.5) ** 2])
    # the seeds' 0.2 offset cancels in the pairs: 0.01 vs 0.03 is told apart on two seeds
    assert grid["winner"] == "lr=0.03" and grid["runner_up"] == "lr=0.01" and grid["distinguishable"] is True
    assert (out / "prove_loss_vs_lr.png").stat().st_size > 10_000 and (out / "prove_table.csv").is_file()
    report = (out / "report.md").read_text()
    assert "## Prove: my-lr-grid" in report and "Judged by: val_loss" in report and "![prove](prove_loss_vs_lr.png)" \
        in report
