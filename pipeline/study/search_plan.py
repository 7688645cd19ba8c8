"""The study's one search over (peak lr, decay) pairs, as a plan: which runs train to which step, who is dropped.

    pairs = make_pairs(candidates, decays)            # every peak lr x every decay option of the grid
    lengths = rung_lengths(pairs, horizon)            # each decay step, then the horizon (12000 in the demo)
    node_of(pair, 6000)                               # the run a pair is at 6000: pairs share it until they differ
    statuses = decide(losses, alive, length, seeds)   # a rung's drops: told apart as worse, then the budget's

Pairs that train the same lrs up to a step are one run up to it: (0.1, x0.1 at 3000) and (0.1, x0.1 at
9000) are the same run (a "node") until step 3000. So the search trains one run per node and seed; at a
decay step the run that reached it is continued twice (or more): on as it was, and, from its checkpoint
at that step, with the lr decayed. Rungs are the decay steps and the horizon: at each rung every live node
has trained to it and is judged by its held-out loss there, paired over the seeds.

A rung compares like with like: nodes whose lr has decayed at the same steps (a run just decayed is
always ahead of one that has not yet, whatever the final order). Within such a group a node told apart as
worse than the group's best (paired one-sided t test, Holm over the group, `ALPHA`) is dropped with its
pairs. Then the budget: while the cheapest fair way on (`fair_cost`: every later rung keeps one node of
each budget set) costs more than the budget left, one node of the largest budget set is dropped, the worst by
mean first. A budget
set is a group of nodes whose pairs still have a decay ahead (same decay steps so far), or all the nodes
whose pairs have applied their whole schedule ("decayed": compared with each other whatever their decay
steps; each has cashed in its decay). A node that has yet to decay is never weighed against one that has:
when every set is down to one node the budget drops nothing more, and the plan checked at every rung
before makes that the exception (said in the result). At the horizon every pair is complete and all live
ones are compared; when the best is not told apart from the others, `TIE_RULE` decides.

Runs still at a constant lr are judged by **probes** (`probes_of`): at the rung each parts into a short run with its
lr decayed (`PROBE_SHARE`), and the probe's held-out loss is what the rung weighs. A constant-lr loss ranks lrs for
a constant run; every pair decays later, and a decay moves the best lr (up, to about twice, for the makemore MLP on
SGD; not at all for WaveNet on AdamW: docs/prove.md), so the rung measures that move on the model at hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.025  # one-sided: the two-sided 95% level
# when live pairs are still tied at the horizon: the largest peak lr among the pairs tied with the best (measured
# in benchmarks/bench_regret.py: under a decay the loss is flat around the best peak lr and falls off more
# steeply below it than above, so the largest tied lr has the lowest regret there; see docs/prove.md)
TIE_RULE = "largest_tied_lr"
TIE_RULE_TEXT = ("pairs not told apart from the best at the horizon (paired one-sided t at 0.025, Holm) are "
                 "tied; among them the largest peak lr wins, then the lowest mean")
# how far a step decay moves the best peak lr above the best constant lr of a short run: about twice for the makemore
# MLP on SGD (docs/prove.md: 0.35 against 0.155 at demo size), not at all for WaveNet on AdamW. A prior, used only
# before anything is measured: the first rung's candidates reach past the range test's pick by this much. From the
# first rung on, probes measure the move on the model at hand
DECAY_SHIFT = 2.0
# a probe: the constant run at a rung continued with its lr decayed (the grid's mildest first factor) for 1/PROBE_SHARE
# of the rung's length. Measured (docs/prove.md): 1/8 ranks as the horizon does on both the demo's MLP (0.3098 best
# of 0.045-0.62 after 1500 + 188 steps) and WaveNet (0.005129 best after 125 + 16), for an eighth more run-steps
PROBE_SHARE = 8
ALIVE, TOLD_WORSE, BUDGET, WON, TIED = "alive", "told apart as worse", "dropped for the budget", "won", "tied"

Decay = tuple[tuple[int, float], ...]  # (step, factor of the peak lr), steps increasing


@dataclass(frozen=True)
class Pair:
    """One (peak lr, decay) of the search; `name` says both, `suggested_by` who proposed the lr."""

    lr: float
    decay: Decay
    suggested_by: str

    @property
    def name(self) -> str:
        return f"lr{self.lr:.4g}" + "".join(f"-x{f:g}@{b}" for b, f in self.decay)


Node = tuple[float, Decay]  # a run: its peak lr and the decays it has applied so far


def make_pairs(candidates: Iterable[Mapping], decays: Sequence[Decay]) -> list[Pair]:
    """Every candidate lr (name, suggested_by, lr) with every decay option."""
    return [Pair(float(c["lr"]), tuple(d), str(c["suggested_by"])) for c in candidates for d in decays]


def rung_lengths(pairs: Iterable[Pair], horizon: int) -> list[int]:
    """The steps where the search judges: every decay step (where runs part), then the horizon."""
    return sorted({b for p in pairs for b, _ in p.decay if 0 < b < horizon} | {int(horizon)})


def node_of(pair: Pair, length: int) -> Node:
    """The run `pair` is at `length` steps: its lr and the decays before that step."""
    return pair.lr, tuple((b, f) for b, f in pair.decay if b < length)


def forks_at(nodes: Iterable[Node], previous: int) -> dict[Node, Node]:
    """Nodes that part at `previous` (a decay at that step) -> the run they continue from (its checkpoint there)."""
    out = {}
    for lr, decay in nodes:
        if decay and decay[-1][0] == previous:
            out[(lr, decay)] = (lr, decay[:-1])
    return out


def group_of(node: Node) -> tuple[int, ...]:
    """The steps at which a node's lr decayed: nodes are compared only within a group."""
    return tuple(b for b, _ in node[1])


def next_nodes(alive: Iterable[Node], pairs: Sequence[Pair], length: int, nxt: int) -> set[Node]:
    """The runs the pairs of the live nodes are at the next rung (a node parts into several at a decay step)."""
    live = set(alive)
    return {node_of(p, nxt) for p in pairs if node_of(p, length) in live}


def budget_set(node: Node, pairs: Sequence[Pair], length: int) -> tuple[int, ...] | None:
    """The set `node` is weighed in by the budget at `length`: None when every pair through it has applied its whole
    schedule (decayed: all such nodes together), else the steps it decayed at (nodes with a decay still ahead)."""
    ahead = any(b >= length for p in pairs if node_of(p, length) == node for b, _ in p.decay)
    return group_of(node) if ahead else None


def probe_steps(length: int) -> int:
    """How long a probe from a rung of `length` steps trains with its lr decayed."""
    return max(1, length // PROBE_SHARE)


def probe_factor(decays: Sequence[Decay]) -> float:
    """The factor a probe decays its lr by: the mildest first decay of the grid's options."""
    return max(d[0][1] for d in decays if d)


def probes_of(nodes: Iterable[Node], pairs: Sequence[Pair], length: int, factor: float) -> dict[Node, Node]:
    """Probe -> the run it parts from, for each run still at a constant lr with a decay ahead at this rung; none when
    fewer than two (one constant run has nothing to be weighed against). A probe is the node that run would be with
    its lr decayed at `length`: where the grid decays there by `factor`, the probe is that pair's own run."""
    constant = sorted(n for n in nodes if not n[1] and budget_set(n, pairs, length) == ())
    if len(constant) < 2:
        return {}
    return {(lr, ((length, factor),)): (lr, decay) for lr, decay in constant}


def fair_cost(keep: Iterable[Node], pairs: Sequence[Pair], length: int, lengths: Sequence[int], n_seeds: int) -> int:
    """Run-steps to carry `keep` to the horizon the cheapest fair way: every later rung keeps one node of each budget
    set (a decay still ahead is never weighed against a decay done); every run trains the steps since the rung
    before, and the constant runs at a rung are probed (`probes_of`). Nodes of one set have the same pairs ahead
    (every candidate lr has every decay option), so which one is kept does not change the cost."""
    later = [t for t in lengths if t >= length]
    nodes, cost = set(keep), 0
    for lo, hi in zip(later, later[1:]):
        nodes = next_nodes(nodes, pairs, lo, hi)
        cost += n_seeds * len(nodes) * (hi - lo)
        if hi < later[-1]:
            # the constant runs arriving at that rung are probed before one of them is kept
            cost += n_seeds * len(probes_of(nodes, pairs, hi, 1.0)) * min(probe_steps(hi), later[-1] - hi)
            sets: dict[tuple[int, ...] | None, Node] = {}
            for n in sorted(nodes):
                sets[budget_set(n, pairs, hi)] = n
            nodes = set(sets.values())
    return cost


def holm_worse(best: np.ndarray, others: Mapping[Node, np.ndarray], alpha: float = ALPHA) -> set[Node]:
    """The nodes told apart as worse than `best`: paired one-sided t over the seeds (rows align), Holm over them.
    A node with a non-finite loss (diverged) is worse without a test; fewer than two seeds tell nothing apart."""
    from scipy import stats

    worse: set[Node] = {n for n, v in others.items() if not np.all(np.isfinite(v))}
    pvalues = []
    for n, v in others.items():
        if n in worse:
            continue
        d = np.asarray(v, float) - np.asarray(best, float)
        if len(d) < 2:
            continue
        sd = float(np.std(d, ddof=1))
        if sd == 0.0:
            p = 0.0 if d.mean() > 0 else 1.0
        else:
            p = float(stats.t.sf(d.mean() / (sd / math.sqrt(len(d))), len(d) - 1))
        pvalues.append((p, n))
    pvalues.sort(key=lambda x: x[0])
    m = len(pvalues)
    for j, (p, n) in enumerate(pvalues):
        if p > alpha / (m - j):
            break
        worse.add(n)
    return worse


def decide(losses: Mapping[Node, np.ndarray], alive: set[Node]) -> dict[Node, str]:
    """A rung's verdicts: each live node stays ALIVE or is TOLD_WORSE than its group's best (by mean)."""
    verdict = {n: ALIVE for n in alive}
    groups: dict[tuple[int, ...], list[Node]] = {}
    for n in alive:
        groups.setdefault(group_of(n), []).append(n)
    for members in groups.values():
        best = min(members, key=lambda n: _mean(losses[n]))
        for n in holm_worse(losses[best], {m: losses[m] for m in members if m != best}):
            verdict[n] = TOLD_WORSE
    return verdict


def budget_drops(losses: Mapping[Node, np.ndarray], alive: set[Node], pairs: Sequence[Pair], length: int,
                 fits, probed: Mapping[Node, float] | None = None) -> list[Node]:
    """The nodes to drop, one at a time from the largest budget set (`budget_set`), until `fits(remaining nodes)`:
    the worst by mean of what the rung judges, then the smaller lr of two as bad. Constant runs go by `probed`
    when given: the mean of their probes' means over every rung that probed them so far (`probes_of`). One rung's
    probes on a few seeds often cannot order close runs, and the one that read worse over every probe is the
    safer to drop. A set is never emptied: nodes are weighed only within a set."""
    keep, dropped = set(alive), []
    set_of = {n: budget_set(n, pairs, length) for n in alive}  # a node's set does not change while others go
    probed = probed or {}
    while not fits(keep):
        sets: dict[tuple[int, ...] | None, list[Node]] = {}
        for n in keep:
            sets.setdefault(set_of[n], []).append(n)
        largest = max(sets.items(), key=lambda kv: (len(kv[1]), kv[0] is None, kv[0] or ()))[1]
        if len(largest) == 1:
            break
        worst = max(largest, key=lambda n: (probed.get(n, _mean(losses[n])), -n[0]))
        keep.discard(worst)
        dropped.append(worst)
    return dropped


def final_choice(losses: Mapping[Pair, np.ndarray]) -> tuple[Pair, dict[Pair, str]]:
    """At the horizon: the best pair by mean, the pairs not told apart from it tied, `TIE_RULE` among them."""
    best = min(losses, key=lambda p: _mean(losses[p]))
    keyed = {(p.lr, p.decay): p for p in losses}
    worse = {keyed[n] for n in holm_worse(losses[best], {(p.lr, p.decay): v for p, v in losses.items() if p != best})}
    tied = [p for p in losses if p not in worse]
    chosen = max(tied, key=lambda p: (p.lr, -_mean(losses[p])))
    return chosen, {p: (WON if p == chosen else TIED if p in tied else TOLD_WORSE) for p in losses}


def _mean(v) -> float:
    v = np.asarray(v, float)
    return float(v.mean()) if len(v) and np.all(np.isfinite(v)) else math.inf
