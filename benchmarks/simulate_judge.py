"""The judge's error rates, power and each tie rule's regret, measured by simulating `analysis.decide.decide`.

    python benchmarks/simulate_judge.py [--experiments 20000] [--seed 0]

Prints three tables (docs/prove-statistics.md shows them): how often "beats the pick" is claimed
under no real difference (K = 2..6 candidates, 3 and 5 seeds); how often a real gap of 3 sd of
the paired differences is told apart; and the mean regret of each rule in `analysis.decide.RULES`
on loss-vs-lr bowls, where the rule decides among the candidates that are not told apart.

The bowls: K = 5 candidates 0.25 decade apart around the pick (the middle one); the true loss is
curvature * (lre - best)^2 with the best lre drawn uniformly over the candidates' span; each run
adds a seed effect shared by every candidate (sd 3) and its own noise, whose sd grows with the lr
(x1 at the lowest candidate to x`--noise-growth` at the highest: large lrs train less steadily).
Losses and regrets are in units of the paired differences' sd at the lowest lr. The bowls come
twice: symmetric, and 3x steeper above the best lr (as a loss climbs towards divergence). A fifth
column, not one of the rules, picks among the same contenders the lowest value of a quadratic in
lre fitted through the candidates' means (as Bjorck et al. locate an optimum).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from lrscan.analysis.decide import RULES, TOLD_APART, decide


def null_and_power(rng: np.random.Generator, n: int) -> list[str]:
    lines = ["| K | beats the pick, no real difference, 3 seeds | same, 5 seeds | told apart, gap 3 sd, 5 seeds |",
             "|---|---|---|---|"]
    for k in range(2, 7):
        rates = []
        for s, gap in ((3, 0.0), (5, 0.0), (5, 3.0)):
            x = rng.normal(0, 3.0, (n, 1, s)) + rng.normal(0, 1 / math.sqrt(2), (n, k, s))
            x[:, 1, :] -= gap
            d = decide(x, pick=0)
            rates.append(d.beats.mean() if gap == 0 else ((d.status[:, 1] == TOLD_APART) & (d.diff[:, 1] < 0)).mean())
        lines.append(f"| {k} | {rates[0]:.2%} | {rates[1]:.2%} | {rates[2]:.1%} |")
    return lines


def regrets(rng: np.random.Generator, n: int, growth: float) -> list[str]:
    k, spacing = 5, 0.25
    lre = (np.arange(k) - k // 2) * spacing
    noise = np.linspace(1.0, growth, k) / math.sqrt(2)
    design = np.stack([lre ** 2, lre, np.ones(k)], 1)  # a quadratic in lre through the candidates' means
    names = [*RULES, "quadratic fit"]
    lines = ["| bowl | curvature (sd per decade^2) | seeds | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for shape, steeper in (("symmetric", 1.0), ("3x steeper above the best", 3.0)):
        totals = dict.fromkeys(names, 0.0)
        for curvature in (4.0, 16.0, 64.0):
            for s in (3, 5):
                best = rng.uniform(lre[0], lre[-1], (n, 1))
                away = lre[None, :] - best
                truth = curvature * away ** 2 * np.where(away > 0, steeper, 1.0)           # (n, k)
                x = (truth[..., None] + rng.normal(0, 3.0, (n, 1, s))
                     + rng.normal(0, 1, (n, k, s)) * noise[None, :, None])
                row = []
                for rule in names:
                    if rule in RULES:
                        chosen = decide(x, lrs=10.0 ** lre, pick=k // 2, rule=rule).chosen
                    else:  # the same contenders as the rules, the lowest value of the fitted quadratic among them
                        d = decide(x, lrs=10.0 ** lre, pick=k // 2, rule="lowest_mean")
                        fitted = (d.mean @ np.linalg.pinv(design).T) @ design.T
                        tied = np.isin(d.status, (0, 2, 3))
                        contenders = np.where(d.beats[:, None], (d.status == TOLD_APART) & (d.diff < 0), tied)
                        chosen = np.argmin(np.where(contenders, fitted, np.inf), 1)
                    regret = (truth[np.arange(n), chosen] - truth.min(1)).mean()
                    totals[rule] += regret / 6
                    row.append(f"{regret:.3f}")
                lines.append(f"| {shape} | {curvature:g} | {s} | " + " | ".join(row) + " |")
        lines.append(f"| {shape} | mean | | " + " | ".join(f"**{totals[r]:.3f}**" for r in names) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiments", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-growth", type=float, default=2.0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()
    print("\n".join(null_and_power(rng, args.experiments)))
    print()
    print("\n".join(regrets(rng, args.experiments, args.noise_growth)))
    print(f"\n{args.experiments} experiments per cell, {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
