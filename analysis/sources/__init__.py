"""Load every step of many runs into two pandas frames, from offline run folders or the W&B cloud.

    loaded = load_runs("wandb", group="lr_range")      # offline: a folder, a run folder or a .wandb file
    loaded = load_runs("me/lrscan", sweep="abc123")    # cloud: entity/project[/sweep_id]
    loaded.steps   # one row per (run, step the loss was logged at): ids, the config fields that differ between
                   # runs (and schedule, seed), step, lr, lre, loss, ...
    loaded.runs    # one row per run: ids, state, exit code, step counts, keys used, schedule, every config field,
                   # summary; with_config(loaded.steps, loaded.runs) joins the shared fields onto steps

The entry: source -> filters (filters.py) -> offline (offline.py) or cloud (cloud.py) -> each run's
loss, lr and step columns (analysis.columns: lrscan's keys or the common names other code logs,
derived and aligned) -> its schedule (the config's, else guessed from its lr trace by
analysis.schedules) -> frames (frame.py, which says how they are typed). Both sources give the same
frames. The W&B cloud cannot be reached from the test machines, so
tests/analysis/sources/test_cloud.py runs the cloud path through wandb 0.31's own
`Api`/`Runs`/`Run`/`HistoryScan` over a fake of wandb-core and the server
(tests/support/public_api_fakes.py), fed with real offline runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.columns import (
    LIGHTNING_LR,
    LOSS_LOGGED,
    LOSS_NAMES,
    LR_NAMES,
    KeyChoice,
    choose_keys,
    logged_keys,
    missing_steps,
    read_columns,
)
from lrscan.analysis.schedules import OTHER, classify_lr_trace
from lrscan.analysis.sources.cloud import CLOUD_PATH, Retry, load_cloud
from lrscan.analysis.sources.filters import ALL_BUT_ANALYSIS, Filters, LeftOut
from lrscan.analysis.sources.frame import DEFAULT_KEYS, OPTIONAL_KEYS, build_frames, has_values, value_dtype
from lrscan.analysis.sources.offline import load_offline
from lrscan.pipeline import keys as K
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import RunFile

__all__ = ["ALL_BUT_ANALYSIS", "DEFAULT_KEYS", "Loaded", "load_runs"]
SCHEDULE = "schedule"
SHOWN_KEYS = 8  # logged keys named in a "no loss logged" problem


@dataclass
class Loaded:
    steps: pd.DataFrame    # tidy: one row per (run, step)
    runs: pd.DataFrame     # one row per run
    skipped_records: int = 0   # over all files
    problems: list[str] = field(default_factory=list)  # one human line per file/run not (fully) read
    notes: list[str] = field(default_factory=list)     # what the loader decided: runs left out, keys, schedules


def load_runs(
    source: str | os.PathLike = ".",
    *,
    group: str | None = None,
    sweep: str | None = None,
    tags: Sequence[str] | str = (),
    state: str | Sequence[str] | None = None,
    job_type: str | None = ALL_BUT_ANALYSIS,
    keys: Sequence[str] | None = None,
    loss_key: str | None = None,
    lr_key: str | None = None,
    api: Any = None,
    cache_dir: str | os.PathLike | None = None,
    retry: Retry | None = None,
    workers: int | None = None,
) -> Loaded:
    """Every step of the matching runs, as `Loaded(steps, runs, skipped_records, problems, notes)`.

    source: a folder searched recursively for run-*.wandb ("." means ./wandb when it exists), one
    offline run folder, one .wandb file, or `entity/project[/sweep_id]` on the W&B cloud.
    Filters: group; sweep (a sweep id or a group key); tags (all must be present); state
    ('finished', 'crashed', 'running'; or several); job_type (default: every run but lrscan's
    analysis runs; None: all; "x": only x; "!x": all but x).
    loss_key, lr_key: the logged keys of the loss and the lr, when they are not lrscan's own
    (`loss`, `lr`) nor a name tried by default (analysis.columns has the list and the order). The
    steps frame then has `lr`, `lre`, `loss` and `log10_loss` for every run, derived where a run
    logged one of a pair only, with one row per step the loss was logged at and the lr in force
    there; `runs` says which keys each run's values came from (loss_key, lr_key, step_key) and
    where its schedule came from (schedule_from: its config, or its lr trace).
    keys: read these history keys as they are instead (no choosing, deriving or aligning).
    api: a `wandb.Api` (cloud only; made when needed). cache_dir: where ended cloud runs are
    cached (default $LRSCAN_CACHE or ~/.cache/lrscan). retry: how a 429, a 5xx, a lost connection or
    a timeout from the cloud is tried again (backoff with a floor, honouring a longer Retry-After, a
    scan resumed where it stopped, one deadline for the whole load; analysis.sources.cloud.Retry). workers: processes
    reading offline files in parallel (default: one per core this process may use, for big files).

    Raises LrscanError for an unknown source, a source without runs, no run matching the filters
    (saying how many runs the filters left out, and by which), or no run with a loss (naming the
    first run's problem). A damaged file or run among good ones is skipped or read in part, and
    named in `problems`.
    """
    tags = (tags,) if isinstance(tags, str) else tuple(tags)
    states = (state,) if isinstance(state, str) else tuple(state) if state is not None else None
    explicit = list(dict.fromkeys(keys)) if keys is not None else None
    filters = Filters(group=group, sweep=sweep, tags=tags, states=states, job_type=job_type)
    problems: list[str] = []
    path = Path(os.fspath(source))
    if path.exists() or api is None and not CLOUD_PATH.match(str(source)):
        runs, skipped, left_out = load_offline(path, filters, explicit, problems, loss_key=loss_key, lr_key=lr_key,
                                               workers=workers)
        where = str(path)
    else:
        runs, left_out = load_cloud(str(source), filters, explicit, api, cache_dir, problems,
                                    loss_key=loss_key, lr_key=lr_key, retry=retry or Retry())
        skipped, where = 0, str(source)
    if not runs:
        raise LrscanError(f"no runs in {where} match {filters.describe()}{_nothing_left(left_out)}")
    notes = [note] if (note := left_out.note()) else []
    if explicit is not None:
        return _as_logged(runs, explicit, skipped, problems, notes)

    info = {run.run_id: _to_columns(run, loss_key, lr_key, problems, notes) for run in runs}
    if not any(len(run.history[K.STEP_COLUMN]) for run in runs):
        first = next((p for p in problems if p.startswith("run ")), "")
        raise LrscanError(f"none of the {len(runs)} matching run(s) logged a loss to analyse"
                          + (f": {first}" if first else ""))
    value_keys = [*K.STEP_KEYS, *(k for k in OPTIONAL_KEYS if any(has_values(r.history, k) for r in runs))]
    steps, runs_frame = build_frames(runs, value_keys, info)
    return Loaded(steps=steps, runs=runs_frame, skipped_records=skipped, problems=problems, notes=notes)


def _to_columns(run: RunFile, loss_key: str | None, lr_key: str | None, problems: list[str],
                notes: list[str]) -> dict[str, Any]:
    """Turn `run.history` into the analysis' columns (in place); say which keys and schedule it has."""
    logged = logged_keys(run.history)
    choice = choose_keys(logged, loss_key=loss_key, lr_key=lr_key)
    carried = [k for k in OPTIONAL_KEYS if has_values(run.history, k)]  # a key never logged is no column
    columns = read_columns(pd.DataFrame({**run.history, **_loss_logged(run, choice)}), choice, carried,
                           named_loss=loss_key is not None, named_lr=lr_key is not None)
    choice, key_notes, lr_step, lr_logged = columns.choice, columns.notes, columns.lr_step, columns.lr_logged
    frame = columns.frame
    # the frame's dtypes from here on (losses float32): the runs wait in these until build_frames. Copies, not
    # views: a view of lr would keep the frame's whole float64 block (four columns) of every run alive
    run.history = {column: frame[column].to_numpy(dtype=value_dtype(column) if column != K.STEP_COLUMN else np.int64,
                                                  copy=True)
                   for column in frame.columns}
    del frame, columns
    run.nan_logged = {}  # the rows are the measured steps now: a NaN there was logged as NaN
    absent = []
    if choice.loss is None:
        absent.append(("loss", loss_key or ", ".join(LOSS_NAMES)))
    if choice.lr is None:
        absent.append(("lr", lr_key or ", ".join([*LR_NAMES, LIGHTNING_LR])))
    if absent:
        problems.append(_absent_problem(run.run_id, absent, logged))
    notes.extend(f"run {run.run_id}: {note}" for note in key_notes)
    n_missing, after, every = missing_steps(run.history[K.STEP_COLUMN])
    if n_missing:
        cadence = f" (it logs every {every} steps)" if every > 1 else ""
        problems.append(f"run {run.run_id}: {n_missing} step(s) missing from its history{cadence}, "
                        f"the first after step {after}")
    info: dict[str, Any] = {**choice.as_dict(), "schedule_from": "config", "schedule_note": None}
    if SCHEDULE not in run.config and len(run.history[K.STEP_COLUMN]):
        guess = classify_lr_trace(lr_step, lr_logged)  # the lr as logged, not carried forward
        run.config.update({k: v for k, v in {SCHEDULE: guess.kind, **guess.config}.items() if k not in run.config})
        info.update(schedule_from="lr trace", schedule_note=guess.reason)
        if guess.kind == OTHER:
            notes.append(f"run {run.run_id}: {guess.reason}, and its config names no schedule: left out of the "
                         f"exponent pick, shown in the block means")
    return info


def _loss_logged(run: RunFile, choice: KeyChoice) -> dict[str, np.ndarray]:
    """The LOSS_LOGGED column when the run logged its loss as NaN somewhere (else none: NaN is "not logged")."""
    pair = (K.LOSS, K.LOG10_LOSS)
    loss_keys = pair if choice.loss in pair else (choice.loss,) if choice.loss is not None else ()
    marks = [run.nan_logged[k] for k in loss_keys if k in run.nan_logged]
    if not marks:
        return {}
    logged = np.logical_or.reduce([*marks, *(~np.isnan(run.history[k]) for k in loss_keys if k in run.history)])
    return {LOSS_LOGGED: np.where(logged, 1.0, np.nan)}


def _absent_problem(run_id: str, absent: list[tuple[str, str]], logged: list[str]) -> str:
    """One line: what a run lacks, the names looked for, what it did log, and the flag that names a key."""
    what = " and no ".join(name for name, _ in absent)
    looked = "; ".join(f"{name}: {names}" for name, names in absent)
    names = sorted(logged)
    shown = ", ".join(names[:SHOWN_KEYS]) + (", ..." if len(names) > SHOWN_KEYS else "") if names else "nothing"
    flags = " and ".join(f"--{name}-key" for name, _ in absent)
    named = "name other keys" if len(absent) > 1 else "names another key"
    return f"run {run_id}: no {what} logged (looked for {looked}; it logged {shown}); {flags} {named}"


def _as_logged(runs: list[RunFile], keys: list[str], skipped: int, problems: list[str], notes: list[str]) -> Loaded:
    """The frames of explicitly named keys, as logged: no choosing, deriving or aligning."""
    if not any(has_values(r.history, k) for r in runs for k in keys):
        why = f" ({'; '.join(problems[:2])})" if problems else ""
        raise LrscanError(f"none of the {len(runs)} matching runs logged any of {', '.join(keys)}{why}")
    for run in runs:
        absent = [k for k in keys if not has_values(run.history, k)]
        if absent:
            problems.append(f"run {run.run_id}: no values logged for {', '.join(absent)}")
        n_missing, after, every = missing_steps(run.history[K.STEP_COLUMN])
        if n_missing:
            cadence = f" (it logs every {every} steps)" if every > 1 else ""
            problems.append(f"run {run.run_id}: {n_missing} step(s) missing from its history{cadence}, "
                            f"the first after step {after}")
    steps, runs_frame = build_frames(runs, keys)
    return Loaded(steps=steps, runs=runs_frame, skipped_records=skipped, problems=problems, notes=notes)


def _nothing_left(left_out: LeftOut) -> str:
    """Why no run matched: how many there were, and the filters that left them out."""
    if left_out.by_filter:
        return f": {left_out.note()}"
    if left_out.seen:
        return f" (of its {left_out.seen} runs, none passes these filters)"
    return ""
