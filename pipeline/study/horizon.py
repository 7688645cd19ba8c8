"""The run a proof is for: its length (the horizon, in steps) and its lr schedule, as the trainer's fields.

    schedule = check_schedule(StepDecay(at=(9000,), factors=(0.1,)), horizon=12000, where="prove")
    schedule.fields(peak_lr=0.3)   # {"schedule": "step", "decay_steps": (9000,), "decay_lrs": (0.03,)}
    schedule.text()                # "lr x 0.1 at step 9000"
    check_schedule("constant", horizon=12000, where="prove").fields(0.3)   # {"schedule": "constant"}

The best lr depends on both (docs/prove.md): the best constant lr falls roughly as length^-0.5, and a
step decay moves it up again, so a candidate is proven only at the length and schedule it will train
with. A schedule is given as "constant" (or None), a `StepDecay`, a mapping {"at": [9000], "factors":
[0.1]}, or a list of (step, factor) pairs [(9000, 0.1)]. A step is absolute, or a fraction of the
horizon when it is a float in (0, 1) (0.75: three quarters in); a factor multiplies the peak lr, each
smaller than the one before, so each boundary lowers the lr. The lr at a step never depends on the
length, so a run of this schedule stopped early is the same run's beginning (what lets a short run be
continued to the full length).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrscan.pipeline.errors import LrscanError

CONSTANT = "constant"


@dataclass(frozen=True)
class StepDecay:
    """The peak lr until `at[0]`, then peak lr x factors[0] until `at[1]`, ...; `at` absolute steps, increasing."""

    at: tuple[int, ...] = ()
    factors: tuple[float, ...] = ()

    @property
    def constant(self) -> bool:
        return not self.at

    def fields(self, peak_lr: float) -> dict[str, Any]:
        """The trainer's schedule fields for this schedule at `peak_lr` (TrainConfig: schedule, decay_*)."""
        if self.constant:
            return {"schedule": CONSTANT}
        return {"schedule": "step", "decay_steps": tuple(self.at),
                "decay_lrs": tuple(float(peak_lr) * f for f in self.factors)}

    def text(self) -> str:
        """The schedule in words: "constant", or "lr x 0.1 at step 9000, x 0.01 at step 10500"."""
        if self.constant:
            return CONSTANT
        return ", ".join(f"{'lr ' if i == 0 else ''}x {f:g} at step {b}" for i, (b, f) in
                         enumerate(zip(self.at, self.factors)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": CONSTANT if self.constant else "step", "at": list(self.at), "factors": list(self.factors),
                "text": self.text()}


def check_horizon(horizon: Any, *, where: str) -> int:
    """The length of the run the proof is for, in steps: a whole number >= 1 (numpy ints too)."""
    if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise LrscanError(f"{where}: horizon={horizon!r}: the length of the run you will train, a whole number of "
                          f"steps >= 1")
    return int(horizon)


def check_schedule(schedule: Any, *, horizon: int, where: str) -> StepDecay:
    """The user's schedule, checked against the horizon; one line naming the cause when it is not one."""
    if schedule is None or (isinstance(schedule, str) and schedule.strip().lower() == CONSTANT):
        return StepDecay()
    if isinstance(schedule, StepDecay):
        pairs = list(zip(schedule.at, schedule.factors))
        if len(schedule.at) != len(schedule.factors):
            raise LrscanError(f"{where}: schedule={schedule!r}: one factor per decay step")
    elif isinstance(schedule, Mapping):
        extra = sorted(set(schedule) - {"at", "factors"})
        at, factors = schedule.get("at", ()), schedule.get("factors", ())
        if extra or not isinstance(at, Sequence) or not isinstance(factors, Sequence) or len(at) != len(factors):
            raise LrscanError(f"{where}: schedule={dict(schedule)!r}: expected {{'at': [steps], 'factors': "
                              f"[factors]}}, one factor per step, e.g. {{'at': [9000], 'factors': [0.1]}}")
        pairs = list(zip(at, factors))
    elif isinstance(schedule, Sequence) and not isinstance(schedule, (str, bytes)) and all(
            isinstance(p, Sequence) and not isinstance(p, (str, bytes)) and len(p) == 2 for p in schedule):
        pairs = [tuple(p) for p in schedule]
    else:
        raise LrscanError(f"{where}: schedule={schedule!r}: expected 'constant', StepDecay(at=..., factors=...), "
                          f"{{'at': [9000], 'factors': [0.1]}} or [(9000, 0.1)] (lr x 0.1 from step 9000)")
    steps, factors = [], []
    for b, f in pairs:
        steps.append(_boundary(b, horizon, schedule, where))
        if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, float, np.integer, np.floating)) or \
                not (0 < float(f) < 1):
            raise LrscanError(f"{where}: schedule={schedule!r}: factor {f!r} is not in (0, 1) (the lr after a decay "
                              f"is the peak lr times it)")
        factors.append(float(f))
    if any(b >= a for a, b in zip(factors, factors[1:])) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise LrscanError(f"{where}: schedule={schedule!r}: steps must increase and factors fall (each decay lowers "
                          f"the lr)")
    return StepDecay(at=tuple(steps), factors=tuple(factors))


def _boundary(b: Any, horizon: int, schedule: Any, where: str) -> int:
    if isinstance(b, (float, np.floating)) and 0 < float(b) < 1:
        return max(1, round(float(b) * horizon))  # a fraction of the horizon
    if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer, float, np.floating)) or \
            not math.isfinite(float(b)) or float(b) != int(b):
        raise LrscanError(f"{where}: schedule={schedule!r}: decay step {b!r} is not a step (a whole number, or a "
                          f"fraction of the horizon in (0, 1))")
    if not 0 < int(b) < horizon:
        raise LrscanError(f"{where}: schedule={schedule!r}: decay step {int(b)} is outside the run (1 .. "
                          f"horizon-1 = {horizon - 1})")
    return int(b)
