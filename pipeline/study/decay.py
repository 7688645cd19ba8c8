"""The decay grid follows the pick: its lrs as factors of the chosen lr, its points checked, its result in words.

    check_decay_factors("0.1,0.01")       # ((0.1,), (0.01,)): one option per tuple, one factor per boundary
    decay_lr_values(0.1, ((0.1,),))        # [[0.01]]: the grid's decay_lrs values
    best_decay_sentence(summary["decay"], chosen_lr), decay_table_markdown(...)   # report.md's lines
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from lrscan.pipeline.errors import LrscanError

# the decayed lrs, as factors of the picked lr: one option per tuple, one factor per decay boundary
DEFAULT_DECAY_FACTORS = ((0.1,), (0.01,))


def check_decay_factors(factors: Any, flag: str = "--decay_factors") -> tuple[tuple[float, ...], ...]:
    """Decay options as factors of the picked lr: each in (0, 1), falling at each boundary of an option.

    `factors`: numbers (one-boundary options, e.g. 0.1, 0.01) or lists (one factor per boundary,
    e.g. [[0.1, 0.01]]). Given as text (the flag), `0.1,0.01` or a YAML list.
    """
    given = factors
    if isinstance(factors, str):
        text = factors.strip()
        try:
            factors = yaml.safe_load(text) if text.startswith("[") else [yaml.safe_load(t) for t in text.split(",")]
        except yaml.YAMLError:
            raise LrscanError(f"{flag}={given}: expected numbers such as 0.1,0.01 or lists such as [[0.1, 0.01]]"
                              ) from None
    def number(f: Any) -> Any:
        try:
            return float(f) if isinstance(f, str) else f  # YAML reads 1e-3 as text
        except ValueError:
            return f

    options = []
    for option in factors if isinstance(factors, (list, tuple)) else [factors]:
        option = tuple(map(number, option)) if isinstance(option, (list, tuple)) else (number(option),)
        ok = bool(option) and all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1 for f in option)
        if not ok or any(b >= a for a, b in zip(option, option[1:])):
            raise LrscanError(f"{flag}={given}: each decayed lr is the picked lr times a factor in (0, 1), smaller at "
                              f"each later boundary (e.g. 0.1,0.01 or [[0.1, 0.01]]); got {list(option)}")
        options.append(tuple(float(f) for f in option))
    if not options:
        raise LrscanError(f"{flag}={given}: give at least one factor, e.g. 0.1,0.01")
    return tuple(options)


def decay_lr_values(best_lr: float, factors: Sequence[Sequence[float]]) -> list[list[float]]:
    """The decay grid's `decay_lrs` values: the picked lr times each option's factors, not rounded."""
    return [[best_lr * f for f in option] for option in factors]


def check_decay_points(sweep) -> None:
    """Every point of a decay grid lowers its lr at each boundary, with one lr per boundary; else one line."""
    from lrscan.pipeline.config import expand_coupled

    for index, point in enumerate(sweep.points):
        fields: dict[str, Any] = {}
        for key, value in point.items():
            fields.update(expand_coupled(key, value))
        lr, steps, lrs = fields.get("lr"), list(fields.get("decay_steps") or []), list(fields.get("decay_lrs") or [])
        if len(steps) != len(lrs):
            raise LrscanError(f"decay grid point {index}: decay_steps {steps} has {len(steps)} boundaries but "
                              f"decay_lrs {lrs} has {len(lrs)} lrs; give one factor per boundary in --decay_factors")
        before = [lr, *lrs]
        if lr is not None and any(b >= a for a, b in zip(before, before[1:])):
            raise LrscanError(f"decay grid point {index}: lr {lr} then decay_lrs {lrs} is not a decay (each lr must be "
                              f"below the one before)")


def _as_list(value: Any) -> list[Any]:
    """A decay field as the runs' config gives it (a list, or its text "[0.01]") as a list."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _factor_text(decay_lrs: Any, best_lr: float) -> str:
    """The decayed lrs as factors of the picked lr: 0.01, or [0.1, 0.01] for two boundaries."""
    from lrscan.analysis.report import value_label

    lrs = _as_list(decay_lrs)
    return value_label([float(f"{lr / best_lr:.4g}") for lr in lrs]) if lrs and best_lr > 0 else ""


def _with_fixed_decay(decay: Mapping[str, Any], best_lr: float) -> tuple[dict[str, Any], list[str]]:
    """The best config and the swept fields, with `decay_lrs` added when the grid held one decayed lr
    (the analysis leaves out a field that did not vary; a person still wants to read it)."""
    best, by = dict(decay.get("best") or {}), list(decay.get("by") or [])
    factors = decay.get("decay_factors") or []
    if "decay_lrs" not in by and len(factors) == 1:
        best["decay_lrs"] = [best_lr * f for f in factors[0]]
        by.append("decay_lrs")
    return best, by


def best_decay_sentence(decay: Mapping[str, Any], best_lr: float) -> str:
    """The decay grid's winner in words, 4 significant digits: not a dict."""
    from lrscan.analysis.report import config_text

    if not decay.get("best"):
        return "The decay grid gave no best config."
    best, by = _with_fixed_decay(decay, best_lr)
    factor = _factor_text(best.get("decay_lrs"), best_lr) if "decay_lrs" in best else ""
    of = f" (the picked lr x {factor})" if factor else ""
    metric = str(best.get("metric", decay.get("metric", ""))).replace("_", " ")
    n = len(decay.get("table") or [])
    return (f"Best decay config at lr {best_lr:.4g}: {config_text(best, by)}{of}, "
            f"{metric} {float(best['value']):.4g}" + (f", the lowest of {n} configs." if n > 1 else "."))


def decay_table_markdown(decay: Mapping[str, Any], best_lr: float) -> str:
    """The decay grid as a markdown table: swept fields as people write them, factors, losses to 4 digits."""
    import pandas as pd

    from lrscan.analysis.report import markdown_table, readable_table

    table = pd.DataFrame(decay.get("table") or [])
    if table.empty:
        return ""
    best, by = _with_fixed_decay(decay, best_lr)
    if "decay_lrs" not in table.columns and "decay_lrs" in best:
        table["decay_lrs"] = [best["decay_lrs"]] * len(table)
    by = [c for c in by if c in table.columns]
    shown = readable_table(table, by)
    if "decay_lrs" in table.columns:
        shown.insert(list(shown.columns).index("decay_lrs") + 1, "x picked lr",
                     table["decay_lrs"].map(lambda v: _factor_text(v, best_lr)))
    wanted = [*by, "x picked lr", "final_dev_loss", "final_test_loss", "final_block_loss", "n_runs"]
    return markdown_table(shown[[c for c in wanted if c in shown.columns]])
