"""The runs' config on per-row frames: `with_config` joins the config fields a frame lacks back on from `runs`.

`load_runs` keeps only the config fields that tell the runs apart on `steps` (analysis.sources.frame
says why); everything that reads a constant field (the zoom sweep's shared config, the report's
block means, the per-run table) takes it from `runs` through this.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lrscan.pipeline import keys as K
from lrscan.pipeline.config import field_names

# steps.attrs key: the config fields `load_runs` left to `runs` (shared by every run), so a reader of steps
# alone that needs them can say so instead of going on without them
CONFIG_IN_RUNS = "lrscan_config_in_runs"
# columns that hold a value per step, never a run's config, though TrainConfig has fields named so (lr)
PER_STEP_COLUMNS = (K.STEP_COLUMN, K.LR, K.LRE, K.LOSS, K.LOG10_LOSS, K.SMOOTH_LOSS, K.DEV_LOSS)


def with_config(frame: pd.DataFrame, runs: pd.DataFrame | None, fields: Sequence[str] | None = None) -> pd.DataFrame:
    """`frame` (any frame with ``run_id``: steps, block means) with the config fields of `runs` it lacks.

    One value per run, as categoricals over the frame's rows (one byte a row), so joining every
    field back onto `steps` gives the wide frame, ~40 B a row more. `fields`: only these (default:
    every TrainConfig field `runs` has). Columns the frame has are kept as they are, and names the
    frame holds a per-step value under (``lr``, ``steps``' logged lr) are never overwritten. The
    config columns come out in TrainConfig's order, where the frame's first one was (else after
    its id columns). Rows of a run `runs` lacks get missing values.
    """
    if runs is None or "run_id" not in runs.columns or "run_id" not in frame.columns:
        return frame
    names = [f for f in field_names() if (fields is None or f in fields)]
    wanted = [f for f in names if f in runs.columns and f not in frame.columns and f not in K.ID_COLUMNS
              and f not in PER_STEP_COLUMNS]
    if not wanted:
        return _joined(frame, fields)
    codes, uniques = pd.factorize(frame["run_id"], sort=False)  # a categorical's codes: no string per row
    per_run = runs.assign(run_id=runs["run_id"].astype(str)).drop_duplicates("run_id").set_index("run_id")
    at = per_run.index.get_indexer(np.asarray(uniques).astype(str))
    added = {}
    for name in wanted:
        values = per_run[name].to_numpy(dtype=object)
        per_code = [values[i] if i >= 0 else None for i in at]
        present = [v for v in per_code if not pd.isna(v)]
        try:
            categories = sorted(set(present))
        except TypeError:  # mixed types (an odd old run): as strings, as `steps` holds them
            per_code = [None if pd.isna(v) else str(v) for v in per_code]
            categories = sorted({v for v in per_code if v is not None})
        dtype = per_run[name].dtype  # categories never hold a missing value: Int64 -> int64, boolean -> bool
        dtype = getattr(dtype, "numpy_dtype", dtype) if categories and dtype.kind in "iufb" else None
        index = pd.Index(categories, dtype=dtype)
        code_of = {v: i for i, v in enumerate(categories)}
        run_codes = np.array([code_of[v] if not pd.isna(v) else -1 for v in per_code] + [-1], np.int32)
        # codes -1 (a row without a run id) index the trailing -1
        added[name] = pd.Categorical.from_codes(run_codes[codes], dtype=pd.CategoricalDtype(index))
    out = frame.assign(**added)
    config = [c for c in field_names() if c in out.columns and c not in K.ID_COLUMNS and c not in PER_STEP_COLUMNS]
    first_config = next((i for i, c in enumerate(frame.columns) if c in config), None)
    if first_config is None:
        ids = [i for i, c in enumerate(frame.columns) if c in K.ID_COLUMNS]
        first_config = max(ids) + 1
    rest = [c for c in frame.columns if c not in config]
    before = [c for c in frame.columns[:first_config] if c not in config]
    return _joined(out[[*before, *config, *[c for c in rest if c not in before]]], fields)


def _joined(frame: pd.DataFrame, fields: Sequence[str] | None) -> pd.DataFrame:
    """`frame`, no longer marked as lacking config fields once every field was joined on."""
    if fields is None and CONFIG_IN_RUNS in frame.attrs:
        frame = frame.copy(deep=False)
        frame.attrs = {k: v for k, v in frame.attrs.items() if k != CONFIG_IN_RUNS}
    return frame
