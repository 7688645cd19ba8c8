"""The range test's default ends by optimizer family, and whether a curve holds its minimum and the turn.

    default_range(task.optimizer)      # Range(-3.0, 0.0, "SGD-like ...") or Range(-5.0, -1.0, "Adam-like ...")
    check = check_range(pick, runs, lre_min=-3, lre_max=0)
    check.holds, check.message, check.next_range      # next_range: the range to run next, or None

Why two families: plain SGD (and momentum SGD) takes the lecture's lrs, 1e-3..1, while Adam-like
optimizers normalise each step by a running gradient scale, so their good lrs sit two decades
lower (AdamW on a transformer: commonly 1e-4..1e-3). One range for both puts Adam's good lrs on
the range's first steps, where the curve is still the model's first steps from init. The ends were
chosen by measurement (docs/quickstart.md, "Default ranges"): on the makemore MLP + SGD and on
examples/wavenet.py + AdamW the default range's mean curve holds both the loss minimum and the
turn where the loss climbs (tests/pipeline/study/test_ranges.py).

A curve that does not (its minimum on the first lrs; or a loss that never turns up) is said in one
line, with the range to run next: two decades further on the side that failed, with as many steps
per decade.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lrscan.pipeline import keys

SGD_RANGE = (-3.0, 0.0)   # the lecture's 1e-3..1
ADAM_RANGE = (-5.0, -1.0)  # 1e-5..1e-1: Adam-like optimizers' good lrs two decades below SGD's, and their turn
# class names (any class in the optimizer's MRO, lower case) of the adaptive family: torch's Adam, AdamW, NAdam,
# RAdam, Adamax, SparseAdam, RMSprop, Adagrad, and by name the usual third-party ones (bitsandbytes' AdamW8bit,
# apex's FusedAdam, Lion, LAMB, Adafactor, Sophia)
ADAPTIVE_NAMES = ("adam", "rmsprop", "adagrad", "lion", "lamb", "adafactor", "sophia", "shampoo", "prodigy")
STUDY = "lrscan study"  # check_range's `where` for the study: the hint names its flags
MAX_EXTENSIONS = 2        # --extend / extend=True: at most this many further ranges
EXTEND_DECADES = 2.0      # how far the next range reaches past the side that failed
TURN_FRACTION = 0.2       # the loss "turns up" once it climbs this fraction of its fall above its minimum
LOW_END_BINS = 2          # a minimum in the first this-many bins the pick reads sits "on the first lrs"
LOW_END_FRACTION = 0.1    # ... or in the first tenth of them
NOISE_SDS = 6.0           # a fall or rise must exceed this many sds of the smoothed curve's noise to count
SMOOTH_BINS = 5           # the mean curve smoothed over this many bins (a tenth of the pick's 50) before it is read


@dataclass(frozen=True)
class Range:
    """A range test's ends as lr exponents, and where they came from (in words)."""

    lre_min: float
    lre_max: float
    why: str

    def __str__(self) -> str:
        return f"{10 ** self.lre_min:.3g}..{10 ** self.lre_max:.3g}"


def optimizer_family(optimizer: Any) -> str:
    """"adam" for an adaptive optimizer (its class or a base class named like one of `ADAPTIVE_NAMES`), else "sgd"."""
    names = [cls.__name__.lower() for cls in type(optimizer).__mro__]
    return "adam" if any(n in name for name in names for n in ADAPTIVE_NAMES) else "sgd"


def default_range(optimizer: Any) -> Range:
    """The default range for `optimizer`'s family: SGD-like 1e-3..1 (the lecture's), Adam-like 1e-5..1e-1."""
    name = type(optimizer).__name__
    if optimizer_family(optimizer) == "adam":
        return Range(*ADAM_RANGE, f"the default for {name} (Adam-like): 1e-5..1e-1")
    return Range(*SGD_RANGE, f"the default for {name} (SGD-like): the lecture's 1e-3..1")


def fill_range(lre_min: float | None, lre_max: float | None, optimizer: Any) -> Range:
    """The ends the user gave, the other(s) from `default_range(optimizer)`."""
    default = default_range(optimizer)
    if lre_min is not None and lre_max is not None:
        return Range(float(lre_min), float(lre_max), "given")
    if lre_min is None and lre_max is None:
        return default
    low = default.lre_min if lre_min is None else float(lre_min)
    high = default.lre_max if lre_max is None else float(lre_max)
    return Range(low, high, f"{'lre_max' if lre_min is not None else 'lre_min'} {default.why}")


@dataclass(frozen=True)
class RangeCheck:
    """Whether a range test's mean curve holds its minimum (not on the first lrs) and the turn where it climbs."""

    lre_min: float
    lre_max: float
    holds_minimum: bool
    turns_up: bool
    next_range: tuple[float, float] | None  # the range to run next, None when this one holds both
    message: str  # one line; "" when the range holds both

    @property
    def holds(self) -> bool:
        return self.holds_minimum and self.turns_up


def check_range(pick: Any, runs: pd.DataFrame | None, *, lre_min: float, lre_max: float,
                where: str = "range_test") -> RangeCheck:
    """Read `pick` (an `analysis.pick.ExponentPick`) and the runs' stops: does the range hold the minimum and
    the turn? A run stopped for a climb or a non-finite loss turned up; otherwise the mean curve must climb
    `TURN_FRACTION` of its fall above its minimum after it (the fall: the highest mean loss before the
    minimum, inside the skip windows, minus the minimum; at least 5% of the minimum). The minimum must lie
    past the first `LOW_END_BINS` bins (and tenth) of those the pick reads (the skip windows leave out each
    run's first steps, training from init). The curve is read smoothed over `SMOOTH_BINS` bins."""
    column = pick.column
    # every measured bin's mean over runs (the turn is often in the last steps the skip windows leave out),
    # smoothed over SMOOTH_BINS bins: one step's loss is one batch's, far noisier than the curve's shape
    full = pick.run_curves.groupby(keys.LRE)[column].mean().sort_index()
    smooth = full.rolling(SMOOTH_BINS, center=True, min_periods=1).mean()
    window = smooth[(smooth.index >= pick.curve[keys.LRE].min()) & (smooth.index <= pick.curve[keys.LRE].max())]
    if window.dropna().empty:
        window = smooth
    lre, loss = window.index.to_numpy(dtype=float), window.to_numpy(dtype=float)
    at = int(np.nanargmin(loss))
    after = smooth[smooth.index >= lre[at]].to_numpy(dtype=float)
    after = after[np.isfinite(after)]
    fall = float(np.nanmax(loss[: at + 1]) - loss[at])
    rise = float(after.max() - loss[at]) if len(after) else 0.0
    # what the smoothed curve's noise alone moves it by: a fall or a rise smaller than NOISE_SDS of it is noise
    noise = float(np.nanstd((full - smooth).to_numpy(dtype=float)) / math.sqrt(SMOOTH_BINS))
    floor = max(NOISE_SDS * noise, 1e-12)
    stopped = bool(_stop_reasons(runs) & {keys.STOP_CLIMB, keys.STOP_NON_FINITE})
    turns_up = stopped or (rise >= floor and rise >= TURN_FRACTION * max(fall, 0.05 * abs(float(loss[at]))))
    flat = fall < floor and not turns_up  # the lrs too small to move the loss: the range lies below
    holds_minimum = flat or at >= max(LOW_END_BINS, int(LOW_END_FRACTION * len(loss)))
    if holds_minimum and turns_up:
        return RangeCheck(lre_min, lre_max, True, True, None, "")
    low = lre_min - EXTEND_DECADES if not holds_minimum else lre_min
    high = lre_max + EXTEND_DECADES if not turns_up else lre_max
    span = f"{_lr(lre_min)}..{_lr(lre_max)}"
    if flat:
        what = "the loss barely changes across it (its lrs are too small to train) and never turns up"
    elif not holds_minimum:
        what = f"the loss is lowest on its first lrs (lr {_lr(lre[at])}): the good lrs may lie below it"
    else:
        what = "the loss never turns up: the lr where training breaks down lies above it"
    how = (f"--lre_min={low:g} --lre_max={high:g}, or --extend" if where == STUDY else
           f"{where}(..., lre_min={low:g}, lre_max={high:g}); result.suggest_range()")
    message = f"the range {span} does not hold the curve: {what}; run {_lr(low)}..{_lr(high)} next ({how})"
    return RangeCheck(lre_min, lre_max, holds_minimum, turns_up, (low, high), message)


def next_range_arguments(check: RangeCheck, steps: int) -> dict[str, Any] | None:
    """range_test's keywords for the next range (lre_min, lre_max, and steps at the same steps per decade)."""
    if check.next_range is None:
        return None
    low, high = check.next_range
    width = check.lre_max - check.lre_min
    per_decade = steps / width if width > 0 else steps
    return {"lre_min": low, "lre_max": high, "steps": max(int(steps), int(math.ceil(per_decade * (high - low))))}


def _stop_reasons(runs: pd.DataFrame | Mapping[str, Any] | None) -> set[str]:
    if runs is None or keys.STOP_REASON not in getattr(runs, "columns", ()):
        return set()
    return {str(r) for r in runs[keys.STOP_REASON].dropna()}


def _lr(lre: float) -> str:
    return f"{10 ** float(lre):.3g}"

