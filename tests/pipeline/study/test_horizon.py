"""The horizon and the schedule a proof is for, as the trainer's fields; each bad one is one line."""

from __future__ import annotations

import numpy as np
import pytest

from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.horizon import StepDecay, check_horizon, check_schedule


@pytest.mark.parametrize("given", [None, "constant", "Constant", StepDecay(), [], {"at": [], "factors": []}])
def test_constant_is_the_default_and_has_no_decay(given):
    schedule = check_schedule(given, horizon=100, where="prove")
    assert schedule.constant and schedule.fields(0.3) == {"schedule": "constant"} and schedule.text() == "constant"


@pytest.mark.parametrize("given", [StepDecay(at=(75,), factors=(0.1,)), {"at": [75], "factors": [0.1]}, [(75, 0.1)],
                                   [(0.75, 0.1)], [(np.int64(75), np.float64(0.1))]])
def test_a_step_decay_in_each_spelling_is_the_same_schedule(given):
    schedule = check_schedule(given, horizon=100, where="prove")
    assert schedule == StepDecay(at=(75,), factors=(0.1,))
    fields = schedule.fields(0.3)
    assert fields["schedule"] == "step" and fields["decay_steps"] == (75,)
    assert fields["decay_lrs"] == pytest.approx((0.03,))
    config = TrainConfig(steps=100, lr=0.3, **fields)
    assert config.decay_lrs == pytest.approx((0.03,))
    assert schedule.text() == "lr x 0.1 at step 75" and schedule.to_dict()["kind"] == "step"


def test_two_boundaries_read_in_order():
    schedule = check_schedule([(50, 0.1), (80, 0.01)], horizon=100, where="prove")
    assert schedule.text() == "lr x 0.1 at step 50, x 0.01 at step 80"


@pytest.mark.parametrize("given, message", [
    ("cosine", "expected 'constant'"),
    ({"at": [50]}, "one factor per step"),
    ({"at": [50], "factors": [0.1], "warmup": 3}, "one factor per step"),
    ([(100, 0.1)], "decay step 100 is outside the run"),
    ([(50.5, 0.1)], "decay step 50.5 is not a step"),
    ([(50, 1.5)], r"factor 1.5 is not in \(0, 1\)"),
    ([(50, 0.01), (80, 0.1)], "factors fall"),
    ([(80, 0.1), (50, 0.01)], "steps must increase"),
])
def test_a_bad_schedule_is_one_line_naming_the_caller(given, message):
    with pytest.raises(LrscanError, match=message) as caught:
        check_schedule(given, horizon=100, where="prove")
    assert str(caught.value).startswith("prove: schedule=") and "\n" not in str(caught.value)


@pytest.mark.parametrize("given", [0, -3, 1.5, True, "100"])
def test_a_horizon_is_a_whole_number_of_steps(given):
    with pytest.raises(LrscanError, match=f"prove: horizon={given!r}"):
        check_horizon(given, where="prove")
    assert check_horizon(np.int64(12), where="prove") == 12
