"""The study's one way into the judge: candidates (a user's lr exactly as asked), and analysis.judge's verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrscan.pipeline.study.judging import candidates_of, check_lrs, final_losses, judge, judge_run

PICK = {"best_lre": -1.0, "best_lre_ci": [-1.3, -0.7], "steepest_lre": -2.0, "valley_lre": -1.5}


def test_a_users_lr_near_a_suggester_is_trained_as_asked_and_names_both():
    candidates = candidates_of(PICK, [0.105, 0.003])
    lrs = candidates["lr"].tolist()
    assert 0.105 in lrs and 0.1 not in lrs and 0.003 in lrs  # never replaced by the pick's 0.1
    row = candidates.loc[candidates["lr"] == 0.105].iloc[0]
    assert row["name"] == "user_0.105" and "min_loss" in row["suggested_by"] and row["suggested_by"].startswith("user")
    assert candidates["lre"].is_monotonic_increasing
    assert check_lrs(np.array([0.1, 0.01]), "prove") == (0.1, 0.01)


def test_the_study_judges_through_analysis_judge_one_criterion_for_every_run():
    steps = pd.concat([pd.DataFrame({"run_id": r, "step": range(20), "lr": lr, "loss": 2.0 + lr})
                       for r, lr in (("a", 0.1), ("b", 0.1), ("c", 0.01), ("d", 0.01))], ignore_index=True)
    runs = pd.DataFrame({"run_id": list("abcd"), "seed": [1.0, 2.0, 1.0, 2.0], "dev_loss": [2.0, 2.1, 2.2, 2.3]})
    candidates = candidates_of(PICK)[lambda c: c["lr"] == 0.1].pipe(
        lambda c: pd.concat([c, pd.DataFrame([{"name": "x", "suggested_by": "grid", "lr": 0.01, "lre": -2.0}])]))
    verdict = judge(final_losses(steps, runs), candidates, steps=20)
    assert verdict.chosen_lr == 0.1 and verdict.table.set_index("name").loc["x", "diff"] == pytest.approx(0.2)
    assert verdict.headline().startswith("Judged by dev_loss, the held-out loss every run logged")
    # a run without its dev_loss: every run is judged by its training tail, never a mix
    assert set(final_losses(steps, runs.assign(dev_loss=[2.0, None, 2.2, 2.3]))["criterion"]) == {
        "train_loss_last_10pct"}
    assert judge_run(np.arange(20.0), 2.5) == {"tail": 18.5, "held_out": 2.5, "diverged": False}
    assert judge_run(np.ones(3), math.nan)["held_out"] is None and judge_run(np.ones(3), math.inf)["diverged"]
