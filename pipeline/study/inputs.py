"""Single numbers users pass from Python (ints, floats, numpy scalars, 0-d arrays and tensors) made plain, or refused.

    steps = whole_number(np.int64(500), "steps", where="range_test")    # 500
    lre_min = real_number(np.float32(-4), "lre_min", where="range_test")  # -4.0

numpy's scalar types are not Python's (`np.float32` is no `float`, `np.int64` no `int`), yet they are
what `np.linspace(...)[i]` and `df["lr"].max()` give: the range test's steps and ends go through
here, so both work wherever a number does (lists of seeds and lrs: `own_task.check_seeds` and
`check_lrs`). A refusal is one `LrscanError` naming the function the user called (`where`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from lrscan.pipeline.errors import LrscanError


def _is_whole(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Integral):  # int, np.int64, ...
        return True
    return isinstance(value, (numbers.Real, np.floating)) and math.isfinite(float(value)) and float(value).is_integer()


def whole_number(value: Any, name: str, *, where: str, minimum: int | None = None) -> int:
    """`value` as an int (a Python or numpy integer, or a float such as 1e3 that is whole)."""
    value = _scalar(value)
    if not _is_whole(value):
        raise LrscanError(f"{where}: {name}={_shown(value)}: expected a whole number"
                          + (f" >= {minimum}" if minimum is not None else ""))
    number = int(value)
    if minimum is not None and number < minimum:
        raise LrscanError(f"{where}: {name}={number}: expected a whole number >= {minimum}")
    return number


def real_number(value: Any, name: str, *, where: str, positive: bool = False, what: str = "") -> float:
    """`value` as a finite float (a Python or numpy number); `positive`: > 0 as well; `what`: what the refusal
    says was expected (default "a finite number")."""
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)) \
            or not math.isfinite(float(value)) or (positive and not float(value) > 0):
        raise LrscanError(f"{where}: {name}={_shown(value)}: expected "
                          + (what or "a finite number" + (" > 0" if positive else "")))
    return float(value)


def _scalar(value: Any) -> Any:
    """A 0-d numpy array or a one-element tensor's value as its scalar; anything else as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    if type(value).__module__.startswith("torch") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _shown(values: Any) -> str:
    """`values` as the user would write them: numpy scalars as plain numbers (numpy 2 shows `np.float64(2.5)`)."""
    if isinstance(values, np.generic):
        return repr(values.item())
    if isinstance(values, (list, tuple)):
        return repr(type(values)(v.item() if isinstance(v, np.generic) else v for v in values))
    if hasattr(values, "ndim") and hasattr(values, "tolist"):
        return f"{type(values).__name__}({values.tolist()!r})"
    return repr(values)
