"""What schedule an lr trace follows, for runs whose config does not say: range test, step decay, constant or other.

    guess = classify_lr_trace(step, lr)   # the steps the lr was logged at, and the lrs logged there
    guess.kind     # "range" | "step" | "constant" | "other"
    guess.reason   # one line a person reads, e.g. "lr rises geometrically from 1e-05 to 1 over steps 0-999"
    guess.config   # the TrainConfig fields the trace implies: lre_min/lre_max, or lr/decay_steps/decay_lrs

The rules, on the lr as logged (NaN and infinities dropped), in step order:

- range: the lr never falls, rises through at least one decade, and changes at nearly every logged
  step (at least 90 % of them): lrscan's and fastai's geometric sweeps (lr = 10**linspace), and
  torch-lr-finder's linear mode.
- step or constant: piecewise constant with at most `MAX_CHANGES` changes. `step` names each change
  by the first step logged at the new lr (with sparse logging the change happened at or before it).
- other: anything else (warm-up then cosine, one-cycle, a smooth decay). No exponent is picked from
  such a run; its block means are still shown.

A `schedule` in a run's config always wins: this is only asked when the config is silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RANGE, STEP, CONSTANT, OTHER = "range", "step", "constant", "other"
MAX_CHANGES = 10            # more lr changes than this is not a step schedule
RANGE_CHANGE_SHARE = 0.9    # a range test gives nearly every logged step a new lr
RANGE_MIN_DECADES = 1.0     # and sweeps at least one decade
RANGE_MIN_POINTS = 3
RELATIVE_TOLERANCE = 1e-9   # two logged lrs closer than this are the same lr (float noise of a recomputed value)
GEOMETRIC_R2 = 0.99         # lre linear in step this well: "geometric"


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
    changed = _changes(lr)
    n_changes = int(changed.sum())
    if n_changes == 0:
        return ScheduleGuess(CONSTANT, f"lr constant at {lr[0]:.4g}", {"lr": float(lr[0])})
    if _is_range(lr, changed):
        return ScheduleGuess(RANGE, _range_reason(step, lr), {"lre_min": _lre(lr[0]), "lre_max": _lre(lr[-1])})
    if n_changes <= MAX_CHANGES:
        at = np.flatnonzero(changed) + 1  # index of the first point logged at each new lr
        boundaries = [int(s) for s in step[at]]
        levels = [float(v) for v in lr[at]]
        pieces = ", ".join(f"{v:.4g} from step {s}" for s, v in zip(boundaries, levels))
        return ScheduleGuess(STEP, f"lr piecewise constant: {lr[0]:.4g}, then {pieces}",
                             {"lr": float(lr[0]), "decay_steps": boundaries, "decay_lrs": levels})
    return ScheduleGuess(OTHER, _other_reason(lr, n_changes))


def _changes(lr: np.ndarray) -> np.ndarray:
    """One bool per consecutive pair: did the lr change there (beyond float noise)?"""
    if len(lr) < 2:
        return np.zeros(0, bool)
    scale = np.maximum(np.abs(lr[1:]), np.abs(lr[:-1]))
    return np.abs(np.diff(lr)) > RELATIVE_TOLERANCE * scale


def _is_range(lr: np.ndarray, changed: np.ndarray) -> bool:
    if len(lr) < RANGE_MIN_POINTS:
        return False
    never_falls = bool(np.all(np.diff(lr) >= -RELATIVE_TOLERANCE * np.abs(lr[:-1])))
    decades = math.inf if lr[0] <= 0 else math.log10(lr[-1] / lr[0]) if lr[-1] > 0 else -math.inf
    return never_falls and decades >= RANGE_MIN_DECADES and changed.mean() >= RANGE_CHANGE_SHARE


def _range_reason(step: np.ndarray, lr: np.ndarray) -> str:
    shape = "geometrically" if _is_geometric(step, lr) else "(not geometrically)"
    return f"lr rises {shape} from {lr[0]:.4g} to {lr[-1]:.4g} over steps {int(step[0])}-{int(step[-1])}"


def _is_geometric(step: np.ndarray, lr: np.ndarray) -> bool:
    """lre = log10(lr) a straight line in step (lr = 10**linspace)."""
    if np.any(lr <= 0):
        return False
    lre = np.log10(lr)
    x = step.astype(np.float64)
    residual = lre - np.polyval(np.polyfit(x, lre, 1), x)
    spread = np.sum((lre - lre.mean()) ** 2)
    return bool(spread > 0 and 1.0 - np.sum(residual**2) / spread >= GEOMETRIC_R2)


def _other_reason(lr: np.ndarray, n_changes: int) -> str:
    peak = int(np.argmax(lr))
    if 0 < peak < len(lr) - 1:
        shape = f"rises to {lr[peak]:.4g} then falls to {lr[-1]:.4g} (warm-up then decay?)"
    elif lr[-1] < lr[0]:
        shape = f"falls smoothly from {lr[0]:.4g} to {lr[-1]:.4g}"
    else:
        shape = f"rises from {lr[0]:.4g} to {lr[-1]:.4g}, but not at nearly every step or not through a decade"
    return f"lr {shape}, changing at {n_changes} logged steps: neither a range test nor piecewise constant"


def _lre(lr: float) -> float:
    return math.log10(lr) if lr > 0 else -math.inf
