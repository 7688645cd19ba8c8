"""Learning-rate schedules as small pure functions: the lr of every step, computed up front.

- range:    lre = linspace(lre_min, lre_max, steps), lr = 10**lre  (the seed's range test; both ends included);
            with step_mode="linear", lr = linspace(10**lre_min, 10**lre_max, steps) (torch-lr-finder's and
            Lightning's linear mode; lre is still log10 of each lr, so the pick reads it in lre as ever)
- step:     lr before the first decay step, then decay_lrs[k] from decay_steps[k] on
            (`lr = 0.1 if i < 100000 else 0.01` is decay_steps=[100000], decay_lrs=[0.01], lr=0.1)
- constant: lr at every step

Also the range test's stop rule on the climbing loss (`ClimbStop`), kept here beside the schedule it
belongs to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def range_lres(lre_min: float, lre_max: float, steps: int) -> np.ndarray:
    # linspace in float64 hits both ends exactly: lre[0] == lre_min, lre[-1] == lre_max
    return np.linspace(lre_min, lre_max, steps, dtype=np.float64)


def range_lrs(lre_min: float, lre_max: float, steps: int, step_mode: str = "exp") -> np.ndarray:
    """The range test's lrs: exponential (evenly spaced in lre) or linear (evenly spaced in lr); both ends included."""
    with np.errstate(over="ignore"):  # an lre past ~308 is an inf lr: the run diverges there, as it should
        if step_mode == "exp":
            return np.power(10.0, range_lres(lre_min, lre_max, steps))
        if step_mode == "linear":
            return np.linspace(10.0 ** lre_min, 10.0 ** lre_max, steps, dtype=np.float64)
    raise ValueError(f"unknown step_mode {step_mode!r}")


def step_lrs(lr: float, decay_steps: tuple[int, ...], decay_lrs: tuple[float, ...], steps: int) -> np.ndarray:
    lrs = np.full(steps, lr, dtype=np.float64)
    for boundary, value in zip(decay_steps, decay_lrs):
        lrs[boundary:] = value  # from the boundary step on (step `boundary` itself already decayed)
    return lrs


def schedule_lrs(schedule: str, steps: int, *, lre_min: float, lre_max: float, lr: float,
                 decay_steps: tuple[int, ...], decay_lrs: tuple[float, ...],
                 step_mode: str = "exp") -> tuple[np.ndarray, np.ndarray]:
    """(lr, lre) for steps 0..steps-1; lre is log10 of the lr actually used."""
    if schedule == "range":
        if step_mode == "exp":  # the lres themselves, not log10 of their powers: lre_min and lre_max exactly
            lres = range_lres(lre_min, lre_max, steps)
            with np.errstate(over="ignore"):
                return np.power(10.0, lres), lres
        lrs = range_lrs(lre_min, lre_max, steps, step_mode)
    elif schedule == "step":
        lrs = step_lrs(lr, decay_steps, decay_lrs, steps)
    elif schedule == "constant":
        lrs = np.full(steps, lr, dtype=np.float64)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return lrs, np.log10(lrs)


@dataclass
class ClimbStop:
    """Stop a range test once the loss has turned up, as the seed study says to.

    Smoothing is fastai's bias-corrected EMA: avg = beta*avg + (1-beta)*loss, smooth = avg / (1 - beta**n)
    with n the number of losses seen (Lightning's version is one step off and reads ~0.5x the loss at
    first). The rule fires when smooth > factor * best smooth, but only from `burn_in_steps` on, so an
    early spike cannot end the test. A ratio rule means nothing when losses can be <= 0 (fastai #962):
    then the rule compares distances above the best instead, `smooth - best > (factor - 1) * |best|`,
    which equals the ratio rule for positive losses and never fires on a flat negative curve.
    """

    beta: float = 0.98
    factor: float = 4.0
    burn_in_steps: int = 100
    avg: float = 0.0
    count: int = 0
    best: float = math.inf

    def update(self, step: int, loss: float) -> tuple[float, bool]:
        """Feed the raw loss of `step`; returns (smoothed loss, whether to stop here)."""
        self.avg = self.beta * self.avg + (1.0 - self.beta) * loss
        self.count += 1
        smooth = self.avg / (1.0 - self.beta ** self.count)
        if not math.isfinite(smooth):
            return smooth, False  # the non-finite rule owns this case
        climbed = (step >= self.burn_in_steps and self.best < math.inf
                   and smooth - self.best > (self.factor - 1.0) * abs(self.best))
        if smooth < self.best:
            self.best = smooth
        return smooth, climbed

    def state(self) -> dict:
        return {"avg": self.avg, "count": self.count, "best": self.best}

    def load(self, state: dict) -> None:
        self.avg, self.count, self.best = float(state["avg"]), int(state["count"]), float(state["best"])
