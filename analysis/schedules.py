"""What schedule an lr trace follows, for runs whose config does not say: range test, step decay, constant or other.

    guess = classify_lr_trace(step, lr)   # the steps the lr was LOGGED at, and the lrs logged there
    guess.kind     # "range" | "step" | "constant" | "other"
    guess.reason   # one line a person reads, e.g. "lr rises geometrically from 1e-05 to 1 over steps 0-999"
    guess.config   # the TrainConfig fields the trace implies: lre_min/lre_max, or lr/decay_steps/decay_lrs

The trace is the lr as it was logged (NaN and infinities dropped), in step order, never the lr carried
forward to every loss row: a range test whose lr is logged every 10 steps is a range test. Two lrs
within `RELATIVE_TOLERANCE` (1 %) are one lr: an lr kept in bf16 has 8 significant bits, so two
roundings of one lr can differ by one unit in the last place, up to 2**-7 = 0.78 %.

- range: the lr never falls, rises to its last logged step through at least one decade,
  geometrically (lre a straight line in step: lrscan's, fastai's and Lightning's lr finders), or
  linearly through at least `LINEAR_RANGE_MIN_DECADES` decades (torch-lr-finder's linear mode). A
  trace that starts at 0 is never a range test (a geometric sweep can't reach 0).
- warm-up: the lr rises to its peak and then holds it (or steps down from it) for the rest of the
  run. The schedule is then what follows the warm-up: constant, or step decay with its boundaries
  and lrs counted from the peak.
- step or constant: piecewise constant with at most `MAX_CHANGES` changes. `step` names each change
  by the first step logged at the new lr (with sparse logging the change happened at or before it).
- other: anything else, with the reason: warm-up then cosine, one-cycle, a smooth decay, and a trace
  cut off while still rising from 0 (a warm-up) or rising in a shape a range test doesn't have (a
  one-cycle's first phase). No exponent is picked from such a run; its block means are still shown.

A `schedule` in a run's config always wins: this is only asked when the config is silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RANGE, STEP, CONSTANT, OTHER = "range", "step", "constant", "other"
MAX_CHANGES = 10                # more lr changes than this is not a step schedule
RANGE_MIN_DECADES = 1.0         # a range test sweeps at least one decade
LINEAR_RANGE_MIN_DECADES = 2.0  # a linear one at least two (a one-cycle's linear rise spans 1.4: div_factor 25)
RANGE_MIN_POINTS = 3
RELATIVE_TOLERANCE = 0.01       # lrs closer than this are one lr (bf16: up to 0.78 % between two roundings)
SHAPE_R2 = 0.99                 # lre (geometric) or lr (linear) a straight line in step this well
HOLD_MIN_SHARE = 0.05           # a peak held for this share of the logged points (and 3 of them) ends a warm-up
HOLD_MIN_POINTS = 3


@dataclass(frozen=True)
class ScheduleGuess:
    """The schedule an lr trace follows, why, and the config fields it implies."""

    kind: str
    reason: str
    config: dict[str, Any] = field(default_factory=dict)


def classify_lr_trace(step: np.ndarray, lr: np.ndarray) -> ScheduleGuess:
    """Classify one run's lr trace; `step` and `lr` are the logged points (any order, NaN = not logged)."""
    step = np.asarray(step, dtype=np.int64)
    lr = np.asarray(lr, dtype=np.float64)
    ok = np.isfinite(lr)
    order = np.argsort(step[ok], kind="stable")
    step, lr = step[ok][order], lr[ok][order]
    if len(lr) == 0:
        return ScheduleGuess(OTHER, "no lr logged: its schedule is unknown")
    starts = level_starts(lr)
    if len(starts) == 1:
        return ScheduleGuess(CONSTANT, f"lr constant at {lr[0]:.4g}", {"lr": float(lr[0])})
    warm_up_end = _warm_up_end(lr)
    if warm_up_end is not None:
        return _after_warm_up(step, lr, warm_up_end)
    if lr[-1] > lr[0] and _never_falls(lr):
        return _rising(step, lr, starts)
    if len(starts) - 1 <= MAX_CHANGES:
        return _piecewise(step, lr, starts, "lr piecewise constant: ")
    return ScheduleGuess(OTHER, "lr " + _other_reason(lr, len(starts) - 1))


def level_starts(lr: np.ndarray, max_levels: int = MAX_CHANGES + 2) -> np.ndarray:
    """Where each lr level starts: a point more than `RELATIVE_TOLERANCE` from its level's first lr starts another.

    Counted up to `max_levels` (more is "not piecewise constant"; a range test has hundreds). Each level's end
    is looked for in windows that grow fourfold from 64 points, each vectorised: a range test's levels end
    within a few points, a constant trace is read once, and a 200k-point trace costs a few passes, not a
    Python loop nor a pass over its whole rest per level.
    """
    starts = [0]
    while len(starts) < max_levels:
        start = starts[-1]
        ref = lr[start]
        abs_ref = abs(ref)
        at, width, found = start, 64, None
        while at < len(lr) and found is None:
            window = lr[at : at + width]
            away = np.abs(window - ref) > RELATIVE_TOLERANCE * np.maximum(np.abs(window), abs_ref)
            if away.any():
                found = at + int(np.argmax(away))
            at, width = at + width, width * 4
        if found is None:
            break
        starts.append(found)
    return np.asarray(starts, dtype=np.int64)


def _warm_up_end(lr: np.ndarray) -> int | None:
    """Where a rise to the peak ends and a hold of the peak begins; None: the trace doesn't rise and hold.

    The hold is the run of points within the tolerance of the highest lr; it starts at its first point
    as close to its median as its own jitter (bf16 rounding) allows, must last `HOLD_MIN_SHARE` of the
    trace, and must be flat: its lrs jitter up and down (bf16), where the top of a cosine ramp or a
    one-cycle inside the tolerance rises (then falls) steadily.
    """
    near_top = lr >= lr.max() * (1.0 - RELATIVE_TOLERANCE)
    top = int(np.argmax(near_top))
    if top == 0 or not _never_falls(lr[: top + 1]):
        return None
    stop = top + (int(np.argmax(~near_top[top:])) if not near_top[top:].all() else len(lr) - top)
    band = lr[top:stop]
    level = np.median(band)
    spread = np.quantile(np.abs(band - level), 0.9)
    end = top + int(np.argmax(np.abs(band - level) <= spread + 1e-12 * abs(level)))
    moves = np.sign(np.diff(lr[end:stop]))
    moves = moves[moves != 0]
    # jitter goes up and down at random; the top of a cosine or a one-cycle goes up, then down, once
    turns = np.count_nonzero(moves[1:] != moves[:-1])
    flat = len(moves) == 0 or (turns >= len(moves) / 5 and np.sum(moves > 0) <= 2 * np.sum(moves < 0) + 2)
    if stop - end < max(HOLD_MIN_POINTS, HOLD_MIN_SHARE * len(lr)) or not flat:
        return None
    return end


def _never_falls(lr: np.ndarray) -> bool:
    """No point more than the tolerance below the highest lr before it."""
    return bool(np.all(lr >= np.maximum.accumulate(lr) * (1.0 - RELATIVE_TOLERANCE)))


def _rising(step: np.ndarray, lr: np.ndarray, starts: np.ndarray) -> ScheduleGuess:
    """A trace that rises to its end: a range test, a rising staircase, or a warm-up / one-cycle cut off."""
    span = f"from {lr[0]:.4g} to {lr[-1]:.4g} over steps {int(step[0])}-{int(step[-1])}"
    if lr[0] <= 0:
        return ScheduleGuess(OTHER, f"lr rises {span} and the trace ends there: a warm-up cut off before its "
                                    f"peak (a range test never starts at 0)")
    if len(starts) - 1 <= MAX_CHANGES and np.all(np.diff([*starts, len(lr)]) >= 2):  # a staircase, flat steps
        return _piecewise(step, lr, starts, "lr piecewise constant: ")
    decades = math.log10(lr[-1] / lr[0])
    config = {"lre_min": math.log10(lr[0]), "lre_max": math.log10(lr[-1])}
    if len(lr) >= RANGE_MIN_POINTS and decades >= RANGE_MIN_DECADES and _straight(step, np.log10(lr)):
        return ScheduleGuess(RANGE, f"lr rises geometrically {span}", config)
    if len(lr) >= RANGE_MIN_POINTS and decades >= LINEAR_RANGE_MIN_DECADES and _straight(step, lr):
        return ScheduleGuess(RANGE, f"lr rises linearly (not geometrically) {span}", config)
    return ScheduleGuess(OTHER, f"lr rises {span} ({decades:.2g} decades, neither geometrically through "
                                f"{RANGE_MIN_DECADES:g} nor linearly through {LINEAR_RANGE_MIN_DECADES:g}) and the "
                                f"trace ends there: a warm-up or a one-cycle cut off before its peak, not a range test")


def _after_warm_up(step: np.ndarray, lr: np.ndarray, peak: int) -> ScheduleGuess:
    """A rise to a peak held afterwards: the schedule is what follows the peak."""
    warm_up = f"lr warms up from {lr[0]:.4g} to {lr[peak]:.4g} over steps {int(step[0])}-{int(step[peak])}, then "
    tail_step, tail = step[peak:], lr[peak:]
    starts = level_starts(tail)
    if len(starts) == 1:
        return ScheduleGuess(CONSTANT, f"{warm_up}constant at {tail[0]:.4g}", {"lr": float(tail[0])})
    if len(starts) - 1 <= MAX_CHANGES:
        return _piecewise(tail_step, tail, starts, warm_up + "piecewise constant: ")
    return ScheduleGuess(OTHER, warm_up + _other_reason(tail, len(starts) - 1))


def _piecewise(step: np.ndarray, lr: np.ndarray, starts: np.ndarray, prefix: str) -> ScheduleGuess:
    """A step schedule: the lr of each level and the first step logged at it (a level's lr: its median)."""
    ends = [*starts[1:], len(lr)]
    levels = [float(np.median(lr[a:b])) for a, b in zip(starts, ends)]
    boundaries = [int(step[a]) for a in starts[1:]]
    pieces = ", ".join(f"{v:.4g} from step {s}" for s, v in zip(boundaries, levels[1:]))
    return ScheduleGuess(STEP, f"{prefix}{levels[0]:.4g}, then {pieces}",
                         {"lr": levels[0], "decay_steps": boundaries, "decay_lrs": levels[1:]})


def _straight(step: np.ndarray, y: np.ndarray) -> bool:
    """`y` a straight line in step (R² of a linear least-squares fit at least SHAPE_R2).

    R² of a line fit is the squared correlation of x and y, computed from centred sums: one pass, where
    `np.polyfit` solves the same fit through an SVD of the (n, 2) Vandermonde matrix (20 ms at 200k points)."""
    x = step.astype(np.float64)
    x = x - x.mean()
    y = y - y.mean()
    sxx, syy, sxy = float(x @ x), float(y @ y), float(x @ y)
    return bool(syy > 0 and sxx > 0 and sxy * sxy / (sxx * syy) >= SHAPE_R2)


def _other_reason(lr: np.ndarray, n_changes: int) -> str:
    many = f"more than {MAX_CHANGES}" if n_changes > MAX_CHANGES else str(n_changes)
    peak = int(np.argmax(lr))
    if 0 < peak < len(lr) - 1:
        shape = f"rises to {lr[peak]:.4g} then falls to {lr[-1]:.4g} (warm-up then decay, one-cycle?)"
    elif lr[-1] < lr[0]:
        shape = f"falls smoothly from {lr[0]:.4g} to {lr[-1]:.4g}"
    else:
        shape = f"goes from {lr[0]:.4g} to {lr[-1]:.4g}, up and down"
    return f"{shape}, changing {many} times: neither a range test nor piecewise constant"
