"""What range_test and prove share: seeds and lrs checked in one line naming the caller, labels, devices."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.own_task import check_lrs, check_seeds, device_of, restored_globals, task_label


def test_seeds_are_checked_in_the_callers_name():
    assert check_seeds(None, np.array([3, 1]), {}, where="prove") == [3, 1]
    assert check_seeds(None, None, {}, where="prove") is None
    for bad, message in [([1, 1], r"prove: seeds=\[1, 1\]: seed\(s\) \[1\] repeated"), ("123", "prove: seeds='123'"),
                         ([], "non-empty"), ([1.5], "list of ints")]:
        with pytest.raises(LrscanError, match=message):
            check_seeds(None, bad, {}, where="prove")
    with pytest.raises(LrscanError, match="range_test: seed=3 and seeds="):
        check_seeds(None, [1], {"seed": 3}, where="range_test")


def test_lrs_are_kept_exactly_as_given_numpy_too():
    assert check_lrs(np.array([1e-3, 3e-3]), where="prove") == [1e-3, 3e-3]
    assert check_lrs([np.float32(0.5), np.float64(0.25), 1], where="prove") == [0.5, 0.25, 1.0]
    for bad in ([], "0.1", [0.0], [float("nan")], [True], [-1e-3]):
        with pytest.raises(LrscanError, match="prove: lrs="):
            check_lrs(bad, where="prove")


def test_labels_devices_and_the_globals_left_as_they_were():
    def make(seed):
        return None

    assert task_label("net.py:make") == "net.py:make" and task_label(make).endswith("make")
    model = torch.nn.Linear(2, 2)
    assert device_of(model, "auto", where="prove") == "cpu"
    with pytest.raises(LrscanError, match="prove: device='cuda'"):
        device_of(model, "cuda", where="prove")
    state, threads = random.getstate(), torch.get_num_threads()
    with restored_globals():
        random.random()
        torch.set_num_threads(1)
    assert random.getstate() == state and torch.get_num_threads() == threads
