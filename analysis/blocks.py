"""Block means of a per-step loss, and the step-decay grid built on them.

`block_means` is the seed's `torch.tensor(lossi).view(-1, 1000).mean(1)` on the tidy frame: one row
per (run, block of `block_steps` steps). `decay_summary` averages those curves over the seeds of each
swept configuration and finds the best one. Everything here is DataFrame in, DataFrame out.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.byrun import run_rows
from lrscan.analysis.columns import cadence
from lrscan.analysis.plain import plain_value
from lrscan.analysis.runconfig import PER_STEP_COLUMNS
from lrscan.pipeline import keys
from lrscan.pipeline.config import field_names, hyperparameter_names
from lrscan.pipeline.errors import LrscanError

# config fields that say where or how a run was executed, not what it measured: never "swept"
# (each field's kind is declared on TrainConfig, which the trainer's resume check reads too)
NOT_HYPERPARAMETERS = frozenset(field_names()) - frozenset(hyperparameter_names())
SEED = "seed"
STEP_LEVEL_COLUMNS = PER_STEP_COLUMNS
SCHEDULE = "schedule"
SCHEDULE_RANGE = "range"


class PartialBlockWarning(UserWarning):
    """Some blocks were not wholly covered by their run's logging (its end, lost records) and were dropped."""


def run_columns(steps: pd.DataFrame) -> list[str]:
    """The columns of `steps` that are constant within a run: the id columns and the config fields."""
    # `lr` is both a config field (the constant lr) and a logged key: in a steps frame it is the logged one
    per_run = (set(keys.ID_COLUMNS) | set(field_names())) - set(STEP_LEVEL_COLUMNS)
    return [c for c in steps.columns if c in per_run]


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LrscanError(f"{what} lacks column(s) {', '.join(map(repr, missing))}; "
                          f"it has {', '.join(map(str, frame.columns))}")


def block_means(
    steps: pd.DataFrame,
    column: str = keys.LOG10_LOSS,
    block_steps: int = 1000,
    keep_partial: bool = False,
) -> pd.DataFrame:
    """Mean of `column` over consecutive blocks of `block_steps` training steps, per run.

    The seed's ``torch.tensor(lossi).view(-1, block_steps).mean(1)``, done on the tidy frame so that
    runs of any length, stopped runs, runs with missing records and runs that log every k steps
    all work: a block's mean is over the steps logged in it.

    Parameters
    ----------
    steps : DataFrame
        Tidy frame, one row per (run, step): ``run_id``, ``step`` and `column`, plus any config
        columns, which are carried into the result so seaborn can hue by them.
    column : str
        The per-step value to average (default ``log10_loss``, the seed's ``lossi``).
    block_steps : int
        Steps per block. Block ``b`` spans the steps ``b * block_steps`` up to
        ``(b + 1) * block_steps - 1``: blocks are by step position, so a run whose tail is
        missing is never padded, and a step not logged is "not measured", never low or high
        loss; a block without a logged step is not there at all.
    keep_partial : bool
        A block the run's logging does not cover whole is partial: the run started or ended
        inside it (the tail of a run whose length is not a multiple of `block_steps`), or a step
        of the run's own cadence is missing in it (lost records). The cadence is the run's most
        common gap between logged steps (`analysis.columns.cadence`), so a run logged every 10
        steps has 100 of 1000 steps in a whole block. Partial blocks are dropped by default, with
        a `PartialBlockWarning`; `keep_partial=True` keeps them as shorter blocks.

    Returns
    -------
    DataFrame
        ``run_id, block, step_start, step_end, n_steps, <column>`` then the run's id and config
        columns. ``[step_start, step_end)`` is the block's span: ``step_end`` is one cadence past
        its last measured step (one past it for a run logged every step), at most the block's end.
        ``n_steps`` counts the logged steps averaged. A non-finite value inside a block makes that
        block's mean non-finite, as in torch. ``attrs["partial_blocks_dropped"]`` counts the
        blocks dropped.
    """
    require_columns(steps, ["run_id", keys.STEP_COLUMN, column], "the steps frame")
    if int(block_steps) != block_steps or block_steps < 1:
        raise LrscanError(f"block_steps={block_steps}: must be a whole number >= 1")
    block_steps = int(block_steps)

    # one run at a time (analysis.byrun): a whole-frame groupby on (run, block) at 10M rows holds ~0.8 GB of
    # keys and copies; a run's rows are a slice, and its blocks are the same groups with the same means
    by_run = run_rows(steps["run_id"])
    step_all, value_all = steps[keys.STEP_COLUMN].to_numpy(), steps[column].to_numpy()
    parts, firsts, spans = [], [], []
    for _, rows in by_run:
        step = step_all[rows].astype(np.int64, copy=False)
        grouped = pd.DataFrame({
            "block": step // block_steps,
            keys.STEP_COLUMN: step,
            column: value_all[rows].astype("float64"),
        }).groupby("block", sort=True)
        parts.append(pd.DataFrame({
            "last_step": grouped[keys.STEP_COLUMN].max(),
            "n_steps": grouped.size(),
            # skipna=False: a NaN inside a block makes its mean NaN, as torch's mean does
            "value": grouped[column].mean(skipna=False),
        }).reset_index())
        firsts.append(rows.start if isinstance(rows, slice) else int(rows[0]))
        spans.append((step.min(), step.max(), cadence(step)))
    n_blocks = [len(part) for part in parts]
    per_block = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"block": np.zeros(0, np.int64), "last_step": np.zeros(0, np.int64), "n_steps": np.zeros(0, np.int64),
         "value": np.zeros(0)})
    first_rows = np.repeat(np.asarray(firsts, np.int64), n_blocks)
    per_block.insert(0, "run_id", steps["run_id"].array.take(first_rows))  # keeps a categorical a categorical
    first, last, every = (np.repeat(np.asarray([span[i] for span in spans], np.int64), n_blocks) for i in range(3))
    start = per_block["block"].to_numpy() * block_steps
    end = start + block_steps
    per_block = per_block.assign(step_start=start, step_end=np.minimum(per_block["last_step"].to_numpy() + every, end))

    # whole: the run's logging began within one cadence of the block's start and went on to within one
    # cadence of its end, and every step of its cadence in between is there
    low, high = np.maximum(start, first), np.minimum(end - 1, last)
    on_grid = first + -((first - low) // every) * every  # the run's first cadence step at or after `low`
    expected = np.where(on_grid > high, 0, (high - on_grid) // every + 1)
    whole = (first <= start + every) & (last >= end - every) & (per_block["n_steps"].to_numpy() >= expected)
    partial = ~whole
    n_partial = int(partial.sum())
    if n_partial and not keep_partial:
        n_runs = per_block.loc[partial, "run_id"].nunique()
        warnings.warn(
            f"dropped {n_partial} block(s) of {block_steps} steps that the logging of {n_runs} run(s) does not cover "
            f"whole (a run that starts or ends inside a block, or lost records); keep_partial=True keeps them",
            PartialBlockWarning,
            stacklevel=2,
        )
        per_block = per_block.loc[~partial]

    out = per_block.rename(columns={"value": column})[
        ["run_id", "block", "step_start", "step_end", "n_steps", column]
    ]
    carried = [c for c in run_columns(steps) if c != "run_id"]
    if carried:
        config = steps.iloc[firsts][["run_id", *carried]]
        out = out.merge(config, on="run_id", how="left", validate="many_to_one")
    out = out.reset_index(drop=True).astype({c: "int64" for c in ("block", "step_start", "step_end", "n_steps")})
    out.attrs["partial_blocks_dropped"] = 0 if keep_partial else n_partial
    out.attrs["block_steps"] = block_steps
    return out


# -- the step-decay grid -------------------------------------------------------------------------


@dataclass
class DecaySummary:
    """What `decay_summary` found. Frames are tidy; `best` is one config and its score."""

    by: list[str]                 # the swept config columns that define a config
    column: str                   # the per-step value averaged in blocks
    metric: str                   # the table column `best` minimises
    blocks: pd.DataFrame          # per run and block (block_means of the decay runs)
    curves: pd.DataFrame          # per config and block: mean, sd and n over the config's runs
    table: pd.DataFrame           # per config: final block and final dev/test loss, seeds
    best: dict[str, Any] = field(default_factory=dict)


def run_config(steps: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run of `steps`: ``run_id`` (as string) and its id and config columns.

    Config fields the steps frame cannot hold (``lr``, whose name the logged lr takes there) come
    from `runs` when it is given.
    """
    per_run = steps.drop_duplicates("run_id")[run_columns(steps)]
    per_run = per_run.assign(run_id=per_run["run_id"].astype("string")).reset_index(drop=True)
    if runs is not None and "run_id" in runs.columns:
        extra = [c for c in runs.columns if c in set(field_names()) and c not in per_run.columns and c != "run_id"]
        if extra:
            per_run = per_run.merge(runs[["run_id", *extra]].astype({"run_id": "string"}), on="run_id", how="left")
    return per_run


def swept_columns(runs_config: pd.DataFrame) -> list[str]:
    """The config fields that take more than one value across runs, seed and bookkeeping excluded."""
    fields = set(field_names())
    candidates = [c for c in runs_config.columns if c in fields and c not in NOT_HYPERPARAMETERS and c != SEED]
    return [c for c in candidates if runs_config[c].astype("string").nunique(dropna=False) > 1]


def config_label(frame: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """A readable name per row, e.g. ``decay_steps=[100000] decay_lrs=[0.01]``."""
    if not by:
        return pd.Series("all runs", index=frame.index, dtype="string")
    parts = [c + "=" + frame[c].astype("string") for c in by]
    label = parts[0]
    for p in parts[1:]:
        label = label + " " + p
    return label.astype("string")


def decay_summary(
    steps: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    block_steps: int = 1000,
    *,
    by: Sequence[str] | None = None,
    column: str = keys.LOG10_LOSS,
    keep_partial: bool = False,
) -> DecaySummary:
    """Block-mean curves and final losses per swept configuration of the step-decay runs.

    Parameters
    ----------
    steps : DataFrame
        Tidy per-step frame. Range-test runs (``schedule == 'range'``) are left out.
    runs : DataFrame, optional
        One row per run with the summary keys; its ``dev_loss`` and ``test_loss`` give the
        final dev/test loss per config. Without it only the final block is scored.
    block_steps : int
        Steps per block (see `block_means`).
    by : sequence of str, optional
        The config columns that define a configuration. Default: every config field that takes
        more than one value across the runs, except ``seed`` and bookkeeping fields, so seeds of
        one config are averaged.
    column : str
        Per-step value averaged in blocks (default ``log10_loss``).

    Returns
    -------
    DecaySummary
        ``curves``: ``config, *by, block, step_start, step_end, <column>, sd, n_runs``, the mean over
        the config's runs. ``table``: one row per config with ``n_runs``, ``n_seeds``,
        ``final_block`` (the last block every run of the config measured, so a run that stopped
        early cannot make its config look better or worse by its length), ``final_block_loss``
        (mean of `column` there) and ``final_block_sd``, and when `runs` has them
        ``final_dev_loss``/``final_dev_sd``/``final_test_loss``. ``best``: the config with the
        lowest final dev loss (every config has one) or else the lowest final block loss.
    """
    require_columns(steps, ["run_id", keys.STEP_COLUMN, column], "the steps frame")
    if SCHEDULE in steps.columns:
        steps = steps.loc[steps[SCHEDULE] != SCHEDULE_RANGE]
    if steps.empty:
        raise LrscanError("no step-decay or constant-lr runs to summarise "
                          "(every run is a range test, or none were loaded)")

    per_run = run_config(steps, runs)
    by = list(swept_columns(per_run) if by is None else by)
    require_columns(per_run, by, "the runs' config")

    blocks = block_means(steps, column=column, block_steps=block_steps, keep_partial=keep_partial)
    if blocks.empty:
        raise LrscanError(f"no run has a full block of {block_steps} steps: lower block_steps or use keep_partial")
    from_runs = [c for c in per_run.columns if c not in blocks.columns]
    if from_runs:
        blocks = (
            blocks.assign(_run=blocks["run_id"].astype("string"))
            .merge(per_run[["run_id", *from_runs]].rename(columns={"run_id": "_run"}), on="_run", how="left")
            .drop(columns="_run")
        )
    blocks = blocks.assign(config=config_label(blocks, by))

    curves = (
        blocks.groupby(["config", *by, "block"], observed=True, sort=True, dropna=False)
        .agg(
            step_start=("step_start", "min"),
            step_end=("step_end", "max"),
            mean=(column, "mean"),
            sd=(column, "std"),
            n_runs=("run_id", "nunique"),
        )
        .reset_index()
        .rename(columns={"mean": column})
    )

    # the last block that every run of a config measured
    last_block = blocks.groupby("run_id", observed=True)["block"].max().rename("last_block")
    last_block.index = last_block.index.astype("string")
    run_info = per_run.assign(config=config_label(per_run, by)).merge(last_block, left_on="run_id", right_index=True)
    common = run_info.groupby("config", observed=True)["last_block"].min().rename("final_block")
    final = blocks.merge(common, left_on=["config", "block"], right_on=["config", "final_block"])
    agg: dict[str, Any] = {
        "n_runs": ("run_id", "nunique"),
        "final_block": ("block", "first"),
        "final_step": ("step_end", "max"),
        "final_block_loss": (column, "mean"),
        "final_block_sd": (column, "std"),
    }
    if SEED in final.columns:
        agg["n_seeds"] = (SEED, "nunique")
    table = final.groupby(["config", *by], observed=True, sort=True, dropna=False).agg(**agg).reset_index()

    if runs is not None and keys.DEV_LOSS in runs.columns:
        score_columns = [k for k in (keys.DEV_LOSS, keys.TEST_LOSS) if k in runs.columns]
        scores = (
            run_info[["run_id", "config"]]
            .merge(runs[["run_id", *score_columns]].astype({"run_id": "string"}), on="run_id", how="left")
            .astype({k: "float64" for k in score_columns})
        )
        dev = scores.groupby("config", observed=True).agg(
            final_dev_loss=(keys.DEV_LOSS, "mean"),
            final_dev_sd=(keys.DEV_LOSS, "std"),
            **({"final_test_loss": (keys.TEST_LOSS, "mean")} if keys.TEST_LOSS in scores.columns else {}),
        )
        table = table.merge(dev, left_on="config", right_index=True, how="left")

    has_dev = "final_dev_loss" in table.columns and table["final_dev_loss"].notna().all()
    metric = "final_dev_loss" if has_dev else "final_block_loss"
    table = table.sort_values(metric, kind="stable").reset_index(drop=True)
    best_row = table.iloc[0]
    best = {"config": str(best_row["config"]), "metric": metric, "value": float(best_row[metric])}
    best.update({c: plain_value(best_row[c]) for c in by})
    return DecaySummary(by=by, column=column, metric=metric, blocks=blocks, curves=curves, table=table, best=best)


def decay_grid(table: pd.DataFrame, index: str, columns: str, values: str) -> pd.DataFrame:
    """The decay table as a matrix for a heatmap: `index` down, `columns` across, best `values` per cell.

    When other swept columns vary too, each cell holds the lowest value over them (the best the
    grid found for that pair); labels are ordered by their parsed value, so ``[50000]`` comes
    before ``[100000]``.
    """
    require_columns(table, [index, columns, values], "the decay table")
    grid = table.pivot_table(index=index, columns=columns, values=values, aggfunc="min", observed=True)
    grid = grid.reindex(index=sorted(grid.index, key=sort_key), columns=sorted(grid.columns, key=sort_key))
    grid.index.name, grid.columns.name = index, columns
    return grid


def sort_key(label: Any) -> tuple:
    """Order config labels by their parsed value: ``[50000]`` before ``[100000]``, text last."""
    try:
        value = ast.literal_eval(label) if isinstance(label, str) else label
    except (ValueError, SyntaxError):
        return (1, str(label))
    if isinstance(value, (list, tuple)):
        return (0, tuple(value))
    if isinstance(value, (int, float)):
        return (0, (value,))
    return (1, str(label))

def fitting_block_steps(steps: pd.DataFrame, block_steps: int, notes: list[str]) -> int:
    """`block_steps`, or a quarter of the longest run when no run is that long (a note says so)."""
    span = steps.groupby("run_id", observed=True)[keys.STEP_COLUMN].agg(["min", "max"])
    longest = int((span["max"] - span["min"]).max()) + 1  # steps a run spans (it may log every 10th)
    if longest >= block_steps:
        return block_steps
    fitted = max(1, longest // 4)
    notes.append(f"no run has a full block of {block_steps} steps (the longest has {longest}): blocks of {fitted} "
                 f"steps (--block-steps sets it)")
    return fitted
