"""Plain Python values from NumPy and pandas ones, for JSON, YAML and wandb tables: NaN and NA become None."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def plain_value(value: Any) -> Any:
    """One numpy/pandas scalar as plain Python (NA -> None); anything else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def json_safe(value: Any) -> Any:
    """Replace NaN/inf/NA with None and numpy scalars/tuples with plain Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    value = plain_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def object_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Plain object columns with None for missing: wandb.Table takes no pandas string/categorical dtypes."""
    return frame.astype(object).where(frame.notna(), None)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-able records: numpy scalars to Python, NaN/NA to None."""
    return [json_safe(r) for r in object_frame(frame).to_dict(orient="records")]
