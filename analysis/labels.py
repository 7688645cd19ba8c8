"""How a config value reads to a person: the labels the report's tables and the figures' legends share."""

from __future__ import annotations

import ast
import math
from typing import Any

import pandas as pd


def value_label(value: Any) -> str:
    """A config value as a person reads it: ``[3000]`` -> ``3000``, 0.0064371 -> ``0.006437`` (4 significant digits).

    Lists of one (a one-boundary decay, as the runs' config holds it) lose their brackets; longer
    lists keep them, ``[100000, 150000]``. Text that is not a literal is returned as it is.
    """
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
        if not isinstance(parsed, (list, tuple, int, float)):
            return value
        value = parsed
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if hasattr(value, "item") and not isinstance(value, (list, tuple)):
        value = value.item()  # a numpy scalar
    if isinstance(value, (list, tuple)):
        return value_label(value[0]) if len(value) == 1 else "[" + ", ".join(value_label(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
