"""Pick the learning-rate exponent from range-test runs: binned curve, suggesters, seed bootstrap CI.

The range runs' steps are binned by lr exponent (``lre``), so runs over different ranges and seeds
share one curve: each run is averaged per bin, runs of one seed are averaged, and the seeds give
the mean and its band. Three suggesters read that curve side by side, inside a skip window:

- min_loss: the bin of lowest mean loss (the seed's "look where the loss is lowest"); the pick. It was
  called ``minimum``, which still reads as an alias; fastai's ``minimum`` is another lr, this one / 10,
  here as ``fastai_minimum`` (one decade below min_loss);
- steepest: the bin where the loss falls fastest per decade, ``d loss / d lre`` (fastai's
  ``steep``, differentiated in log space so small lrs are not favoured, cf. Lightning #21141);
- valley: fastai's longest-decreasing-subsequence rule (``fastai/callback/schedule.py``), whose
  index lands about the middle of the valley, not 2/3 through as its docs say.

A run that stopped early (climb or non-finite loss) has no rows past its stop: those lrs are simply
not measured by it. Infinite losses, and everything a run logged after its first one, are left out;
a loss logged as NaN is a step not measured (as one not logged), the run goes on after it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.binning import Cells, Rows, bin_cells, bin_edges, measured_rows
from lrscan.analysis.blocks import SCHEDULE, SCHEDULE_RANGE, SEED, require_columns
from lrscan.analysis.plain import frame_records, json_safe
from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError

# an old suggester name -> its name now: old readers' keys keep working (lrscan's `minimum` was the min-loss lr
# itself, easy to confuse with fastai's `minimum`, which is that lr / 10)
SUGGESTER_ALIASES = {"minimum": "min_loss"}
FASTAI_MINIMUM_DECADES = 1.0  # fastai's `minimum` suggester: the min-loss lr / 10, one decade below it
# below this many seeds a bootstrap over seeds has too few distinct resamples (3 seeds: 10) for its
# percentiles to measure anything but the spread of the seeds' own picks
MIN_SEEDS_FOR_CI = 5
RUNNING = "running"  # a run's state while it has no exit record (offline) or W&B says so (cloud)


@dataclass
class ExponentPick:
    """The picked exponent, the other suggesters, and the frames behind them.

    ``curve``: one row per lre bin with data: ``lre`` (bin centre), ``lr``, ``loss`` (mean over
    seeds), ``sd``, ``sem``, ``n`` (seeds measuring it), ``n_runs``, ``in_window`` (inside the
    skip window the suggesters read). ``run_curves``: the same per run (``run_id``, ``seed``,
    ``lre``, ``loss``). ``per_run``: each run's own picks and where it stopped.
    """

    best_lre: float
    best_lr: float
    best_lre_ci: tuple[float, float]
    steepest_lre: float
    steepest_lr: float
    steepest_lre_ci: tuple[float, float]
    valley_lre: float
    valley_lr: float
    n_runs: int
    n_seeds: int
    n_steps: int
    column: str
    bin_width: float
    skip_start_frac: float
    skip_end_frac: float
    ci_level: float
    n_boot: int
    curve: pd.DataFrame
    run_curves: pd.DataFrame
    per_run: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    unit: str = "seed"            # what the bootstrap resamples: "seed", or "run" when runs have no seed
    left_out_running: list[str] = field(default_factory=list)  # range runs still running, not picked from

    @property
    def ci_method(self) -> dict[str, Any]:
        """How ``best_lre_ci`` was made: method, level, units resampled, resamples, distinct resamples."""
        if not self.n_boot or self.n_seeds < 2:
            return {"method": "none", "unit": self.unit, "n_units": self.n_seeds, "n_boot": self.n_boot,
                    "reason": "no bootstrap (n_boot=0)" if not self.n_boot else f"only one {self.unit}"}
        return {
            "method": f"percentile bootstrap over {self.unit}s", "level": self.ci_level, "unit": self.unit,
            "n_units": self.n_seeds, "n_boot": self.n_boot, "distinct_resamples": distinct_resamples(self.n_seeds),
            "enough_units": self.n_seeds >= MIN_SEEDS_FOR_CI,
        }

    @property
    def fastai_minimum_lre(self) -> float:
        """fastai's `minimum` suggester: the min-loss lr / 10 (its docs: "min loss divided by 10")."""
        return self.best_lre - FASTAI_MINIMUM_DECADES

    @property
    def suggestions(self) -> Suggestions:
        """Suggester name -> picked exponent (lre): min_loss (the pick), fastai_minimum, steepest, valley.
        `suggestions["minimum"]`, the old name of min_loss, still reads."""
        return Suggestions({"min_loss": self.best_lre, "fastai_minimum": self.fastai_minimum_lre,
                            "steepest": self.steepest_lre, "valley": self.valley_lre})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able scalars and the per-run table (NaN -> None)."""
        scalars = {
            "best_lre": self.best_lre, "best_lr": self.best_lr, "best_lre_ci": list(self.best_lre_ci),
            "steepest_lre": self.steepest_lre, "steepest_lr": self.steepest_lr,
            "steepest_lre_ci": list(self.steepest_lre_ci),
            "valley_lre": self.valley_lre, "valley_lr": self.valley_lr,
            "suggesters": self.suggestions.with_aliases(),
            "n_runs": self.n_runs, "n_seeds": self.n_seeds, "n_steps": self.n_steps, "column": self.column,
            "bin_width": self.bin_width, "skip_start_frac": self.skip_start_frac, "skip_end_frac": self.skip_end_frac,
            "ci_level": self.ci_level, "n_boot": self.n_boot, "ci_method": self.ci_method, "notes": list(self.notes),
            "per_run": frame_records(self.per_run), "left_out_running": list(self.left_out_running),
        }
        return json_safe(scalars)


class Suggestions(dict):
    """Suggester name -> value, listing the names of now; an old name (SUGGESTER_ALIASES) reads as its new one."""

    def __missing__(self, key: str) -> float:
        if key in SUGGESTER_ALIASES:
            return self[SUGGESTER_ALIASES[key]]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(SUGGESTER_ALIASES.get(key, key) if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def map(self, fn) -> Suggestions:
        """fn of every value (e.g. lre -> lr), the same names and aliases."""
        return Suggestions({name: fn(value) for name, value in self.items()})

    def with_aliases(self) -> dict[str, float]:
        """A plain dict with the old names too, as summary.json writes it for readers of either."""
        return {**self, **{old: self[new] for old, new in SUGGESTER_ALIASES.items() if new in self}}


def pick_exponent(
    steps: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    column: str = keys.LOSS,
    bin_width: float | None = None,
    n_bins: int | None = None,
    skip_start_frac: float = 0.1,
    skip_end_frac: float = 0.05,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
    include_running: bool = False,
) -> ExponentPick:
    """Pick the best lr exponent from the range-test runs in `steps`.

    Parameters
    ----------
    steps : DataFrame
        Tidy per-step frame with ``run_id``, ``step``, ``lre`` and `column`; a ``schedule`` column
        keeps only ``range`` runs, a ``seed`` column groups runs into seeds.
    runs : DataFrame, optional
        Per-run frame; its ``diverged_at_step`` cuts each run there, and ``stop_reason`` /
        ``stop_step`` go into ``per_run``, as do the runs' ``lre_min`` / ``lre_max`` where `steps`
        lacks them (`load_runs` keeps fields every run shares in `runs` only).
    column : str
        The loss to read (default the raw ``loss``, the seed's range-test plot).
    bin_width, n_bins : float, int, optional
        Bins of ``lre``: a width in decades (edges on multiples of it, so separate analyses line
        up), or a count over the measured span. Default: 50 bins. Not both.
    skip_start_frac, skip_end_frac : float
        Fractions of each run's measured steps the suggesters ignore at its start and end (fastai
        skips the first 10 % and the last 5 points): a run's start is training from init, not the
        lr, and its end is where it blew up. Per run, so runs of different ranges combine.
    n_boot : int
        Bootstrap resamples of the seeds (0: no CI).
    ci_level : float
        Coverage of the percentile CI.
    seed : int
        Seed of the bootstrap's RNG, so a report is reproducible.
    include_running : bool
        Pick from runs still running too (`runs`' ``state`` is ``running``). By default they are
        left out, and named in ``left_out_running`` and the notes: a partial range test is not a
        range test (`python -m analysis --state running` asks for them).

    Returns
    -------
    ExponentPick

    Raises
    ------
    LrscanError
        No range runs, no finite losses, bad bin settings, or fewer than 3 lre bins measured inside
        the runs' skip windows.
    """
    require_columns(steps, ["run_id", keys.STEP_COLUMN, keys.LRE, column], "the steps frame")
    if bin_width is not None and n_bins is not None:
        raise LrscanError("give bin_width or n_bins, not both")
    if bin_width is not None and not (math.isfinite(bin_width) and bin_width > 0):
        raise LrscanError(f"bin_width={bin_width}: must be a positive number of decades")
    if n_bins is not None and (int(n_bins) != n_bins or n_bins < 1):
        raise LrscanError(f"n_bins={n_bins}: must be a whole number >= 1")
    for name, frac in (("skip_start_frac", skip_start_frac), ("skip_end_frac", skip_end_frac)):
        if not 0 <= frac < 1:
            raise LrscanError(f"{name}={frac}: must be in [0, 1)")
    if not 0 < ci_level < 1:
        raise LrscanError(f"ci_level={ci_level}: must be in (0, 1)")
    if n_boot < 0:
        raise LrscanError(f"n_boot={n_boot}: must be >= 0")

    steps = range_runs(steps)
    if not include_running and (running_ids := running_runs(runs)):
        present = {str(r) for r in steps["run_id"].unique()}
        running = [r for r in running_ids if r in present]
    else:
        running = []
    if running:
        steps = steps.loc[~steps["run_id"].astype(str).isin(running)]
        if steps.empty:
            raise LrscanError(f"every range-test run is still running ({_named(running)}): a partial range test is not "
                              f"a range test; --state running (include_running=True) picks from them as they are")
    rows = measured_rows(steps, runs, column)
    edges = bin_edges(rows.lre_span, bin_width, n_bins)
    centres = np.round((edges[:-1] + edges[1:]) / 2, 10)
    n_runs = len(rows.run_ids)
    # per run and bin: every measured step (for the faint per-run lines), and inside the windows
    cells = bin_cells(steps, rows, column, edges, skip_start_frac, skip_end_frac)
    all_matrix, all_count, run_matrix = cells.all_mean, cells.all_count, cells.window_mean
    # then per seed: a seed's runs (say a coarse and a narrow range) are one unit of the bootstrap
    has_seed = SEED in rows.per_run.columns
    unit_codes, units = pd.factorize(rows.per_run[SEED].to_numpy() if has_seed else rows.run_ids.to_numpy(), sort=True)
    unit_matrix = np.vstack([_nanmean(run_matrix[unit_codes == u], axis=0) for u in range(len(units))])

    n = np.isfinite(unit_matrix).sum(axis=0)
    binned = np.flatnonzero(n > 0)
    if len(binned) < 3:
        raise LrscanError(_too_few_message(len(binned), skip_start_frac, skip_end_frac))
    mean = _nanmean(unit_matrix, axis=0)
    sd = _nansd(unit_matrix)
    x, y = centres[binned], mean[binned]
    best_lre = float(x[np.argmin(y)])
    steepest_lre = float(x[np.argmin(np.gradient(y, x))])
    valley_lre = float(x[valley_index(y)])

    notes: list[str] = []
    if running:
        notes.append(f"left out of the pick: {len(running)} range run(s) still running ({_named(running)}); a partial "
                     f"range test is not a range test (--state running includes them)")
    best_ci, steep_ci = (math.nan, math.nan), (math.nan, math.nan)
    unit = "seed" if has_seed else "run"
    if n_boot and len(units) >= 2:
        best_ci, steep_ci = _bootstrap(unit_matrix[:, binned], x, n_boot, ci_level, seed)
        if len(units) < MIN_SEEDS_FOR_CI:
            notes.append(
                f"only {len(units)} {unit}s: a bootstrap over {len(units)} {unit}s has at most "
                f"{distinct_resamples(len(units))} distinct resamples, so the {ci_level:.0%} CI is about the "
                f"spread of the {unit}s' own picks, not a measured interval; run {MIN_SEEDS_FOR_CI} or more seeds "
                f"(8 is better)")
    elif n_boot:
        notes.append(f"only one {unit}: no bootstrap CI (run more seeds)")

    curve = pd.DataFrame({
        keys.LRE: x,
        keys.LR: 10.0 ** x,
        column: y,
        "sd": sd[binned],
        "sem": sd[binned] / np.sqrt(n[binned]),
        "n": n[binned].astype("int64"),
        "n_runs": np.isfinite(run_matrix[:, binned]).sum(axis=0).astype("int64"),
    })
    r, b = np.nonzero(all_count)
    run_curves = pd.DataFrame({
        "run_id": rows.run_ids[r].astype("string"),
        column: all_matrix[r, b],
        "in_window": cells.window_count[r, b] > 0,
        keys.LRE: centres[b],
        keys.LR: 10.0 ** centres[b],
    })
    if has_seed:
        run_curves[SEED] = rows.per_run[SEED].to_numpy()[r]
    per_run = _per_run_picks(rows, cells, centres, runs)

    return ExponentPick(
        best_lre=best_lre, best_lr=10.0 ** best_lre, best_lre_ci=best_ci,
        steepest_lre=steepest_lre, steepest_lr=10.0 ** steepest_lre, steepest_lre_ci=steep_ci,
        valley_lre=valley_lre, valley_lr=10.0 ** valley_lre,
        n_runs=n_runs, n_seeds=len(units), n_steps=int(cells.n_steps.sum()), column=column,
        bin_width=round(float(edges[1] - edges[0]), 10),
        skip_start_frac=skip_start_frac, skip_end_frac=skip_end_frac, ci_level=ci_level, n_boot=n_boot,
        curve=curve, run_curves=run_curves, per_run=per_run, notes=notes, unit=unit, left_out_running=running,
    )


def ci_description(method: Mapping[str, Any] | None) -> str:
    """How a CI was made, for people, from `ExponentPick.ci_method` (or its copy in summary.json)."""
    if not method or method.get("method") == "none":
        return f"no CI ({method.get('reason', 'no bootstrap')})" if method else "no CI"
    unit = method["unit"]
    text = (f"{method['level']:.0%} {method['method']} ({method['n_units']} {unit}s, {method['n_boot']} resamples, "
            f"{method['distinct_resamples']} distinct)")
    if not method["enough_units"]:
        text += f"; too few {unit}s (< {MIN_SEEDS_FOR_CI}): the interval is about the spread of their own picks"
    return text


def distinct_resamples(n: int) -> int:
    """How many different multisets a bootstrap of `n` units can draw: C(2n - 1, n) (3 -> 10, 5 -> 126, 8 -> 6435)."""
    return math.comb(2 * n - 1, n) if n >= 1 else 0


def valley_index(losses: np.ndarray) -> int:
    """fastai's ``valley`` suggester on a curve, as an index into it.

    Hand-written (fastai is not a dependency, and its function needs a Learner's recorder): the
    longest strictly decreasing subsequence by dynamic programming, ``max_start = max_end -
    lds[max_end]`` and ``idx = max_start + int(sections) + int(sections / 2)`` with ``sections =
    (max_end - max_start) / 3``, exactly as in ``fastai/callback/schedule.py``. That lands about
    the middle of the valley (1/3 + 1/6 = 1/2).
    """
    losses = np.asarray(losses, dtype="float64")
    n = len(losses)
    lds = np.ones(n, dtype=np.int64)
    max_end = 0
    for i in range(1, n):
        higher_before = losses[:i] > losses[i]
        if higher_before.any():
            lds[i] = lds[:i][higher_before].max() + 1
        if lds[max_end] < lds[i]:
            max_end = i
    max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return int(max(0, max_start + int(sections) + int(sections / 2)))


# -- helpers ----------------------------------------------------------------------------------------


def running_runs(runs: pd.DataFrame | None) -> list[str]:
    """The ids of the runs still running, from the runs frame's ``state`` (sorted; none without one)."""
    if runs is None or "state" not in runs.columns or "run_id" not in runs.columns:
        return []
    return sorted(runs.loc[runs["state"] == RUNNING, "run_id"].astype(str).unique())


def _named(run_ids: list[str], shown: int = 5) -> str:
    return ", ".join(run_ids[:shown]) + (f" and {len(run_ids) - shown} more" if len(run_ids) > shown else "")


def range_runs(steps: pd.DataFrame) -> pd.DataFrame:
    if SCHEDULE in steps.columns:
        is_range = steps[SCHEDULE] == SCHEDULE_RANGE
        if not is_range.all():  # no copy of a frame of range runs only
            steps = steps.loc[is_range]
    if steps.empty:
        raise LrscanError("no range-test runs (schedule == 'range') to pick an exponent from")
    return steps


def _too_few_message(n_bins: int, skip_start_frac: float, skip_end_frac: float) -> str:
    return (
        f"only {n_bins} lre bin(s) hold steps inside the runs' skip windows (the first {skip_start_frac:.0%} "
        f"and the last {skip_end_frac:.0%} of each run's steps are skipped); the suggesters need 3: "
        f"use more steps, a smaller bin_width or smaller skip_start_frac/skip_end_frac"
    )


def _bootstrap(units: np.ndarray, lre: np.ndarray, n_boot: int, ci_level: float, seed: int):
    """Percentile CIs of the minimum and steepest suggesters, resampling seeds with replacement."""
    rng = np.random.default_rng(seed)
    n_units = units.shape[0]
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    counts = np.zeros((n_boot, n_units))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    finite = np.isfinite(units)
    total = counts @ np.where(finite, units, 0.0)
    weight = counts @ finite.astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        curves = total / weight
    ok = np.isfinite(curves).all(axis=1)  # a resample that left a window bin unmeasured cannot be compared
    curves = curves[ok]
    if len(curves) == 0:
        return (math.nan, math.nan), (math.nan, math.nan)
    best = lre[np.argmin(curves, axis=1)]
    steepest = lre[np.argmin(np.gradient(curves, lre, axis=1), axis=1)]
    tails = [(1 - ci_level) / 2, 1 - (1 - ci_level) / 2]
    return tuple(float(q) for q in np.quantile(best, tails)), tuple(float(q) for q in np.quantile(steepest, tails))


def _per_run_picks(rows: Rows, cells: Cells, centres, runs) -> pd.DataFrame:
    """Each run's own suggesters (inside its window) and where it stopped."""
    out = rows.per_run.copy()
    out["n_steps"] = cells.n_steps
    out["last_step"] = cells.last_step
    out["last_lre"] = cells.last_lre
    out["last_lr"] = 10.0 ** out["last_lre"]
    # the run's mean in its last bin, not its last raw step: a climb stop's last step is an outlier
    out["last_loss"] = cells.all_mean[np.arange(len(rows.run_ids)), cells.last_bin]
    picks: dict[str, list[float]] = {"best_lre": [], "steepest_lre": [], "valley_lre": []}
    for row in cells.window_mean:
        has = np.isfinite(row)
        if has.sum() < 3:
            for v in picks.values():
                v.append(math.nan)
            continue
        x, y = centres[has], row[has]
        picks["best_lre"].append(float(x[np.argmin(y)]))
        picks["steepest_lre"].append(float(x[np.argmin(np.gradient(y, x))]))
        picks["valley_lre"].append(float(x[valley_index(y)]))
    for k, v in picks.items():
        out[k] = np.asarray(v, dtype="float64")
    out["best_lr"] = 10.0 ** out["best_lre"]
    if runs is not None:
        extra = [c for c in (keys.STOP_REASON, keys.STOP_STEP, keys.DIVERGED_AT_STEP) if c in runs.columns]
        if extra:
            by_run = runs.assign(run_id=runs["run_id"].astype(str)).drop_duplicates("run_id").set_index("run_id")
            out = out.join(by_run[extra])
    out = out.reset_index()
    out["run_id"] = out["run_id"].astype("string")
    return out


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """nanmean without the all-NaN RuntimeWarning (an unmeasured bin is expected, not an error)."""
    finite = np.isfinite(a)
    count = finite.sum(axis=axis)
    total = np.where(finite, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nansd(a: np.ndarray) -> np.ndarray:
    finite = np.isfinite(a)
    count = finite.sum(axis=0)
    mean = _nanmean(a, axis=0)
    sq = np.where(finite, (a - mean) ** 2, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 1, np.sqrt(sq / np.maximum(count - 1, 1)), np.nan)
