"""The search's plan: runs shared until pairs part, like compared with like, Holm, the budget, the tie rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrscan.pipeline.study import search_plan as plan

DECAYS = [((3000, 0.1),), ((3000, 0.01),), ((9000, 0.1),)]
CANDIDATES = [{"lr": lr, "suggested_by": "x"} for lr in (0.05, 0.1, 0.2)]


def test_pairs_share_a_run_until_their_decay_and_rungs_are_the_decay_steps_and_the_horizon():
    pairs = plan.make_pairs(CANDIDATES, DECAYS)
    assert len(pairs) == 9 and pairs[0].name == "lr0.05-x0.1@3000"
    assert plan.rung_lengths(pairs, 12000) == [3000, 9000, 12000]
    assert len({plan.node_of(p, 3000) for p in pairs}) == 3  # one constant run per lr up to the first decay
    at_9000 = {plan.node_of(p, 9000) for p in pairs}
    assert len(at_9000) == 9 and plan.forks_at(at_9000, 3000) == {
        (lr, ((3000, f),)): (lr, ()) for lr in (0.05, 0.1, 0.2) for f in (0.1, 0.01)}
    assert plan.group_of((0.1, ((3000, 0.1),))) == (3000,)


def test_the_fair_cost_carries_one_run_of_each_budget_set_and_counts_each_run_once_from_where_it_is():
    pairs = plan.make_pairs(CANDIDATES[:1], DECAYS)
    lengths = plan.rung_lengths(pairs, 12000)
    trunk = {plan.node_of(pairs[0], 3000)}
    # 3000 -> 9000: the trunk and two parted runs (3 x 6000); at 9000 the two decayed at 3000 are one set (one goes
    # on) and the trunk parts at 9000 into one more: 9000 -> 12000 two runs
    assert plan.fair_cost(trunk, pairs, 3000, lengths, n_seeds=1) == 3 * 6000 + 2 * 3000
    assert plan.fair_cost(trunk, pairs, 3000, lengths, n_seeds=3) == 3 * (3 * 6000 + 2 * 3000)
    # two lrs constant so far: one set, both probed at the next rung (an eighth of it), one of them goes on
    two = plan.make_pairs(CANDIDATES[:2], DECAYS)
    assert plan.fair_cost({plan.node_of(p, 3000) for p in two}, two, 3000, lengths, 1) == (
        6 * 6000 + 2 * (9000 // plan.PROBE_SHARE) + 2 * 3000)


def test_constant_runs_are_probed_with_their_lr_decayed_when_there_is_a_choice_between_them():
    pairs = plan.make_pairs(CANDIDATES, DECAYS)
    constant = {plan.node_of(p, 1500) for p in pairs}
    assert plan.probe_factor(DECAYS) == 0.1 and plan.probe_steps(1500) == 1500 // plan.PROBE_SHARE
    assert plan.probes_of(constant, pairs, 1500, 0.1) == {(lr, ((1500, 0.1),)): (lr, ()) for lr in (0.05, 0.1, 0.2)}
    # at a decay step of the grid, a probe is that pair's own run (it goes on from the probe's checkpoint)
    assert set(plan.probes_of(constant, pairs, 3000, 0.1)) == {plan.node_of(p, 3001) for p in pairs
                                                               if p.decay == ((3000, 0.1),)}
    assert plan.probes_of({(0.1, ())}, pairs, 1500, 0.1) == {}  # one constant run: nothing to choose
    decayed = {(0.1, ((3000, 0.1),)), (0.2, ((3000, 0.1),))}
    assert plan.probes_of(decayed, pairs, 9000, 0.1) == {}  # runs decayed already are judged as they are


def test_budget_sets_keep_a_decay_ahead_apart_from_a_decay_done():
    pairs = plan.make_pairs(CANDIDATES[:1], [((3000, 0.1),), ((6000, 0.1),), ((9000, 0.1),)])
    early, trunk, mid = (0.05, ((3000, 0.1),)), (0.05, ()), (0.05, ((6000, 0.1),))
    assert plan.budget_set(early, pairs, 6000) is None and plan.budget_set(trunk, pairs, 6000) == ()
    assert plan.budget_set(mid, pairs, 9000) is None  # decayed at 3000 and at 6000: one set at 9000
    # the regression this guards: at 6000 a run decayed at 3000 is far ahead of the trunk that decays later, and
    # the budget must not weigh them (the trunk's pairs decaying at 6000 and 9000 were dropped for it)
    losses = {early: np.array([2.45, 2.46, 2.44]), trunk: np.array([2.83, 2.84, 2.82])}
    assert plan.budget_drops(losses, set(losses), pairs, 6000, lambda keep: False) == []
    # runs that have applied their whole schedule are weighed together, whatever their decay step
    losses = {early: np.array([2.38, 2.39, 2.37]), mid: np.array([2.33, 2.32, 2.34])}
    assert plan.budget_drops(losses, set(losses), pairs, 9000, lambda keep: len(keep) <= 1) == [early]


def test_holm_tells_apart_only_what_the_paired_seeds_show():
    best = np.array([2.0, 2.1, 2.2, 2.05, 2.15])
    clearly = best + np.array([0.30, 0.31, 0.29, 0.30, 0.32])
    noisy = best + np.array([0.3, -0.2, 0.1, -0.1, 0.05])
    assert plan.holm_worse(best, {"a": clearly, "b": noisy}) == {"a"}
    assert plan.holm_worse(best, {"d": best + np.array([np.nan, 0, 0, 0, 0])}) == {"d"}  # diverged: worse, no test
    assert plan.holm_worse(best[:1], {"a": clearly[:1]}) == set()  # one seed tells nothing apart


def _rung(rng, k: int, n: int, gap_sd: float) -> tuple[dict[int, np.ndarray], set[int]]:
    """k nodes over n seeds with a seed effect shared across them; node 0 ahead by gap_sd sd of the paired
    differences; what a rung would drop against the best by mean."""
    seed = rng.normal(0, 1.0, n)
    losses = {i: seed + rng.normal(0, 0.1, n) + (0.0 if i == 0 else gap_sd * 0.1 * math.sqrt(2)) for i in range(k)}
    best = min(losses, key=lambda i: losses[i].mean())
    return losses, plan.holm_worse(losses[best], {i: v for i, v in losses.items() if i != best})


@pytest.mark.parametrize("k", [2, 4, 6])
@pytest.mark.parametrize("n", [3, 5])
def test_a_rung_seldom_drops_the_truly_best_and_tells_a_real_gap_apart(k, n):
    # thousands of synthetic rungs in a second: with no real difference, dropping one of equals costs nothing,
    # what matters is that the truly best node (ahead by one sd of the paired differences) is dropped at most
    # at about the one-sided level, and that a gap of 3 sd is told apart with 5 seeds
    rng = np.random.default_rng(k * 10 + n)
    dropped_best = sum(0 in _rung(rng, k, n, 1.0)[1] for _ in range(2000)) / 2000
    assert dropped_best <= plan.ALPHA + 0.01
    if n == 5:
        told = sum(len(_rung(rng, k, n, 3.0)[1]) == k - 1 for _ in range(1000)) / 1000
        assert told >= 0.8


def test_a_rung_compares_like_with_like():
    decayed, undecayed = (0.1, ((3000, 0.1),)), (0.1, ())
    losses = {decayed: np.array([2.0, 2.01, 2.02]), undecayed: np.array([2.5, 2.51, 2.52])}
    assert plan.decide(losses, set(losses)) == {decayed: plan.ALIVE, undecayed: plan.ALIVE}


def test_the_budget_drops_the_worst_by_what_the_rung_judges_first():
    lrs = (0.05, 0.1, 0.2, 0.4)
    pairs = plan.make_pairs([{"lr": lr, "suggested_by": "x"} for lr in lrs], DECAYS)
    noise = np.array([0.0, 0.03, -0.03])
    # constant runs, judged by their probes: the worst by mean go first
    losses = {(0.05, ()): 2.3 + noise, (0.1, ()): 2.1 + noise, (0.2, ()): 2.12 - noise,
              (0.4, ()): np.array([2.4, 2.4, 2.4])}
    dropped = plan.budget_drops(losses, set(losses), pairs, 3000, lambda keep: len(keep) <= 2)
    assert dropped == [(0.4, ()), (0.05, ())]
    decayed = {(0.1, ((3000, 0.1),)): np.array([2.0] * 3), (0.1, ((3000, 0.01),)): np.array([2.1] * 3)}
    assert plan.budget_drops(decayed, set(decayed), pairs, 9000, lambda keep: len(keep) <= 1) == [
        (0.1, ((3000, 0.01),))]
    # the bench's small MLP at step 250: probes 0.235 5.5801 and 0.47 5.5649 (3 seeds cannot order them), at step 125
    # 7.1772 and 7.2764; over both rungs 0.235 read better, and is the better at the horizon (2.6637 against 2.7419)
    close = {(0.235, ()): np.array([5.58] * 3), (0.47, ()): np.array([5.565] * 3)}
    over_rungs = {(0.235, ()): (7.1772 + 5.5801) / 2, (0.47, ()): (7.2764 + 5.5649) / 2}
    assert plan.budget_drops(close, set(close), pairs, 250, lambda keep: len(keep) <= 1, over_rungs) == [(0.47, ())]
    assert plan.budget_drops(close, set(close), pairs, 250, lambda keep: len(keep) <= 1) == [(0.235, ())]


def test_ties_at_the_horizon_go_to_the_largest_tied_lr():
    a, b, c = (plan.Pair(lr, ((9000, 0.1),), "x") for lr in (0.1, 0.2, 0.4))
    noise = np.array([0.01, -0.02, 0.015])
    chosen, status = plan.final_choice({a: 2.30 + noise, b: 2.31 - noise, c: np.array([2.6, 2.62, 2.61])})
    assert chosen == b and status == {a: plan.TIED, b: plan.WON, c: plan.TOLD_WORSE}
    assert plan.TIE_RULE == "largest_tied_lr" and "largest peak lr" in plan.TIE_RULE_TEXT
    assert math.isinf(plan._mean([np.inf, 1.0]))
