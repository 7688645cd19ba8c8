"""Single numbers users pass: Python and numpy scalars accepted alike, a bad one refused naming the function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.inputs import real_number, whole_number


@pytest.mark.parametrize("value", [500, np.int64(500), np.int32(500), np.float64(500.0), 5e2, np.array(500),
                                   torch.tensor(500)])
def test_a_whole_number_of_every_kind(value):
    assert whole_number(value, "steps", where="range_test") == 500


@pytest.mark.parametrize(("call", "fragment"), [
    (lambda: whole_number(np.float64(2.5), "steps", where="range_test"), "range_test: steps=2.5"),
    (lambda: whole_number(0, "horizon", where="find", minimum=1), "find: horizon=0: expected a whole number >= 1"),
    (lambda: whole_number(True, "steps", where="range_test"), "range_test: steps=True: expected a whole number"),
    (lambda: real_number(np.float32("inf"), "lre_min", where="range_test"), "range_test: lre_min=inf"),
    (lambda: real_number(-1, "start_lr", where="range_test", positive=True), "expected a finite number > 0"),
])
def test_a_bad_number_is_one_line_naming_the_function_called(call, fragment):
    with pytest.raises(LrscanError) as e:
        call()
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value", [-4, -4.0, np.float32(-4.0), np.int64(-4), np.array(-4.0), torch.tensor(-4.0)])
def test_a_real_number_of_every_kind(value):
    assert real_number(value, "lre_min", where="range_test") == -4.0
