"""Build the two frames from the runs read: `steps` (one row per run and step) and `runs` (one row per run).

`steps` is built for size (50 runs x 200k steps, 10M rows, in ~0.3 GiB): run ids, names, groups and
sweeps are categoricals (one-byte codes: the compact run code), and of the TrainConfig fields it
holds only those that tell the runs apart: the fields that take more than one value across the
runs read, and always `schedule` and `seed` (the analysis splits by them). Every field, constant or
not, is a plain column of `runs`; `with_config(steps, runs)` joins the ones `steps` lacks back
on (as one ~40 fields wide frame cost 72 B a row, ~0.7 GiB at 10M rows). The config columns are
categoricals whose categories carry the typed values (int64, float64, bool, str; lists as strings
like "[100000]"), so `==`, `isin`, `groupby` and seaborn's `hue` work unchanged; use
`.astype(float)` for arithmetic, or the plain columns of `runs`. Losses are float32 (ample for
plotting and picking), lr and lre float64 (exact exponents).
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.runconfig import CONFIG_IN_RUNS
from lrscan.pipeline import keys as K
from lrscan.pipeline.config import field_names, field_types
from lrscan.pipeline.runlog import RunFile

# config fields `steps` holds even when every run has one value: the analysis splits runs by them
ALWAYS_ON_STEPS = ("schedule", "seed")
# history keys read when the caller names none: the four per-step keys and the optional two
DEFAULT_KEYS = (*K.STEP_KEYS, K.SMOOTH_LOSS, K.DEV_LOSS)
OPTIONAL_KEYS = (K.SMOOTH_LOSS, K.DEV_LOSS)  # columns only when some run logged them
FLOAT64_KEYS = (K.LR, K.LRE)  # exact exponents; every other loss-like key fits float32
FLOAT32_KEYS = (K.LOSS, K.LOG10_LOSS, K.SMOOTH_LOSS, K.DEV_LOSS)
SUMMARY_ORDER = (
    K.TRAIN_LOSS, K.DEV_LOSS, K.TEST_LOSS, K.FINAL_STEP, K.STOP_STEP, K.STOP_REASON,
    K.DIVERGED_AT_STEP, K.BEST_SMOOTH_LOSS, K.STEPS_PER_SECOND,
)
INT_SUMMARY_KEYS = (K.FINAL_STEP, K.STOP_STEP, K.DIVERGED_AT_STEP)


def build_frames(runs: list[RunFile], value_keys: Sequence[str],
                 run_info: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(steps, runs) of the runs read: `value_keys` as the per-step columns, `run_info[run_id]` as run columns."""
    runs = sorted(runs, key=lambda r: r.run_id)
    for run in runs:
        _sort_by_step(run)
    config_fields = [f for f in field_names() if any(f in r.config for r in runs)]
    # TrainConfig has fields named like frame columns (run_id, lr): there the column wins
    step_taken = {*K.ID_COLUMNS, K.STEP_COLUMN, *value_keys}
    types = field_types()
    on_steps = [f for f in config_fields if f not in step_taken
                and (f in ALWAYS_ON_STEPS or _varies([_typed(r.config.get(f), types[f]) for r in runs]))]
    # runs first: the steps frame takes each run's columns away as it copies them
    runs_frame = _runs_frame(runs, [f for f in config_fields if f not in RUN_COLUMNS], run_info or {})
    steps = _steps_frame(runs, list(value_keys), on_steps)
    left_to_runs = [f for f in config_fields if f not in step_taken and f not in on_steps]
    if left_to_runs:
        steps.attrs[CONFIG_IN_RUNS] = left_to_runs
    return steps, runs_frame


def _varies(values: list[Any]) -> bool:
    """Whether the runs' values of a field are not all one value (a run without the field counts as one more)."""
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1


def has_values(history: Mapping[str, np.ndarray], key: str) -> bool:
    values = history.get(key)
    return values is not None and bool(np.any(~np.isnan(values)))


_EMPTY = np.zeros(0)
RUN_COLUMNS = ("run_id", "run_name", "group", "sweep", "tags", "job_type", "state", "exit_code", "path",
               "n_steps", "first_step", "last_step")
# what the loader says about each run when it chose its keys (analysis.columns) and guessed its schedule
RUN_INFO_COLUMNS = ("loss_key", "lr_key", "step_key", "schedule_from", "schedule_note")


def _sort_by_step(run: RunFile) -> None:
    steps = run.history.get("step")
    if steps is None:
        run.history = {"step": np.zeros(0, np.int64)}
        return
    if len(steps) > 1 and not np.all(steps[1:] > steps[:-1]):
        # keep the last row of a repeated step, as wandb's own summary would
        _, first_rev = np.unique(steps[::-1], return_index=True)
        order = len(steps) - 1 - first_rev
        run.history = {k: v[order] for k, v in run.history.items()}
        run.nan_logged = {k: v[order] for k, v in run.nan_logged.items()}


def value_dtype(key: str) -> np.dtype:
    return np.dtype(np.float32) if key in FLOAT32_KEYS else np.dtype(np.float64)


def _typed(value: Any, tp: Any) -> Any:
    """A config value as the TrainConfig field type (whole floats come back from JSON as ints)."""
    if value is None:
        return None
    try:
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            items = value if isinstance(value, (list, tuple)) else [value]
            return json.dumps([_typed(v, inner) for v in items])
        if tp is bool:
            flag = parse_bool(value)
            return flag if flag is not None else str(value)  # an odd value: shown as given, not guessed
        if tp is int:
            return int(value) if float(value).is_integer() else float(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    return str(value)  # an odd value from an older run: shown, not dropped


_TRUE_WORDS = ("true", "1")
_FALSE_WORDS = ("false", "0")


def parse_bool(value: Any) -> bool | None:
    """A config flag as a bool: True/False, 1/0 and the strings "True"/"true"/"1", "False"/"false"/"0"
    (a sweep's `--flag=False` or a hand-written config); None for anything else. Not `bool(value)`,
    for which the string "False" is True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _category_dtype(tp: Any) -> Any:
    if tp is int:
        return np.int64
    if tp is float:
        return np.float64
    if tp is bool:
        return bool
    return None  # strings: pandas' default string dtype


def _categorical(per_run: list[Any], lengths: np.ndarray, dtype: Any = None) -> pd.Categorical:
    """A categorical column with one value per run repeated over its rows, built from codes."""
    present = [v for v in per_run if v is not None and not (isinstance(v, float) and np.isnan(v))]
    try:
        categories = sorted(set(present))
    except TypeError:  # mixed types (an odd old run): keep them as strings
        per_run = [None if v is None else str(v) for v in per_run]
        categories = sorted({v for v in per_run if v is not None})
        dtype = None
    if dtype is not None and any(type(c) is float for c in categories) and dtype is np.int64:
        dtype = np.float64  # an int field holding a non-whole value somewhere
    kinds = {bool: (bool,), np.int64: (int,), np.float64: (int, float)}.get(dtype, ())
    if kinds and not all(isinstance(c, kinds) and (dtype is bool or not isinstance(c, bool)) for c in categories):
        dtype = None  # an odd value kept as given (a string): the field's dtype would change it
    index = pd.Index(categories, dtype=dtype) if categories else pd.Index([], dtype=dtype or object)
    code_of = {v: i for i, v in enumerate(categories)}
    codes = np.array([code_of.get(v, -1) if v is not None else -1 for v in per_run], np.int32)
    return pd.Categorical.from_codes(np.repeat(codes, lengths), dtype=pd.CategoricalDtype(index))


def _steps_frame(runs: list[RunFile], value_keys: list[str], config_fields: list[str]) -> pd.DataFrame:
    lengths = np.array([len(r.history["step"]) for r in runs], np.int64)
    types = field_types()
    columns: dict[str, Any] = {
        "run_id": _categorical([r.run_id for r in runs], lengths),
        "run_name": _categorical([r.name for r in runs], lengths),
        "group": _categorical([r.group for r in runs], lengths),
        "sweep": _categorical([r.sweep_id for r in runs], lengths),
    }
    for name in config_fields:
        tp = types[name]
        columns[name] = _categorical([_typed(r.config.get(name), tp) for r in runs], lengths, _category_dtype(tp))
    columns[K.STEP_COLUMN] = np.concatenate([r.history["step"] for r in runs]).astype(np.int64, copy=False)
    for run in runs:
        run.history = {k: v for k, v in run.history.items() if k != K.STEP_COLUMN}  # as the values below
    for key in value_keys:
        dtype = value_dtype(key)
        out = np.empty(int(lengths.sum()), dtype)
        at = 0
        for run, n in zip(runs, lengths):
            values = run.history.get(key)
            out[at : at + n] = values if values is not None else np.nan
            at += n
            # the run's copy goes as soon as the frame has it: runs and frame never both held whole
            # (a new dict: the caller's, shared with copies of the run, stays as it was)
            run.history = {k: v for k, v in run.history.items() if k != key}
        columns[key] = out
    return pd.DataFrame(columns, copy=False)


def _runs_frame(runs: list[RunFile], config_fields: list[str],
                run_info: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    types = field_types()
    rows = []
    summary_keys: dict[str, None] = dict.fromkeys(k for k in SUMMARY_ORDER if any(k in r.summary for r in runs))
    summary_keys.update(dict.fromkeys(sorted({k for r in runs for k in r.summary if not k.startswith("_")})))
    for run in runs:
        steps = run.history["step"]
        row = {
            "run_id": run.run_id, "run_name": run.name, "group": run.group, "sweep": run.sweep_id,
            "tags": ",".join(run.tags), "job_type": run.job_type, "state": run.state,
            "exit_code": run.exit_code, "path": run.path, "n_steps": len(steps),
            "first_step": int(steps[0]) if len(steps) else None,
            "last_step": int(steps[-1]) if len(steps) else None,
        }
        if run_info:
            row.update({c: run_info.get(run.run_id, {}).get(c) for c in RUN_INFO_COLUMNS})
        row.update({name: _typed(run.config.get(name), types[name]) for name in config_fields})
        row.update({key: run.summary.get(key) for key in summary_keys if key not in row})
        # a NaN as a key's last logged value reads as a missing one in a frame: say which (analysis.judge: diverged)
        nan_last = [k for k in summary_keys if isinstance(run.summary.get(k), float) and math.isnan(run.summary[k])]
        if nan_last:
            row[K.NAN_LAST] = ",".join(nan_last)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = frame.astype({"exit_code": "Int64", "first_step": "Int64", "last_step": "Int64", "n_steps": "int64"})
    for name in config_fields:
        frame[name] = _plain_column(frame[name], _category_dtype(types[name]))
    for key in summary_keys:
        if key in frame and key not in config_fields and key not in RUN_INFO_COLUMNS:
            frame[key] = _plain_column(frame[key], np.int64 if key in INT_SUMMARY_KEYS else None)
    return frame


def _plain_column(column: pd.Series, dtype: Any) -> pd.Series:
    """Typed run-level values: ints (nullable when some run lacks them), floats, bools, strings."""
    values = [v for v in column if v is not None and not (isinstance(v, float) and np.isnan(v))]
    whole = bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if dtype is np.int64 or (dtype is None and whole):
        if all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):
            return column.astype("Int64")
        return column.astype("float64")
    if dtype is np.float64 or (values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        return column.astype("float64")
    if values and all(isinstance(v, bool) for v in values):  # a flag given as a string stays a string
        return column.astype("boolean") if len(values) < len(column) else column.astype(bool)
    if values and all(isinstance(v, str) for v in values):
        return column.astype("str")
    return column

