"""The prove flags and helpers the study's search shares: --prove-* checked, run names said once, the horizon."""

from __future__ import annotations

import pytest
import yaml

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.prove_stage import check_prove_flags, decay_grid_steps, default_prove_steps, run_name
from tests.conftest import REPO


def test_flags_are_checked_in_one_line_and_seeds_can_be_given_themselves():
    assert check_prove_flags(None, "3", "") == (None, (1, 2, 3), ())
    assert check_prove_flags(500, "4,7", "0.003, 0.01") == (500, (4, 7), (0.003, 0.01))
    assert check_prove_flags(10, 2, [0.1]) == (10, (1, 2), (0.1,))
    assert check_prove_flags(None, "[7]", "")[1] == (7,) and check_prove_flags(None, "7,", "")[1] == (7,)
    for bad in [(0, "3", ""), (10, "0", ""), (10, "1,1", ""), (10, "x", ""), (10, "3", "0.1,-2"), (10, "3", "a")]:
        with pytest.raises(LrscanError, match="--prove-"):
            check_prove_flags(*bad)


def test_the_default_budget_is_a_third_of_the_decay_grid():
    assert default_prove_steps(12000) == 4000 and default_prove_steps(200000) == 66667 and default_prove_steps(1) == 1
    base = yaml.safe_load((REPO / "sweeps" / "decay_grid.yaml").read_text())
    assert decay_grid_steps(base, {}) == 200000
    assert decay_grid_steps(base, {"steps": {"value": 12000}}) == 12000


@pytest.mark.parametrize("name, lr, expected", [("min_loss", 0.155, "prove-min_loss-lr0.155"),
                                                ("lr=0.001", 0.001, "prove-lr0.001"),
                                                ("user_0.003", 0.003, "prove-user-lr0.003")])
def test_a_run_name_says_the_lr_once(name, lr, expected):
    assert run_name(name, lr) == expected
