"""The study's one way into the judge: candidates (a user's lr exactly as asked), the table, a run's loss."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrscan.pipeline.study.judging import candidates_of, judge, judged_loss

PICK = {"best_lre": -1.0, "best_lre_ci": [-1.3, -0.7], "steepest_lre": -2.0, "valley_lre": -1.5}


def test_a_users_lr_near_a_suggester_is_trained_as_asked_and_names_both():
    candidates = candidates_of(PICK, [0.105, 0.003])
    lrs = candidates["lr"].tolist()
    assert 0.105 in lrs and 0.1 not in lrs and 0.003 in lrs  # never replaced by the pick's 0.1
    row = candidates.loc[candidates["lr"] == 0.105].iloc[0]
    assert row["name"] == "user_0.105" and "min_loss" in row["suggested_by"] and row["suggested_by"].startswith("user")
    assert candidates["lre"].is_monotonic_increasing


def test_judge_ranks_on_paired_seeds_and_a_run_is_judged_on_its_held_out_loss():
    runs = pd.DataFrame({"lr": [0.1, 0.1, 0.01, 0.01], "seed": [1.0, 2.0, 1.0, 2.0], "loss": [2.0, 2.1, 2.2, 2.3]})
    table, decision = judge(runs, candidates_of(PICK)[lambda c: c["lr"].isin([0.1])].pipe(
        lambda c: pd.concat([c, pd.DataFrame([{"name": "x", "suggested_by": "grid", "lr": 0.01, "lre": -2.0}])])))
    assert decision.lr == 0.1 and table["diff_to_best"].iloc[1] == pytest.approx(0.2)
    assert judged_loss({"dev_loss": 2.5}, np.zeros(0), "dev_loss") == {"loss": 2.5, "judged_by": "dev_loss"}
    assert judged_loss({"dev_loss": float("nan")}, np.ones(3), "dev_loss")["loss"] == math.inf
    assert judged_loss({"dev_loss": 2.0, "diverged_at_step": 5}, np.ones(3), "dev_loss")["loss"] == math.inf
    assert judged_loss({}, np.arange(20.0), "dev_loss") == {"loss": 18.5, "judged_by": "train_loss_last_10pct"}
