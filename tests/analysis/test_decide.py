"""analysis.decide: the decision's error rates and power, measured by simulation of the real function.

Thousands of synthetic experiments at once (decide is vectorised over them): K candidates x S paired
seeds, a seed effect shared by every candidate (a hard seed is hard at every lr) plus each run's own
noise, the pick being candidate 0. The rates measured here are the ones docs/prove-statistics.md shows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrscan.analysis.decide import RULE, RULES, TOLD_APART, decide
from lrscan.pipeline.errors import LrscanError

E = 4000                                   # experiments per setting
NOMINAL = 0.025                            # a false "beats the pick": half the two-sided family-wise 5%
MC = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / E)  # three Monte Carlo standard errors at the nominal rate


def experiments(rng: np.random.Generator, k: int, s: int, gap_sd: float = 0.0, seed_sd: float = 3.0) -> np.ndarray:
    """(E, k, s) final losses: no real difference, but candidate 1 lower by `gap_sd` sd of the paired differences."""
    run_sd = 1 / math.sqrt(2)  # so a paired difference (two runs' noise) has sd 1
    losses = 2.0 + rng.normal(0, seed_sd, (E, 1, s)) + rng.normal(0, run_sd, (E, k, s))
    losses[:, 1, :] -= gap_sd
    return losses


@pytest.mark.parametrize("seeds", [3, 5])
def test_under_no_real_difference_beats_the_pick_is_claimed_at_most_at_its_nominal_rate(seeds):
    rng = np.random.default_rng(seeds)
    for k in range(2, 7):
        d = decide(experiments(rng, k, seeds), pick=0)
        rate = d.beats.mean()
        assert rate <= NOMINAL + MC, (k, seeds, rate)
        # the claim any comparison makes, either way, stays within the family-wise 5% too
        assert (d.status == TOLD_APART).any(-1).mean() <= 2 * NOMINAL + 2 * MC, (k, seeds)
        if k == 6:
            # the test has teeth: the lowest of 6 means, tested alone against the pick (as before Holm), is
            # claimed far above 2.5% (the winner's curse)
            leader = np.argmin(d.mean, -1)
            p, diff = d.p[np.arange(E), leader], d.diff[np.arange(E), leader]
            assert ((p <= 0.05) & (diff < 0)).mean() > 2 * NOMINAL


def test_a_real_gap_of_three_sd_of_the_paired_differences_is_told_apart_with_five_seeds():
    rng = np.random.default_rng(7)
    for k in range(2, 7):
        d = decide(experiments(rng, k, 5, gap_sd=3.0), pick=0)
        told = (d.status[:, 1] == TOLD_APART) & (d.diff[:, 1] < 0)
        assert told.mean() >= 0.80, (k, told.mean())
        assert (d.beats & (d.chosen == 1)).mean() >= 0.80


def test_without_a_pick_the_leader_is_compared_with_holm_over_every_pair():
    rng = np.random.default_rng(11)
    for k in (3, 6):
        d = decide(experiments(rng, k, 3), pick=-1)
        assert not d.on_pick.any() and (d.reference == np.argmin(d.mean, -1)).all()
        # the leader is the data's choice: still at most 5% of experiments tell any candidate apart from it
        assert (d.status == TOLD_APART).any(-1).mean() <= 2 * NOMINAL + 2 * MC


def test_diverged_runs_and_missing_seeds_in_the_vectorised_core():
    x = np.array([[2.0, 2.1, 2.2], [1.0, np.inf, 1.0], [2.1, 2.2, np.nan]])  # 1 diverged on seed 2; 2 lacks seed 3
    d = decide(x, pick=0)
    assert d.mean[0, 1] == np.inf and d.status[0, 1] == 4 and d.chosen[0] != 1
    assert d.n_pairs[0, 2] == 2 and d.mean[0, 2] == pytest.approx(2.15)  # ranked over seeds 1, 2 (every one ran)
    with pytest.raises(LrscanError, match="rule="):
        decide(x, rule="best")
    with pytest.raises(LrscanError, match="alpha="):
        decide(x, alpha=1.5)


@pytest.mark.parametrize("steeper", [1.0, 3.0])
def test_the_default_rule_has_the_lowest_regret_of_the_rules_on_loss_bowls(steeper):
    # benchmarks/simulate_judge.py's bowls, one cell: 5 candidates 0.25 decade apart, noise doubling with the lr
    rng = np.random.default_rng(3)
    n, lre = 2000, (np.arange(5) - 2) * 0.25
    best = rng.uniform(lre[0], lre[-1], (n, 1))
    away = lre[None, :] - best
    truth = 16 * away ** 2 * np.where(away > 0, steeper, 1.0)
    x = truth[..., None] + rng.normal(0, 3, (n, 1, 3)) + rng.normal(0, 1, (n, 5, 3)) * np.linspace(1, 2, 5)[:, None]
    regret = {rule: (truth[np.arange(n), decide(x, lrs=10.0 ** lre, pick=2, rule=rule).chosen] - truth.min(1)).mean()
              for rule in RULES}
    assert min(regret, key=regret.get) == RULE, regret
