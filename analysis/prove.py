"""Prove the lr: the range test's suggestions trained against each other, judged by held-out loss over paired seeds.

    candidates = prove_candidates(pick, extra_lrs=[0.003])    # name, suggested_by, lr, lre
    finals = final_losses(loaded.steps, loaded.runs)          # one row per constant-lr run: its judged loss
    table = prove_table(finals, candidates)                   # per candidate: losses per seed, mean, paired CI
    decision = prove_decision(table)                          # the winner, and whether it is told from the runner-up

Candidates (`SUGGESTERS`, in priority order): the min-loss exponent (the seed's pick), fastai's
"minimum" (min-loss lr / 10), steepest, valley, and both ends of the pick's CI; suggestions within
`MERGE_DECADES` of an earlier one merge into it (its lr, named by all their suggesters).

Each run is judged by its final held-out loss (the first of `HELD_OUT_KEYS` its summary has), else by
its mean training loss over the last `TAIL_FRAC` of its steps (a task without `evaluate`). Seeds are
paired: the same seed is the same init and batches at every lr, so a candidate's difference to the
winner is measured seed by seed and gets a Student-t interval over those differences. Pure functions
of frames; the study and `python -m analysis` do the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.blocks import SCHEDULE, SEED
from lrscan.analysis.pick import FASTAI_MINIMUM_DECADES
from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError

SUGGESTERS = ("min_loss", "fastai_minimum", "steepest", "valley", "ci_low", "ci_high")
USER = "user"  # the name of an lr given with --prove-lrs / extra_lrs
MERGE_DECADES = 0.1
# held-out losses as lrscan, Lightning (self.log("val_loss")) and the HF Trainer (eval/loss) log them
HELD_OUT_KEYS = (keys.DEV_LOSS, "val_loss", "val/loss", "eval/loss", "eval_loss", "valid_loss", "validation_loss")
TAIL_FRAC = 0.1
TRAIN_TAIL = "train_loss_last_10pct"  # `judged_by` of a run without a held-out loss
CONSTANT = "constant"
TABLE_COLUMNS = ["name", "suggested_by", "lr", "lre", "losses", "seeds", "mean", "diff_to_best", "diff_ci"]


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
    for lr in extra_lrs:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise LrscanError(f"prove lrs: {lr!r} is not a learning rate (a positive number, e.g. 0.003)")
        proposals.append((USER, math.log10(lr)))
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
    """Candidates of a user's own lr grid: each distinct lr, named by its value."""
    lrs = sorted({float(lr) for lr in lrs})
    return pd.DataFrame({"name": [f"lr={lr:.3g}" for lr in lrs], "suggested_by": "grid", "lr": lrs,
                         "lre": np.log10(lrs)})


def final_losses(steps: pd.DataFrame, runs: pd.DataFrame | None = None, *, tail_frac: float = TAIL_FRAC
                 ) -> pd.DataFrame:
    """One row per run: run_id, lr (the one it trained at), seed (NaN when none), loss, judged_by.

    `loss` is the run's final held-out loss (the first of `HELD_OUT_KEYS` in its summary, or the last
    one logged at a step) and `judged_by` that key; a run with none is judged by its mean training
    loss over its last `tail_frac` of steps (``train_loss_last_10pct``). A run that stopped on a
    non-finite loss has loss inf: it trained worst.
    """
    if steps.empty:
        raise LrscanError("no steps: no run to judge")
    by_run = steps.sort_values(["run_id", keys.STEP_COLUMN]).groupby("run_id", observed=True, sort=True)
    out = pd.DataFrame({"lr": by_run[keys.LR].last().astype("float64")})
    summary = (runs.assign(run_id=runs["run_id"].astype(str)).drop_duplicates("run_id").set_index("run_id")
               if runs is not None and not runs.empty else pd.DataFrame(index=out.index.astype(str)))
    out.index = out.index.astype(str)
    summary = summary.reindex(out.index)
    if SEED in summary.columns:
        out[SEED] = pd.to_numeric(summary[SEED], errors="coerce").astype("float64")
    elif SEED in steps.columns:
        out[SEED] = by_run[SEED].first().astype("float64").to_numpy()
    else:
        out[SEED] = np.nan
    out["loss"], out["judged_by"] = np.nan, ""
    for key in HELD_OUT_KEYS:
        column = summary[key] if key in summary.columns else (
            by_run[key].last().set_axis(out.index) if key in steps.columns else None)
        if column is None:
            continue
        value = pd.to_numeric(column, errors="coerce").astype("float64")
        fill = (out["judged_by"] == "") & value.notna()
        out.loc[fill, "loss"], out.loc[fill, "judged_by"] = value[fill], key
    tails = by_run[keys.LOSS].apply(lambda s: s.astype("float64").iloc[-max(1, math.ceil(len(s) * tail_frac)):].mean())
    tails.index = tails.index.astype(str)
    rest = out["judged_by"] == ""
    out.loc[rest, "loss"], out.loc[rest, "judged_by"] = tails[rest], TRAIN_TAIL
    if keys.DIVERGED_AT_STEP in summary.columns:
        out.loc[pd.to_numeric(summary[keys.DIVERGED_AT_STEP], errors="coerce").notna(), "loss"] = np.inf
    out.loc[~np.isfinite(out["loss"].to_numpy()), "loss"] = np.inf
    return out.rename_axis("run_id").reset_index()


def prove_table(finals: pd.DataFrame, candidates: pd.DataFrame | None = None, *, ci_level: float = 0.95
                ) -> pd.DataFrame:
    """The candidates ranked by mean judged loss: `TABLE_COLUMNS`, best first.

    `finals`: `final_losses`' frame (lr, seed, loss). `candidates`: `prove_candidates`' frame (default:
    every distinct lr, `grid_candidates`); a run belongs to the candidate whose lr it trained at (to
    1e-6, relative). ``losses``/``seeds``: one entry per run, in seed order. ``diff_to_best``: the mean
    of (this - best) over the seeds both ran, paired; ``diff_ci``: its Student-t interval (NaN with
    fewer than two shared seeds; without seeds, runs are unpaired and a Welch interval is used). Ties
    in the mean go to the candidate listed first in `SUGGESTERS` order (the min-loss pick first).
    """
    if candidates is None:
        candidates = grid_candidates(finals["lr"])
    candidates = candidates.reset_index(drop=True)
    lrs = candidates["lr"].to_numpy(dtype="float64")
    rows = []
    for i, c in candidates.iterrows():
        mine = finals.loc[np.isclose(finals["lr"].to_numpy(dtype="float64"), lrs[i], rtol=1e-6, atol=0)]
        mine = mine.sort_values(SEED, kind="stable")
        losses = [float(v) for v in mine["loss"]]
        rows.append({"name": c["name"], "suggested_by": c["suggested_by"], "lr": float(c["lr"]), "lre": float(c["lre"]),
                     "losses": losses, "seeds": [None if pd.isna(s) else int(s) for s in mine[SEED]],
                     "mean": float(np.mean(losses)) if losses else math.nan,
                     "_order": _priority(str(c["suggested_by"]), i)})
    table = pd.DataFrame(rows)
    table["_mean"] = table["mean"].fillna(np.inf)
    table = table.sort_values(["_mean", "_order"], kind="stable", ignore_index=True)
    best = table.iloc[0]
    diffs = [_paired_diff(r["losses"], r["seeds"], best["losses"], best["seeds"], ci_level)
             for _, r in table.iterrows()]
    table["diff_to_best"] = [d[0] for d in diffs]
    table["diff_ci"] = [[d[1], d[2]] for d in diffs]
    return table[TABLE_COLUMNS]


@dataclass(frozen=True)
class ProveDecision:
    """Who won, by how much, and whether the seeds can tell the winner from the runner-up."""

    winner: str
    lr: float
    mean: float
    sd: float
    n_seeds: int
    runner_up: str | None
    margin: float                     # runner-up's mean minus the winner's, paired
    margin_ci: tuple[float, float]
    distinguishable: bool | None      # None: too few paired seeds to say

    def verdict(self) -> str:
        """One sentence: is the winner told from the runner-up?"""
        if self.runner_up is None:
            return "There was no other candidate to compare."
        ci = f"{self.margin:+.4f} (95% CI [{self.margin_ci[0]:+.4f}, {self.margin_ci[1]:+.4f}])"
        if self.distinguishable is None:
            return f"The runner-up {self.runner_up} is {self.margin:+.4f} behind; too few paired seeds for a CI."
        if self.distinguishable:
            return f"The winner is distinguishable from the runner-up {self.runner_up}: {ci}, paired over seeds."
        return (f"The winner is NOT distinguishable from the runner-up {self.runner_up}: {ci} includes 0; "
                f"either lr trains about as well at this budget.")


def prove_decision(table: pd.DataFrame) -> ProveDecision:
    """The decision of a `prove_table`: its first row wins; the runner-up is its second."""
    if table.empty or not math.isfinite(float(table["mean"].iloc[0])):
        raise LrscanError("no candidate trained to a finite loss: nothing is proven")
    best = table.iloc[0]
    losses = np.asarray(best["losses"], dtype="float64")
    runner = table.iloc[1] if len(table) > 1 else None
    margin, ci = (math.nan, (math.nan, math.nan)) if runner is None else (
        float(runner["diff_to_best"]), (float(runner["diff_ci"][0]), float(runner["diff_ci"][1])))
    known = all(math.isfinite(v) for v in ci)
    return ProveDecision(
        winner=str(best["name"]), lr=float(best["lr"]), mean=float(best["mean"]),
        sd=float(np.std(losses, ddof=1)) if len(losses) > 1 else math.nan, n_seeds=len(losses),
        runner_up=None if runner is None else str(runner["name"]), margin=margin, margin_ci=ci,
        distinguishable=(ci[0] > 0) if known else (True if runner is not None and math.isinf(margin) else None),
    )


def constant_lr_grids(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Groups (or sweeps) of constant-lr runs that differ in lr: group -> run ids (anyone's lr grid)."""
    if runs is None or runs.empty or SCHEDULE not in runs.columns or keys.LR not in runs.columns:
        return {}
    constant = runs.loc[runs[SCHEDULE].astype(str) == CONSTANT]
    by = next((c for c in ("group", "sweep") if c in constant.columns and constant[c].notna().any()), None)
    labels = constant[by].astype(str) if by else pd.Series("all runs", index=constant.index)
    grids = {}
    for label, one in constant.groupby(labels, sort=True):
        if pd.to_numeric(one[keys.LR], errors="coerce").round(12).nunique() >= 2:
            grids[str(label)] = one["run_id"].astype(str).tolist()
    return grids


def long_losses(table: pd.DataFrame) -> pd.DataFrame:
    """A prove table's losses one row per (candidate, run): name, suggested_by, lr, seed, loss (for figures)."""
    rows = [{"name": r["name"], "suggested_by": r["suggested_by"], "lr": r["lr"], SEED: s, "loss": v}
            for _, r in table.iterrows() for s, v in zip(r["seeds"], r["losses"])]
    return pd.DataFrame(rows, columns=["name", "suggested_by", "lr", SEED, "loss"])


# -- helpers ----------------------------------------------------------------------------------------


def _priority(suggested_by: str, index: int) -> int:
    first = suggested_by.split(",")[0].strip()
    return SUGGESTERS.index(first) if first in SUGGESTERS else len(SUGGESTERS) + index


def _t_quantile(q: float, df: float) -> float:
    """Student's t quantile. scipy.stats is imported here, not with the module: it takes ~1.5 s and ~40 MiB,
    which every `python -m analysis` paid before reading a file (the loader imports HELD_OUT_KEYS from here)."""
    from scipy import stats

    return stats.t.ppf(q, df)


def _paired_diff(losses: Sequence[float], seeds: Sequence[Any], best: Sequence[float], best_seeds: Sequence[Any],
                 ci_level: float) -> tuple[float, float, float]:
    """Mean of (losses - best) over shared seeds and its t interval; unpaired (Welch) when seeds are unknown."""
    if not losses or not best:
        return math.nan, math.nan, math.nan
    if None not in seeds and None not in best_seeds:
        theirs = dict(zip(best_seeds, best))
        d = np.array([v - theirs[s] for s, v in zip(seeds, losses) if s in theirs], dtype="float64")
        if len(d) == 0:
            return math.nan, math.nan, math.nan
        mean = float(d.mean())
        if len(d) < 2 or not np.isfinite(d).all():
            return mean, math.nan, math.nan
        half = float(_t_quantile(0.5 + ci_level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
        return mean, mean - half, mean + half
    a, b = np.asarray(losses, dtype="float64"), np.asarray(best, dtype="float64")
    mean = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return mean, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return mean, mean, mean
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(_t_quantile(0.5 + ci_level / 2, df) * math.sqrt(va + vb))
    return mean, mean - half, mean + half


@dataclass
class ProveResult:
    """One proven grid: its runs' group, the table, the decision, what judged them and after how many steps."""

    group: str
    table: pd.DataFrame
    decision: ProveDecision
    judged_by: list[str]
    steps: int

    @property
    def on_training_loss(self) -> bool:
        """True when some run had no held-out loss and was judged by its last-10% training loss."""
        return TRAIN_TAIL in self.judged_by

    def judged_text(self) -> str:
        if self.judged_by == [TRAIN_TAIL]:
            return (f"mean training loss over the last {TAIL_FRAC:.0%} of steps (no held-out loss was logged: the "
                    f"task has no evaluate)")
        return " / ".join(k if k != TRAIN_TAIL else f"last-{TAIL_FRAC:.0%} training loss" for k in self.judged_by)

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {"group": self.group, "steps": self.steps, "judged_by": self.judged_by,
                "on_training_loss": self.on_training_loss, "winner": d.winner, "lr": d.lr, "mean": d.mean,
                "sd": d.sd, "n_seeds": d.n_seeds, "runner_up": d.runner_up, "margin": d.margin,
                "margin_ci": list(d.margin_ci), "distinguishable": d.distinguishable, "verdict": d.verdict(),
                "table": self.table.to_dict("records")}


def prove_results(steps: pd.DataFrame, runs: pd.DataFrame | None, candidates: pd.DataFrame | None = None
                  ) -> list[ProveResult]:
    """The prove tables of the constant-lr runs in `steps`/`runs`.

    With `candidates` (the study's): every constant-lr run, one table, rows named by the candidates.
    Without: each group (or sweep) of constant-lr runs that differ in lr (`constant_lr_grids`), its
    distinct lrs as candidates (anyone's lr grid).
    """
    if candidates is not None:
        constant = runs.loc[runs[SCHEDULE].astype(str) == CONSTANT, "run_id"].astype(str).tolist() \
            if runs is not None and SCHEDULE in runs.columns else steps["run_id"].astype(str).unique().tolist()
        if not constant:
            raise LrscanError("no constant-lr runs to prove the candidates with")
        grids = {"all runs": constant}
    else:
        grids = constant_lr_grids(runs)
    out = []
    for group, ids in grids.items():
        mine = steps.loc[steps["run_id"].astype(str).isin(ids)]
        their = runs.loc[runs["run_id"].astype(str).isin(ids)] if runs is not None else None
        finals = final_losses(mine, their)
        table = prove_table(finals, candidates)
        budget = int(mine.groupby("run_id", observed=True)[keys.STEP_COLUMN].max().median()) + 1
        out.append(ProveResult(group=group, table=table, decision=prove_decision(table), steps=budget,
                               judged_by=sorted(finals["judged_by"].unique().tolist())))
    return out


def prove_markdown(result: ProveResult, figure: str | None = None) -> list[str]:
    """The report section of one proven grid: the decision in words, the table, the figure."""
    d = result.decision
    shown = result.table.assign(
        losses=result.table["losses"].map(lambda v: ", ".join(f"{x:.4f}" for x in v)),
        diff_ci=result.table["diff_ci"].map(lambda v: f"[{v[0]:+.4f}, {v[1]:+.4f}]" if math.isfinite(v[0]) else ""),
        seeds=result.table["seeds"].map(lambda v: ", ".join("?" if s is None else str(s) for s in v)))
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in shown[TABLE_COLUMNS].itertuples(index=False)]
    lines = [f"## Prove: {result.group}", "",
             f"Judged by: {result.judged_text()}, after {result.steps} steps at a constant lr.", "",
             f"**Proven: {d.winner}, lr {d.lr:.4g}**, mean {d.mean:.4f}" + (f" ± {d.sd:.4f} (sd over {d.n_seeds} seeds)"
                                                                          if math.isfinite(d.sd) else "") + ".",
             "", d.verdict(), "", header, "|" + "---|" * len(TABLE_COLUMNS), *rows, ""]
    return lines + ([f"![prove]({figure})", ""] if figure else [])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)
