"""Numbers users pass: Python and numpy scalars and arrays accepted alike, a bad one refused naming the function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.inputs import learning_rates, real_number, whole_number, whole_numbers


@pytest.mark.parametrize("seeds", [[1, 2, 3], (1, 2, 3), range(1, 4), np.arange(1, 4), np.array([1, 2, 3], np.int32),
                                   [np.int64(1), np.int8(2), 3], np.array([1.0, 2.0, 3.0]), torch.tensor([1, 2, 3])])
def test_seeds_of_every_kind_are_plain_ints(seeds):
    out = whole_numbers(seeds, "seeds", where="find")
    assert out == [1, 2, 3] and all(type(s) is int for s in out)


@pytest.mark.parametrize("value", [500, np.int64(500), np.int32(500), np.float64(500.0), 5e2, np.array(500),
                                   torch.tensor(500)])
def test_a_whole_number_of_every_kind(value):
    assert whole_number(value, "steps", where="range_test") == 500


@pytest.mark.parametrize("lrs", [[1e-3, 1e-2], np.array([1e-3, 1e-2]), np.geomspace(1e-3, 1e-2, 2),
                                 [np.float32(1e-3), np.float64(1e-2)], np.array([1e-3, 1e-2], np.float32)])
def test_learning_rates_of_every_kind(lrs):
    out = learning_rates(lrs, "lrs", where="prove")
    assert np.allclose(out, [1e-3, 1e-2]) and all(type(v) is float for v in out)


@pytest.mark.parametrize(("call", "fragment"), [
    (lambda: whole_numbers([1, 1.5], "seeds", where="find"), "find: seeds=[1, 1.5]: 1.5 is not a whole number"),
    (lambda: whole_numbers(np.array([[1, 2]]), "seeds", where="find"), "find: seeds is a 2-d array"),
    (lambda: whole_numbers([], "seeds", where="range_test"), "range_test: seeds is empty"),
    (lambda: whole_numbers("123", "seeds", where="find"), "find: seeds='123': expected a list"),
    (lambda: whole_numbers([True, 2], "seeds", where="find"), "True is not a whole number"),
    (lambda: whole_number(np.float64(2.5), "steps", where="range_test"), "range_test: steps=2.5"),
    (lambda: whole_number(0, "horizon", where="find", minimum=1), "find: horizon=0: expected a whole number >= 1"),
    (lambda: learning_rates(np.array([1e-3, -1.0]), "lrs", where="prove"), "prove: lrs=ndarray([0.001, -1.0]): -1.0"),
    (lambda: learning_rates([np.nan], "lrs", where="find"), "nan is not a learning rate"),
    (lambda: real_number(np.float32("inf"), "lre_min", where="range_test"), "range_test: lre_min=inf"),
    (lambda: real_number(-1, "start_lr", where="range_test", positive=True), "expected a finite number > 0"),
])
def test_a_bad_number_is_one_line_naming_the_function_called(call, fragment):
    with pytest.raises(LrscanError) as e:
        call()
    assert fragment in str(e.value) and "\n" not in str(e.value)
