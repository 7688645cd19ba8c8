"""The lrs to train against each other (the range test's suggestions, or your own), and the one check of lrs and seeds.

    candidates = prove_candidates(pick, extra_lrs=[0.003])   # name, suggested_by, lr, lre: one row per candidate
    candidates = grid_candidates([1e-3, 3e-3, 1e-2])         # a user's own lrs, named by their value
    lrs = check_lrs(lrs, who="prove")                         # floats > 0; lists, tuples, numpy arrays and scalars
    seeds = check_seeds(seeds, who="prove")                   # distinct whole numbers

Candidates (`SUGGESTERS`, in priority order): the min-loss exponent (the seed's pick), fastai's
"minimum" (min-loss lr / 10), steepest, valley, and both ends of the pick's CI; suggestions within
`MERGE_DECADES` of an earlier one merge into it (its lr, named by all their suggesters).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.pick import FASTAI_MINIMUM_DECADES
from lrscan.pipeline.errors import LrscanError

SUGGESTERS = ("min_loss", "fastai_minimum", "steepest", "valley", "ci_low", "ci_high")
PICK = "min_loss"  # the suggester whose lr a user gets without proving: the reference of every comparison
USER = "user"  # the name of an lr given with --prove-lrs / extra_lrs
MERGE_DECADES = 0.1


def check_lrs(lrs: Any, who: str = "lrs") -> tuple[float, ...]:
    """`lrs` as floats, each finite and > 0, or one line naming the first bad one (`who` names the caller).

    A list, tuple or numpy array of numbers, or one number (a numpy float too); bools and text are refused.
    """
    if isinstance(lrs, (numbers.Real, np.number)) and not isinstance(lrs, (bool, np.bool_)):
        lrs = [lrs]
    if isinstance(lrs, np.ndarray):
        lrs = lrs.ravel().tolist()
    if isinstance(lrs, (str, bytes)) or not isinstance(lrs, Iterable):
        raise LrscanError(f"{who}: lrs={lrs!r}: a list of learning rates, e.g. [1e-3, 3e-3, 1e-2]")
    lrs = list(lrs)
    if not lrs:
        raise LrscanError(f"{who}: lrs=[]: give at least one learning rate, e.g. [1e-3, 3e-3, 1e-2]")
    for lr in lrs:
        if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (numbers.Real, np.number)) or not (
                math.isfinite(float(lr)) and float(lr) > 0):
            raise LrscanError(f"{who}: lrs={lrs!r}: {lr!r} is not a learning rate (a positive number, e.g. 0.003)")
    return tuple(float(lr) for lr in lrs)


def check_seeds(seeds: Any, who: str = "seeds") -> tuple[int, ...]:
    """`seeds` as distinct ints (a list, tuple, range or numpy array of whole numbers), or one line saying why not."""
    if isinstance(seeds, np.ndarray):
        seeds = seeds.ravel().tolist()
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise LrscanError(f"{who}: seeds={seeds!r}: a list of whole numbers, e.g. [1, 2, 3]")
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, (bool, np.bool_)) or not isinstance(s, (numbers.Real, np.number))
           or not float(s).is_integer()]
    if bad:
        raise LrscanError(f"{who}: seeds={seeds!r}: {bad[0]!r} is not a whole number")
    out = tuple(int(s) for s in seeds)
    if not out or len(set(out)) != len(out):
        raise LrscanError(f"{who}: seeds={list(out)!r}: need at least one seed, none repeated")
    return out


def suggestions_of(pick: Any) -> dict[str, float]:
    """Suggester -> lre, from an `ExponentPick` or its summary (summary.json's best_lre, best_lre_ci, ...)."""
    get = pick.get if isinstance(pick, Mapping) else lambda k: getattr(pick, k, None)
    best = get("best_lre")
    if best is None or not math.isfinite(float(best)):
        raise LrscanError("the range test gave no pick (best_lre): nothing to prove")
    ci = get("best_lre_ci") or (math.nan, math.nan)
    found = {"min_loss": best, "fastai_minimum": float(best) - FASTAI_MINIMUM_DECADES, "steepest": get("steepest_lre"),
             "valley": get("valley_lre"), "ci_low": ci[0], "ci_high": ci[1]}
    return {k: float(v) for k, v in found.items() if v is not None and math.isfinite(float(v))}


def prove_candidates(pick: Any, extra_lrs: Iterable[float] = (), *, merge_decades: float = MERGE_DECADES
                     ) -> pd.DataFrame:
    """The lrs to train against each other: one row per candidate (name, suggested_by, lr, lre), by lre.

    `pick`: an `analysis.pick.ExponentPick` or the range report's summary. `extra_lrs`: the user's own
    lrs, named ``user``. A suggestion within `merge_decades` of one earlier in `SUGGESTERS` order
    (the min-loss pick first, the user's lrs last) joins it: the candidate keeps the first one's lr
    and its name, and ``suggested_by`` lists them all.
    """
    proposals = list(suggestions_of(pick).items())
    extra = list(extra_lrs) if not isinstance(extra_lrs, np.ndarray) else extra_lrs.ravel().tolist()
    proposals += [(USER, math.log10(lr)) for lr in (check_lrs(extra, "prove lrs") if extra else ())]
    kept: list[dict[str, Any]] = []
    for name, lre in proposals:
        near = [c for c in kept if abs(c["lre"] - lre) < merge_decades - 1e-12]
        if near:
            min(near, key=lambda c: abs(c["lre"] - lre))["by"].append(name)
        else:
            kept.append({"lre": lre, "by": [name]})
    rows = []
    for c in kept:
        name = c["by"][0] if c["by"][0] != USER else f"{USER}_{10 ** c['lre']:.3g}"
        rows.append({"name": name, "suggested_by": ", ".join(dict.fromkeys(c["by"])), "lr": 10.0 ** c["lre"],
                     "lre": c["lre"]})
    return pd.DataFrame(rows).sort_values("lre", ignore_index=True)


def grid_candidates(lrs: Iterable[float]) -> pd.DataFrame:
    """Candidates of a user's own lr grid: each distinct lr, named by its value (``lr=0.003``)."""
    lrs = sorted({float(lr) for lr in lrs})
    return pd.DataFrame({"name": [f"lr={lr:.3g}" for lr in lrs], "suggested_by": "grid", "lr": lrs,
                         "lre": np.log10(lrs)})
