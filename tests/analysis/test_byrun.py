"""analysis.byrun: each run's rows of a tidy frame, slices where the frame keeps a run together."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrscan.analysis.byrun import run_rows


def _positions(rows) -> list[int]:
    return list(range(rows.start, rows.stop)) if isinstance(rows, slice) else rows.tolist()


def test_runs_kept_together_are_slices_in_id_order() -> None:
    ids = pd.Series(pd.Categorical(["b", "b", "a", "a", "a"], categories=["a", "b", "c"]))  # c: no row, no run
    by_run = run_rows(ids)
    assert list(by_run.run_ids) == ["a", "b"] and by_run.run_ids.name == "run_id"
    assert by_run.rows == (slice(2, 5), slice(0, 2))  # no copy of anything per row


def test_interleaved_runs_and_rows_without_an_id() -> None:
    ids = pd.Series(["r2", "r1", None, "r2", "r1", "r1"], dtype="string")
    by_run = run_rows(ids)
    assert list(by_run.run_ids) == ["r1", "r2"]
    assert [_positions(rows) for _, rows in by_run] == [[1, 4, 5], [0, 3]]  # frame order within a run
    categorical = run_rows(ids.astype("category"))
    assert list(categorical.run_ids) == ["r1", "r2"]
    assert [_positions(rows) for _, rows in categorical] == [[1, 4, 5], [0, 3]]


def test_no_rows() -> None:
    by_run = run_rows(pd.Series(pd.Categorical([], categories=["a"])))
    assert len(by_run) == 0 and by_run.rows == ()
    assert np.asarray(by_run.run_ids).tolist() == []
