"""The decision over paired seeds, for E experiments at once: statuses against the reference, Holm, the rule.

    d = decide(losses, present, diverged, lrs, pick, alpha=0.05, rule=RULE)   # losses: (E, K, S) or (K, S)
    d.status, d.diff, d.ci_low, d.ci_high, d.p_holm, d.detectable    # (E, K): each candidate vs the reference
    d.chosen, d.beats                                                 # (E,): the chosen index, told apart as better

The numeric core of `analysis.judge` (which adds frames, names and words), vectorised so the
simulation in tests/analysis/test_decide.py runs the very same function on thousands of synthetic
experiments in seconds. Hand-written rather than scipy's `ttest_rel` + statsmodels' `multipletests`:
those take one experiment at a time (and statsmodels is not a dependency); scipy gives the t law.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lrscan.pipeline.errors import LrscanError

ALPHA = 0.05  # two-sided, family-wise: a false "beats the pick" at most ALPHA / 2
RULES = {
    "upper_bound": "the lowest upper 95% bound of the mean loss (mean + t * sd / sqrt(seeds))",
    "lowest_mean": "the lowest mean loss",
    "lower_lr": "the lowest lr",
    "pick": "the pick itself while nothing beats it (else the lowest mean of those that do)",
}
RULE = "lowest_mean"  # chosen by the simulation in docs/prove-statistics.md (the lowest regret of RULES)
# statuses of a candidate's comparison with the reference, codes of `decide`
REFERENCE, TOLD_APART, TIED, TOO_FEW, DIVERGED, CONTRADICTED = range(6)
STATUS = {REFERENCE: "reference", TOLD_APART: "told apart", TIED: "tied", TOO_FEW: "too few seeds",
          DIVERGED: "diverged", CONTRADICTED: "ranking contradicted by the pairing"}


@dataclass(frozen=True)
class Decision:
    """`decide`'s arrays: E experiments x K candidates (the comparison of each with the reference)."""

    mean: np.ndarray          # (E, K) mean over the seeds every candidate has; inf when diverged
    reference: np.ndarray     # (E,) the pick, or the leader where there is none (or it diverged)
    on_pick: np.ndarray       # (E,) True where the reference is the pick
    diff: np.ndarray          # (E, K) paired mean of (candidate - reference) over the seeds both have
    ci_low: np.ndarray
    ci_high: np.ndarray
    ci_level: np.ndarray      # the level the Holm-adjusted test used: the CI excludes 0 iff told apart
    p: np.ndarray
    p_holm: np.ndarray
    n_pairs: np.ndarray       # (E, K) seeds in the comparison
    detectable: np.ndarray    # (E, K) the smallest gap these seeds would have told apart (the CI's half-width)
    status: np.ndarray        # (E, K) REFERENCE, TOLD_APART, TIED, TOO_FEW, DIVERGED, CONTRADICTED
    chosen: np.ndarray        # (E,) the candidate chosen, -1 when every one diverged
    beats: np.ndarray         # (E,) the chosen one is told apart from the pick, better


def decide(losses: Any, present: Any = None, diverged: Any = None, lrs: Any = None, pick: Any = -1, *,
           alpha: float = ALPHA, rule: str = RULE) -> Decision:
    """The decision for E experiments at once: `losses` (E, K, S) or (K, S), candidate x seed.

    `present`: which (candidate, seed) ran (default: not NaN); `diverged`: which runs diverged
    (default: present and not finite); `lrs`: (K,) or (E, K), for the rule and ties (default: order);
    `pick`: the pick's index, per experiment or one for all (-1: none, the leader is the reference).
    """
    from scipy import stats  # here: scipy.stats costs ~1.5 s, and the loader imports HELD_OUT_KEYS from here

    if rule not in RULES:
        raise LrscanError(f"rule={rule!r}: one of {', '.join(RULES)}")
    if not 0 < alpha < 1:
        raise LrscanError(f"alpha={alpha!r}: a level between 0 and 1, e.g. 0.05")
    x = np.asarray(losses, dtype="float64")
    x = x[None] if x.ndim == 2 else x
    E, K, S = x.shape
    present = ~np.isnan(x) if present is None else np.broadcast_to(np.asarray(present, bool), x.shape)
    diverged = present & ~np.isfinite(x) if diverged is None else np.broadcast_to(np.asarray(diverged, bool), x.shape)
    lrs = np.broadcast_to(np.arange(K, dtype="float64") if lrs is None else np.asarray(lrs, "float64"), (E, K))
    pick = np.broadcast_to(np.asarray(pick, dtype=np.int64), (E,))
    ok = present & ~diverged
    xz = np.where(ok, x, 0.0)
    out_of_race = (present & diverged).any(-1)                       # (E, K)
    shared = present.all(1)                                           # (E, S) seeds every candidate has
    n_shared = shared.sum(-1)[:, None]                                # (E, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (xz * shared[:, None, :]).sum(-1) / n_shared          # (E, K)
        own_sd = np.sqrt((np.where(shared[:, None, :], xz - mean[..., None], 0.0) ** 2).sum(-1) / (n_shared - 1))
    mean = np.where(out_of_race, np.inf, mean)
    rows, cols = np.arange(E)[:, None], np.arange(K)[None, :]
    leader = np.lexsort((lrs, np.nan_to_num(mean, nan=np.inf)), axis=-1)[:, 0]  # ties to the lower lr
    on_pick = (pick >= 0) & ~out_of_race[np.arange(E), np.clip(pick, 0, K - 1)]
    ref = np.where(on_pick, pick, leader)

    # every pair (i, j), paired over the seeds both ran: d = x_i - x_j
    both = ok[:, :, None, :] & ok[:, None, :, :]                     # (E, K, K, S)
    n = both.sum(-1)
    d = np.where(both, xz[:, :, None, :] - xz[:, None, :, :], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dbar = d.sum(-1) / n
        se = np.sqrt((np.where(both, d - dbar[..., None], 0.0) ** 2).sum(-1) / (n - 1) / n)
        t = np.abs(dbar) / se
    p = np.where(se > 0, 2 * stats.t.sf(t, np.maximum(n - 1, 1)), np.where(dbar == 0, 1.0, 0.0))
    testable = (n >= 2) & ~out_of_race[:, :, None] & ~out_of_race[:, None, :] & (cols[..., None] != cols[:, None, :])

    # Holm over the family: the comparisons with the pick, or every pair when the reference is the leader
    iu, ju = np.triu_indices(K, 1)
    with_ref = (iu[None] == ref[:, None]) | (ju[None] == ref[:, None])
    family = testable[:, iu, ju] & (with_ref | ~on_pick[:, None])    # (E, M)
    pf = np.where(family, p[:, iu, ju], np.inf)
    order = np.argsort(pf, axis=1, kind="stable")
    ps = np.take_along_axis(pf, order, 1)
    m = family.sum(1, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf (no comparison) x 0 past the family's end: NaN, dropped below
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(ps.shape[1])[None]) * ps), axis=1)
    padj_flat = np.empty_like(adj)
    np.put_along_axis(padj_flat, order, np.where(np.isfinite(ps), adj, np.nan), 1)
    padj = np.full((E, K, K), np.nan)
    padj[:, iu, ju] = padj_flat
    padj[:, ju, iu] = padj_flat

    # each candidate against the reference
    pick_ij = (rows, cols, ref[:, None])
    diff, n_pairs, s, p_c, padj_c = dbar[pick_ij], n[pick_ij], se[pick_ij], p[pick_ij], padj[pick_ij]
    with np.errstate(invalid="ignore", divide="ignore"):
        level_alpha = np.where(padj_c > 0, alpha * p_c / padj_c, alpha)  # the CI is told apart iff p_holm <= alpha
        half = stats.t.ppf(1 - level_alpha / 2, np.maximum(n_pairs - 1, 1)) * s
    half = np.where(s > 0, half, 0.0)
    is_ref = cols == ref[:, None]
    with np.errstate(invalid="ignore"):  # inf - inf where the reference diverged too: no sign, no contradiction
        contradicted = np.sign(diff) * np.sign(mean - mean[np.arange(E), ref][:, None]) < 0
    status = np.select([is_ref, out_of_race, n_pairs < 2, contradicted, padj_c <= alpha],
                       [REFERENCE, DIVERGED, TOO_FEW, CONTRADICTED, TOLD_APART], TIED)
    tested = (status == TOLD_APART) | (status == TIED) | (status == CONTRADICTED)

    # the chosen one: among those that beat the pick, or else the reference and those tied with it
    better = (status == TOLD_APART) & (diff < 0)
    beats = on_pick & better.any(-1)
    contenders = np.where(beats[:, None], better, is_ref | (status == TIED) | (status == TOO_FEW))
    contenders &= ~out_of_race
    with np.errstate(invalid="ignore"):
        bound = mean + stats.t.ppf(0.975, np.maximum(n_shared - 1, 1)) * own_sd / np.sqrt(n_shared)
    value = {"upper_bound": np.where(n_shared >= 2, bound, mean), "lowest_mean": mean, "lower_lr": lrs,
             "pick": np.where(beats[:, None] | ~on_pick[:, None], mean, np.where(is_ref, -np.inf, np.inf))}[rule]
    value = np.where(contenders, np.nan_to_num(value, nan=np.inf), np.inf)
    chosen = np.lexsort((lrs, np.where(contenders, 0, 1), value), axis=-1)[:, 0]
    chosen = np.where(contenders.any(-1), chosen, -1)
    return Decision(mean=mean, reference=ref, on_pick=on_pick, diff=np.where(out_of_race, np.nan, diff),
                    ci_low=np.where(tested, diff - half, np.nan), ci_high=np.where(tested, diff + half, np.nan),
                    ci_level=np.where(tested, 1 - level_alpha, np.nan), p=np.where(tested, p_c, np.nan),
                    p_holm=np.where(tested, padj_c, np.nan), n_pairs=n_pairs,
                    detectable=np.where(tested, half, np.nan), status=status, chosen=chosen,
                    beats=beats & (np.take_along_axis(better, np.maximum(chosen, 0)[:, None], 1)[:, 0]))
