"""analysis.schedules: an lr trace read as a range test, a step decay, a constant lr, or something else."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.schedules import CONSTANT, OTHER, RANGE, STEP, ScheduleGuess, classify_lr_trace

STEPS = np.arange(1000)


def test_a_geometric_rise_is_a_range_test() -> None:
    lr = 10.0 ** np.linspace(-5, 0, 1000)
    guess = classify_lr_trace(STEPS, lr)
    assert guess == ScheduleGuess(RANGE, "lr rises geometrically from 1e-05 to 1 over steps 0-999",
                                  {"lre_min": pytest.approx(-5.0), "lre_max": pytest.approx(0.0)})


def test_a_range_test_logged_every_10_steps_and_a_linear_one_are_range_tests() -> None:
    sparse = classify_lr_trace(STEPS[::10], 10.0 ** np.linspace(-4, 0, 1000)[::10])
    assert sparse.kind == RANGE and "geometrically" in sparse.reason
    linear = classify_lr_trace(STEPS, np.linspace(1e-4, 1.0, 1000))  # torch-lr-finder's step_mode="linear"
    assert linear.kind == RANGE and "(not geometrically)" in linear.reason


def test_piecewise_constant_is_a_step_decay_with_its_boundaries_and_lrs() -> None:
    lr = np.where(STEPS < 600, 0.1, np.where(STEPS < 800, 0.01, 0.001))
    assert classify_lr_trace(STEPS, lr) == ScheduleGuess(
        STEP, "lr piecewise constant: 0.1, then 0.01 from step 600, 0.001 from step 800",
        {"lr": 0.1, "decay_steps": [600, 800], "decay_lrs": [0.01, 0.001]})
    # logged every 10 steps from step 5: the change is seen at the first logged step at the new lr
    sparse = classify_lr_trace(STEPS[5::10], lr[5::10])
    assert sparse.kind == STEP and sparse.config["decay_steps"] == [605, 805]


def test_a_constant_lr_and_steps_in_any_order() -> None:
    assert classify_lr_trace(STEPS, np.full(1000, 0.05)) == ScheduleGuess(CONSTANT, "lr constant at 0.05", {"lr": 0.05})
    shuffled = np.random.default_rng(0).permutation(1000)
    assert classify_lr_trace(shuffled, (10.0 ** np.linspace(-3, 0, 1000))[shuffled]).kind == RANGE


@pytest.mark.parametrize("name, lr", [
    ("warm-up then cosine", np.where(STEPS < 100, STEPS / 100 * 0.1, 0.05 * (1 + np.cos(np.pi * (STEPS - 100) / 900)))),
    ("one-cycle", np.interp(STEPS, [0, 300, 1000], [0.004, 0.1, 1e-5])),
    ("exponential decay", 0.1 * 0.995**STEPS),
    ("warm-up then constant", np.minimum(STEPS / 500, 1.0) * 0.1),
])
def test_anything_else_is_other_with_a_reason(name: str, lr: np.ndarray) -> None:
    guess = classify_lr_trace(STEPS, lr)
    assert guess.kind == OTHER and guess.config == {}, name
    assert "neither a range test nor piecewise constant" in guess.reason


def test_no_lr_logged() -> None:
    unknown = ScheduleGuess(OTHER, "no lr logged: its schedule is unknown")
    assert classify_lr_trace(STEPS, np.full(1000, np.nan)) == unknown
