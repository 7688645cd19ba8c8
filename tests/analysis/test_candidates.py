"""analysis.candidates: the suggestions merged into candidates, a user's grid, and the one check of lrs and seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lrscan.analysis.candidates import check_lrs, check_seeds, grid_candidates, prove_candidates
from lrscan.pipeline.errors import LrscanError

PICK = {"best_lre": -1.0, "best_lre_ci": [-1.06, -0.8], "steepest_lre": -1.5, "valley_lre": -1.95}


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
    # numpy arrays and numpy floats are lrs too
    assert_frame_equal(prove_candidates(PICK, extra_lrs=np.array([0.01, 0.5])), expected)


def test_candidates_from_an_exponent_pick_object_and_bad_lrs():
    class Pick:
        best_lre, best_lre_ci, steepest_lre, valley_lre = -1.0, (math.nan, math.nan), -1.5, -2.5

    got = prove_candidates(Pick())
    assert got["name"].tolist() == ["valley", "fastai_minimum", "steepest", "min_loss"]  # no CI: no CI ends
    with pytest.raises(LrscanError, match="not a learning rate"):
        prove_candidates(PICK, extra_lrs=[-0.1])
    with pytest.raises(LrscanError, match="no pick"):
        prove_candidates({"best_lre": None})


def test_one_check_of_lrs_and_seeds_takes_numpy_and_names_the_caller():
    assert check_lrs(np.array([1e-3, 1e-2]), "prove") == (1e-3, 1e-2)
    assert check_lrs(np.float32(0.5), "prove") == (0.5,) and check_lrs([np.float64(0.1), 1], "prove") == (0.1, 1.0)
    for bad, why in ((["0.1"], "not a learning rate"), ([True], "not a learning rate"), ([0.0], "not a learning rate"),
                     ([math.nan], "not a learning rate"), ("0.1", "a list of learning rates"), ([], "at least one")):
        with pytest.raises(LrscanError, match=f"^prove: .*{why}"):
            check_lrs(bad, "prove")
    assert check_seeds(np.arange(1, 4), "prove") == (1, 2, 3) and check_seeds(range(2), "prove") == (0, 1)
    assert check_seeds([np.int64(7), 8.0], "prove") == (7, 8)
    for bad, why in (([1, 1], "none repeated"), ([1.5], "not a whole number"), ([], "at least one"),
                     (3, "a list of whole numbers")):
        with pytest.raises(LrscanError, match=f"^prove: seeds=.*{why}"):
            check_seeds(bad, "prove")


def test_a_users_grid_is_each_distinct_lr_named_by_its_value():
    got = grid_candidates([0.01, 0.001, 0.01])
    assert got["name"].tolist() == ["lr=0.001", "lr=0.01"] and got["suggested_by"].tolist() == ["grid", "grid"]
