"""Numbers users pass from Python (ints, floats, numpy scalars and arrays, tensors' items) made plain, or refused.

    seeds = whole_numbers(np.arange(1, 4), "seeds", where="find")      # [1, 2, 3]
    steps = whole_number(np.int64(500), "steps", where="range_test")    # 500
    lrs = learning_rates(np.geomspace(1e-3, 1e-1, 3), "lrs", where="prove")

numpy's scalar types are not Python's (`np.float32` is no `float`, `np.int64` no `int`) and an array
is no `Sequence`, yet both are what `np.linspace`, `np.geomspace` and `df["lr"].to_numpy()` give: every
number the Python API takes goes through here, so both work wherever a list or a number does. A
refusal is one `LrscanError` naming the function the user called (`where`) and the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
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


def whole_numbers(values: Any, name: str, *, where: str, example: str = "[1, 2, 3]") -> list[int]:
    """A non-empty list, tuple, range or 1-d array of whole numbers as a list of ints."""
    items = _items(values, name, where=where, example=example)
    bad = [v for v in items if not _is_whole(_scalar(v))]
    if bad:
        raise LrscanError(f"{where}: {name}={_shown(values)}: {_shown(bad[0])} is not a whole number "
                          f"(e.g. {name}={example})")
    return [int(_scalar(v)) for v in items]


def learning_rates(values: Any, name: str, *, where: str, example: str = "[1e-3, 3e-3, 1e-2]") -> list[float]:
    """A non-empty list, tuple or 1-d array of positive finite numbers as a list of floats."""
    items = _items(values, name, where=where, example=example)
    for v in items:
        v = _scalar(v)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.number)) \
                or not (math.isfinite(float(v)) and float(v) > 0):
            raise LrscanError(f"{where}: {name}={_shown(values)}: {_shown(v)} is not a learning rate "
                              f"(a positive number)")
    return [float(_scalar(v)) for v in items]


def _scalar(value: Any) -> Any:
    """A 0-d numpy array or a one-element tensor's value as its scalar; anything else as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    if type(value).__module__.startswith("torch") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _items(values: Any, name: str, *, where: str, example: str) -> list[Any]:
    if hasattr(values, "ndim") and hasattr(values, "tolist"):  # a numpy array, a torch tensor
        if values.ndim != 1:
            raise LrscanError(f"{where}: {name} is a {values.ndim}-d array of shape {values.shape}: expected a 1-d one "
                              f"or a list, e.g. {name}={example}")
        items = values.tolist()
    elif isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise LrscanError(f"{where}: {name}={_shown(values)}: expected a list, e.g. {name}={example}")
    else:
        items = list(values)
    if not items:
        raise LrscanError(f"{where}: {name} is empty: expected at least one, e.g. {name}={example}")
    return items


def _shown(values: Any) -> str:
    """`values` as the user would write them: numpy scalars as plain numbers (numpy 2 shows `np.float64(2.5)`)."""
    if isinstance(values, np.generic):
        return repr(values.item())
    if isinstance(values, (list, tuple)):
        return repr(type(values)(v.item() if isinstance(v, np.generic) else v for v in values))
    if hasattr(values, "ndim") and hasattr(values, "tolist"):
        return f"{type(values).__name__}({values.tolist()!r})"
    return repr(values)
