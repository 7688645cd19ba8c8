"""Anyone's lr grids: constant-lr runs that share every config value but lr and seed, each judged (`analysis.judge`).

    grids = constant_lr_grids(runs)                      # label -> run ids; notes say which runs were left out
    verdicts, notes = judge_grids(steps, runs)           # one Judgement per grid; a grid it cannot judge is a note

A grid is the finished constant-lr runs of one group (or sweep, or none) whose hyperparameters
(`pipeline.config`'s ``hyper`` fields) are equal but for lr and seed, with at least two lrs: a
column that varies splits them (lr x batch size is one grid per batch size), an empty group is no
grid of its own. Runs still running, or that crashed, are left out, as the exponent pick leaves them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lrscan.analysis.blocks import SCHEDULE
from lrscan.analysis.judge import Judgement, final_losses, judge
from lrscan.analysis.pick import RUNNING
from lrscan.pipeline import keys
from lrscan.pipeline.config import HYPER, fields_of_kind
from lrscan.pipeline.errors import LrscanError

CONSTANT = "constant"
FINISHED = "finished"
NOT_SPLITTING = (keys.LR, "seed", SCHEDULE)  # what a grid's runs may differ in


def constant_lr_grids(runs: pd.DataFrame | None, *, include_running: bool = False) -> tuple[dict[str, list[str]],
                                                                                           list[str]]:
    """(label -> run ids, notes): the lr grids among the constant-lr runs of `runs`, and the runs left out."""
    if runs is None or runs.empty or SCHEDULE not in runs.columns or keys.LR not in runs.columns:
        return {}, []
    constant = runs.loc[runs[SCHEDULE].astype(str) == CONSTANT]
    notes = []
    if "state" in constant.columns:
        kept = {FINISHED, RUNNING} if include_running else {FINISHED}
        out = constant.loc[~constant["state"].astype(str).isin(kept)]
        for state, ids in out.groupby(out["state"].astype(str))["run_id"]:
            notes.append(f"constant-lr runs left out of the lr grids ({state}): {_ids(ids)}")
        constant = constant.loc[constant["state"].astype(str).isin(kept)]
    split = [c for c in ("group", "sweep", *fields_of_kind(HYPER)) if c in constant.columns and c not in NOT_SPLITTING]
    where = constant[split].astype(object).where(constant[split].notna(), "")  # no group: "", never a group "nan"
    where = where.map(_label) if len(where.columns) else where
    grids: dict[str, list[str]] = {}
    varying = [c for c in split if where[c].nunique() > 1]
    groups = constant.groupby([where[c] for c in split], sort=True, dropna=False) if split else [((), constant)]
    for values, one in groups:
        values = values if isinstance(values, tuple) else (values,)
        if pd.to_numeric(one[keys.LR], errors="coerce").round(12).nunique() < 2:
            continue
        named = dict(zip(split, values))
        head = named.get("group") or named.get("sweep") or "runs without a group"
        rest = ", ".join(f"{c} {named[c]}" for c in varying if c not in ("group", "sweep"))
        grids[head + (f" ({rest})" if rest else "")] = one["run_id"].astype(str).tolist()
    return grids, notes


def judge_grids(steps: pd.DataFrame, runs: pd.DataFrame | None, candidates: pd.DataFrame | None = None, *,
                held_out_key: str | None = None, include_running: bool = False, **judge_args: Any
                ) -> tuple[list[Judgement], list[str]]:
    """One `Judgement` per lr grid of `runs` (or, with `candidates`, the study's: every constant-lr run, one table).

    A grid that cannot be judged (repeated seeds, no seed every lr ran, every lr diverged, a held-out
    key some runs lack) becomes a note naming the grid and the cause; the rest of the report goes on.
    """
    if candidates is not None:
        constant = (runs.loc[runs[SCHEDULE].astype(str) == CONSTANT, "run_id"].astype(str).tolist()
                    if runs is not None and SCHEDULE in runs.columns else steps["run_id"].astype(str).unique().tolist())
        if not constant:
            raise LrscanError("no constant-lr runs to prove the candidates with")
        grids, notes = {"all runs": constant}, []
    else:
        grids, notes = constant_lr_grids(runs, include_running=include_running)
    out = []
    for label, ids in grids.items():
        mine = steps.loc[steps["run_id"].astype(str).isin(ids)]
        their = runs.loc[runs["run_id"].astype(str).isin(ids)] if runs is not None else None
        length = int(mine.groupby("run_id", observed=True)[keys.STEP_COLUMN].max().median()) + 1
        try:
            finals = final_losses(mine, their, held_out_key=held_out_key)
            out.append(judge(finals, candidates, steps=length, group=label, **judge_args))
        except LrscanError as err:
            if candidates is not None:
                raise
            notes.append(f"lr grid {label}: not judged: {err}")
    return out, notes


def _ids(ids: pd.Series) -> str:
    shown = ids.astype(str).tolist()
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


def _label(value: Any) -> str:
    """A config value as a grid's label shows it (4 significant digits; lists as they are)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
