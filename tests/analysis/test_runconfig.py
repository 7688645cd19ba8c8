"""analysis.runconfig: the runs' config joined onto per-row frames (steps, block means)."""

from __future__ import annotations

import pandas as pd
from pandas.testing import assert_frame_equal

from lrscan.analysis.runconfig import with_config


def _cat(values, categories, dtype=None) -> pd.Categorical:
    return pd.Categorical(values, dtype=pd.CategoricalDtype(pd.Index(categories, dtype=dtype)))


RUNS = pd.DataFrame({
    "run_id": ["a", "b"], "state": ["finished", "finished"],
    "n_hidden": pd.array([300, 300], dtype="Int64"), "seed": pd.array([1, 2], dtype="Int64"),
    "lre_min": [-3.0, -2.0], "schedule": ["range", "range"], "lr": [0.1, 0.1],
    "decay_steps": ["[100000]", None], "stop_on_climb": [True, False],
})


def test_config_fields_join_back_in_field_order_one_byte_a_row() -> None:
    steps = pd.DataFrame({
        "run_id": _cat(["b", "a", "a"], ["a", "b"]),
        "run_name": _cat(["B", "A", "A"], ["A", "B"]),
        "seed": _cat([2, 1, 1], [1, 2], "int64"),
        "step": [0, 0, 1], "lr": [0.5, 0.25, 0.125],
    })
    wide = with_config(steps, RUNS)
    expected = pd.DataFrame({
        "run_id": steps["run_id"], "run_name": steps["run_name"],
        "n_hidden": _cat([300, 300, 300], [300], "int64"),
        "seed": steps["seed"],  # kept as the frame has it
        "schedule": _cat(3 * ["range"], ["range"]),
        "lre_min": _cat([-2.0, -3.0, -3.0], [-3.0, -2.0], "float64"),
        "decay_steps": _cat([None, "[100000]", "[100000]"], ["[100000]"]),
        "stop_on_climb": _cat([False, True, True], [False, True], "bool"),
        "step": [0, 0, 1], "lr": [0.5, 0.25, 0.125],  # the logged lr, never the config's
    })
    assert_frame_equal(wide, expected)
    assert all(wide[c].cat.codes.dtype.itemsize == 1 for c in ("n_hidden", "schedule", "lre_min"))


def test_only_the_fields_asked_for_and_after_the_ids_when_the_frame_has_none() -> None:
    blocks = pd.DataFrame({"run_id": ["a", "b", "c"], "block": [0, 0, 0], "log10_loss": [0.3, 0.4, 0.5]})
    out = with_config(blocks, RUNS, fields=("lre_min", "seed"))
    expected = pd.DataFrame({
        "run_id": ["a", "b", "c"],
        "seed": _cat([1, 2, None], [1, 2], "int64"),  # run c is not in `runs`: missing
        "lre_min": _cat([-3.0, -2.0, None], [-3.0, -2.0], "float64"),
        "block": [0, 0, 0], "log10_loss": [0.3, 0.4, 0.5],
    })
    assert_frame_equal(out, expected)
    assert with_config(blocks, None) is blocks
