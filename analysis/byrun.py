"""The rows of each run of a tidy frame, so per-row work goes one run at a time in bounded memory.

At 50 runs x 200k steps a whole-frame temporary (an int64 code per row, a float64 copy of the loss,
a mask and its fancy-indexed copies) is 80 MB each, and a pick or block means made of a dozen of
them costs more than the frame. Done per run they are 1.6 MB each. `load_runs` keeps a run's rows
together, so a run's rows are a slice (no copy); any other frame works too, through one sort.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RunRows:
    """Run ids (sorted, as strings) and, per run, its rows: a slice of the frame or their positions."""

    run_ids: pd.Index
    rows: tuple[slice | np.ndarray, ...]

    def __iter__(self) -> Iterator[tuple[str, slice | np.ndarray]]:
        return iter(zip(self.run_ids, self.rows))

    def __len__(self) -> int:
        return len(self.run_ids)


def run_rows(run_id: pd.Series) -> RunRows:
    """The rows of each run in `run_id` (a column of one id per row), runs in sorted order of their ids.

    Rows without a run id belong to no run. A categorical column's codes are read as they are
    (one byte a row); other columns are factorised once.
    """
    values = run_id.array
    if isinstance(values, pd.Categorical):
        codes, names = values.codes, np.asarray(values.categories).astype(str)
    else:
        codes, uniques = pd.factorize(values, sort=False)
        names = np.asarray(uniques).astype(str)
    n_codes = len(names)
    counts = np.bincount(codes[codes >= 0], minlength=n_codes) if len(codes) else np.zeros(n_codes, np.int64)
    by_name = np.argsort(names, kind="stable")
    by_name = by_name[counts[by_name] > 0]  # categories no row has are no run
    if _together(codes, counts):
        starts = _starts(codes, n_codes)
        rows: list[slice | np.ndarray] = [slice(int(starts[c]), int(starts[c] + counts[c])) for c in by_name]
    else:
        order = np.argsort(codes, kind="stable")  # each run's rows, in frame order
        begin = np.concatenate([[0], np.cumsum(np.bincount(codes[codes >= 0], minlength=n_codes))])
        skip = int((codes < 0).sum())  # rows without an id sort first
        rows = [order[skip + begin[c] : skip + begin[c + 1]] for c in by_name]
    return RunRows(pd.Index(names[by_name], name="run_id"), tuple(rows))


def _together(codes: np.ndarray, counts: np.ndarray) -> bool:
    """Whether every run's rows are one block (the frame is grouped by run), with no row lacking an id."""
    if not len(codes) or (codes < 0).any():
        return not len(codes)
    changes = int(np.count_nonzero(codes[1:] != codes[:-1]))
    return changes == int(np.count_nonzero(counts)) - 1


def _starts(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Where each code's block begins, in a frame grouped by run."""
    starts = np.zeros(n_codes, np.int64)
    if len(codes):
        at = np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1])
        starts[codes[at]] = at
    return starts
