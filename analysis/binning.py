"""The range runs' measured rows, binned by lre one run at a time: per (run, bin) means and counts, skip windows.

What `analysis.pick.pick_exponent` reads its curve from. Per run, not as whole-frame arrays: at 50
runs x 200k steps each whole-frame temporary is 80 MB (analysis.byrun), a run's is 1.6 MB; and
bincount over a run's bins costs milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrscan.analysis.blocks import SEED
from lrscan.analysis.byrun import run_rows
from lrscan.analysis.runconfig import with_config
from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError

DEFAULT_N_BINS = 50
MAX_BINS = 100_000  # more bins than that is a typo in --bin-width, and would exhaust memory


@dataclass
class Rows:
    """The range runs' measured rows: which rows of `steps` each run measured, and the span of their lre.

    Per run, not as whole-frame arrays: at 50 runs x 200k steps each whole-frame temporary is 80 MB
    (analysis.byrun), a run's is 1.6 MB; and bincount over a run's bins costs milliseconds.
    """

    run_ids: pd.Index        # code -> run id (the runs with a measured row, sorted)
    rows: list               # per run: its rows of `steps` (a slice or positions)
    keep: list               # per run: which of those rows are measured (None: all)
    lre_span: tuple[float, float]  # lowest and highest measured lre
    per_run: pd.DataFrame    # one row per code: seed, lre_min, lre_max where the frames have them


def run_values(steps: pd.DataFrame, rows, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A run's step (int64), lre and value (float64) over its `rows`."""
    return (steps[keys.STEP_COLUMN].to_numpy()[rows].astype(np.int64, copy=False),
            steps[keys.LRE].to_numpy()[rows].astype("float64", copy=False),
            steps[column].to_numpy()[rows].astype("float64"))


def measured_rows(steps: pd.DataFrame, runs: pd.DataFrame | None, column: str) -> Rows:
    """Rows whose loss counts: finite, and before the run's first non-finite loss or divergence."""
    by_run = run_rows(steps["run_id"])
    diverged = np.full(len(by_run), np.nan)
    if runs is not None and keys.DIVERGED_AT_STEP in runs.columns:
        diverged = (runs.assign(run_id=runs["run_id"].astype(str)).drop_duplicates("run_id").set_index("run_id")
                    [keys.DIVERGED_AT_STEP].astype("float64").reindex(by_run.run_ids).to_numpy())
    kept_ids, kept_rows, keeps, firsts = [], [], [], []
    low, high = math.inf, -math.inf
    for (run_id, rows), cut_at in zip(by_run, diverged):
        step, lre, value = run_values(steps, rows, column)
        # a NaN loss (logged as NaN) is a step not measured, as a step not logged; an infinite one is a
        # divergence: the run counts up to (not including) it, what follows is after divergence
        bad = np.isinf(value)
        cut = int(step[bad].min()) if bad.any() else np.iinfo(np.int64).max
        if math.isfinite(cut_at):
            cut = min(cut, int(cut_at))
        keep = np.isfinite(value) & np.isfinite(lre) & (step < cut)
        if not keep.any():
            continue
        low, high = min(low, float(lre[keep].min())), max(high, float(lre[keep].max()))
        kept_ids.append(run_id)
        kept_rows.append(rows)
        keeps.append(None if keep.all() else keep)
        firsts.append(rows.start if isinstance(rows, slice) else int(rows[0]))
    if not kept_ids:
        raise LrscanError(f"the range runs have no finite '{column}' before they diverged")
    run_ids = pd.Index(kept_ids, name="run_id")
    columns = [c for c in (SEED, "lre_min", "lre_max") if c in steps.columns]
    first_rows = steps.iloc[firsts][["run_id", *columns]]
    # the range's ends are constant across runs more often than not: then `runs` has them, `steps` not
    first_rows = with_config(first_rows, runs, fields=(SEED, "lre_min", "lre_max"))
    columns = [c for c in (SEED, "lre_min", "lre_max") if c in first_rows.columns]
    per_run = first_rows[columns].set_axis(run_ids, axis=0)
    return Rows(run_ids=run_ids, rows=kept_rows, keep=keeps, lre_span=(low, high), per_run=per_run)


@dataclass
class Cells:
    """Per run (rows) and lre bin (columns): mean and count of the measured steps, all and inside the window."""

    all_mean: np.ndarray
    all_count: np.ndarray
    window_mean: np.ndarray
    window_count: np.ndarray
    n_steps: np.ndarray      # per run: measured steps
    last_step: np.ndarray    # per run: its last measured step (the highest), its lre and bin
    last_lre: np.ndarray
    last_bin: np.ndarray


def bin_cells(steps: pd.DataFrame, rows: Rows, column: str, edges: np.ndarray, skip_start_frac: float,
           skip_end_frac: float) -> Cells:
    """Bin each run's measured steps by lre and average them per bin, one run at a time."""
    n_runs, n_bins = len(rows.run_ids), len(edges) - 1
    shape = (n_runs, n_bins)
    all_total, all_count = np.zeros(shape), np.zeros(shape, np.int64)
    window_total, window_count = np.zeros(shape), np.zeros(shape, np.int64)
    n_steps, last_step, last_bin = (np.zeros(n_runs, np.int64) for _ in range(3))
    last_lre = np.zeros(n_runs)
    for r, (run_rows_, keep) in enumerate(zip(rows.rows, rows.keep)):
        step, lre, value = run_values(steps, run_rows_, column)
        if keep is not None:
            step, lre, value = step[keep], lre[keep], value[keep]
        bin_ = np.clip(np.searchsorted(edges, lre, side="right") - 1, 0, n_bins - 1)
        inside, last = skip_window(step, skip_start_frac, skip_end_frac)
        # bincount sums in row order, as one bincount over the whole frame did: the same float sums
        all_total[r] = np.bincount(bin_, weights=value, minlength=n_bins)
        all_count[r] = np.bincount(bin_, minlength=n_bins)
        window_total[r] = np.bincount(bin_[inside], weights=value[inside], minlength=n_bins)
        window_count[r] = np.bincount(bin_[inside], minlength=n_bins)
        n_steps[r], last_step[r], last_lre[r], last_bin[r] = len(step), step[last], lre[last], bin_[last]
    with np.errstate(invalid="ignore", divide="ignore"):
        all_mean = np.where(all_count > 0, all_total / np.maximum(all_count, 1), np.nan)
        window_mean = np.where(window_count > 0, window_total / np.maximum(window_count, 1), np.nan)
    return Cells(all_mean, all_count, window_mean, window_count, n_steps, last_step, last_lre, last_bin)


def bin_edges(lre_span: tuple[float, float], bin_width: float | None, n_bins: int | None) -> np.ndarray:
    low, high = lre_span
    if bin_width is not None:
        # edges on multiples of the width, so two analyses (or a coarse and a zoom run) line up
        first = math.floor(low / bin_width + 1e-9) * bin_width
        count = max(1, math.floor((high - first) / bin_width + 1e-9) + 1)
        if count > MAX_BINS:
            raise LrscanError(f"bin width {bin_width:g} makes {count} lre bins over [{low:g}, {high:g}]; "
                              f"at most {MAX_BINS} (a bin holds a few steps at best beyond that)")
        return first + bin_width * np.arange(count + 1)
    if high <= low:
        raise LrscanError(f"every measured step has lre={low}: a range test needs lre_min < lre_max")
    if int(n_bins or DEFAULT_N_BINS) > MAX_BINS:
        raise LrscanError(f"{n_bins} lre bins: at most {MAX_BINS}")
    return np.linspace(low, high, int(n_bins or DEFAULT_N_BINS) + 1)


def skip_window(step: np.ndarray, skip_start_frac: float, skip_end_frac: float) -> tuple[np.ndarray, int]:
    """Which of a run's measured rows are inside its skip window, and which row is its last.

    The window is per run, by position among the run's measured steps (as fastai's
    ``recorder.losses[num_it//10:-5]``): each run's start is training from init, whatever its
    range, and its end is where it stopped. Windowing the combined curve instead would let a
    narrow run's from-init start sit in the middle of a wide run's range.
    """
    count = len(step)
    if count < 2 or np.all(step[1:] >= step[:-1]):
        rank = np.arange(count)  # in step order already (as load_runs gives them)
        last = count - 1
    else:
        order = np.argsort(step, kind="stable")
        rank = np.empty(count, dtype=np.int64)
        rank[order] = np.arange(count)
        last = int(order[-1])
    inside = (rank >= math.floor(count * skip_start_frac)) & (rank < count - math.floor(count * skip_end_frac))
    return inside, last
