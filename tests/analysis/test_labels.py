"""How a config value reads to a person: one-element lists lose their brackets, floats keep 4 significant digits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrscan.analysis.labels import value_label


@pytest.mark.parametrize("value, label", [
    ([3000], "3000"), ("[3000]", "3000"), ([100000, 150000], "[100000, 150000]"), ((0.01,), "0.01"),
    (0.0064371, "0.006437"), (np.float64(0.5), "0.5"), (np.int64(7), "7"), (None, ""), (math.nan, ""),
    (pd.NA, ""), ("kaiming", "kaiming"), ("{'a': 1}", "{'a': 1}"), ("[1, 'x'", "[1, 'x'"),
])
def test_value_label(value, label):
    assert value_label(value) == label


def test_the_report_and_the_figures_share_one_label():
    from lrscan.analysis import plots, report

    assert report.value_label is value_label and plots.readable is value_label
