"""The zoom sweep: a W&B grid sweep that repeats the range test on a narrower range around a pick."""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lrscan.analysis.blocks import NOT_HYPERPARAMETERS, SCHEDULE, SCHEDULE_RANGE, SEED, run_columns
from lrscan.analysis.pick import ExponentPick, range_runs
from lrscan.analysis.plain import json_safe, plain_value
from lrscan.analysis.runconfig import CONFIG_IN_RUNS, with_config
from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig, field_names
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.yamlfile import read_yaml_mapping

TRAIN_PROGRAM, TRAIN_COMMAND = keys.TRAINER_PROGRAM, list(keys.TRAINER_COMMAND)


def zoom_sweep(
    pick: ExponentPick,
    *,
    steps: pd.DataFrame | None = None,
    runs: pd.DataFrame | None = None,
    width: float | None = None,
    points: int = 1000,
    seeds: int | Sequence[int] = 3,
    base_yaml: str | os.PathLike | Mapping[str, Any] | None = None,
    name: str = "lr_zoom",
) -> dict[str, Any]:
    """A W&B grid sweep (as a dict) that repeats the range test on a narrower range around the pick.

    Parameters
    ----------
    pick : ExponentPick
        The coarse pick to zoom around.
    steps : DataFrame, optional
        The coarse runs' steps: config fields that all their range runs share and that differ from
        `TrainConfig`'s defaults (model size, batch size, init...) become fixed parameters, so the
        zoom measures the same model. `load_runs` keeps on `steps` only the fields that vary
        across runs: pass its `runs` too, where the shared ones are.
    runs : DataFrame, optional
        The runs frame (`load_runs(...).runs`): the config fields `steps` lacks come from it.
    width : float, optional
        Width of the new range in decades, centred on ``best_lre``. Default: the bootstrap CI
        widened by two bins on each side, and at least 0.5 decades.
    points : int
        Lrs tried per run: the range runs' ``steps``.
    seeds : int or sequence of int
        A count (seeds 1..N) or the seeds themselves; they become a ``values:`` list.
    base_yaml : path or mapping, optional
        A sweep YAML (e.g. ``sweeps/lr_range.yaml``) whose program, command, metric and other
        parameters are kept; its range, steps and seed parameters are replaced. Without it:
        ``python3 -m pipeline.train ${args}`` minimising ``best_smooth_loss``, as lrscan's YAMLs.

    Returns
    -------
    dict
        The sweep config. The range is one coupled pair, so ``lre_min`` and ``lre_max`` are
        ``value:`` entries; ``seed`` is ``values:``. A coupled parameter of the base (``lre_range``
        in ``sweeps/lr_range_pairs.yaml``: values that are mappings of fields) loses the fields the
        zoom sets, and goes when nothing else is left in it; kept, each point would give
        ``lre_min`` twice. Write it with `write_sweep_yaml`.
    """
    if int(points) != points or points < 2:
        raise LrscanError(f"points={points}: a range test needs at least 2 steps")
    seed_list = list(range(1, int(seeds) + 1)) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seed_list:
        raise LrscanError("seeds: give at least one seed")
    if width is None:
        low, high = pick.best_lre_ci
        span = (high - low) if math.isfinite(low) and math.isfinite(high) else 0.0
        width = max(0.5, span + 4 * pick.bin_width)
    if not (math.isfinite(width) and width > 0):
        raise LrscanError(f"width={width}: must be a positive number of decades")

    base = _read_base(base_yaml)
    lre_min = round(pick.best_lre - width / 2, 4)
    lre_max = round(pick.best_lre + width / 2, 4)
    zoomed = {
        "schedule": {"value": SCHEDULE_RANGE},
        "lre_min": {"value": lre_min},
        "lre_max": {"value": lre_max},
        "steps": {"value": int(points)},
        SEED: {"values": seed_list},
    }
    parameters = _without_fields(base.get("parameters") or {}, set(zoomed))
    if steps is not None:
        if runs is None and steps.attrs.get(CONFIG_IN_RUNS):
            raise LrscanError(f"zoom_sweep: the steps frame of load_runs holds only the config fields that differ "
                              f"between runs; the shared ones ({', '.join(steps.attrs[CONFIG_IN_RUNS][:3])}, ...) are "
                              f"in its runs frame: pass runs=loaded.runs too")
        parameters.update({k: {"value": v} for k, v in _shared_config(steps, runs).items() if k not in parameters})
    parameters.update(zoomed)
    low, high = pick.best_lre_ci
    ci_text = f"CI [{low:.3f}, {high:.3f}]" if math.isfinite(low) else "no CI"
    sweep = {
        "name": name,
        "description": (
            f"Range test zoomed to lre {lre_min}..{lre_max} around the pick {pick.best_lre:.3f} "
            f"({ci_text}) of {pick.n_runs} run(s), {len(seed_list)} seed(s)"
        ),
        "program": base.get("program", TRAIN_PROGRAM),
        "method": "grid",
        "command": base.get("command", TRAIN_COMMAND),
        "metric": base.get("metric", {"name": keys.BEST_SMOOTH_LOSS, "goal": "minimize"}),
    }
    sweep["parameters"] = dict(sorted(parameters.items()))
    return sweep


def write_sweep_yaml(sweep: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a sweep config as YAML, with a one-line comment saying what it answers; atomically."""
    path = Path(path)
    text = (
        "# Question: which lr exponent is best, measured at a finer resolution around the coarse pick?\n"
        f"# {sweep.get('description') or 'lrscan sweep'}\n"
        + yaml.safe_dump(json_safe(dict(sweep)), sort_keys=False, default_flow_style=False)
    )
    atomic_write_text(path, text)
    return path


def _shared_config(steps: pd.DataFrame, runs: pd.DataFrame | None) -> dict[str, Any]:
    """Config fields every range run shares that differ from TrainConfig's defaults (the model measured)."""
    first_rows = range_runs(steps).drop_duplicates("run_id")
    per_run = with_config(first_rows[run_columns(first_rows)], runs)
    defaults = TrainConfig().to_dict()
    skip = set(NOT_HYPERPARAMETERS) | {SEED, "lre_min", "lre_max", "steps", SCHEDULE}
    shared: dict[str, Any] = {}
    for name in field_names():
        if name in skip or name not in per_run.columns:
            continue
        values = per_run[name].dropna().unique()
        if len(values) != 1:
            continue
        value = plain_value(values[0])
        if isinstance(value, str) and isinstance(defaults[name], list):
            value = _parse_list(value)
        if value != defaults[name]:
            shared[name] = value
    return shared


def _without_fields(parameters: Mapping[str, Any], fields: set[str]) -> dict[str, Any]:
    """Sweep parameters with `fields` taken out: the plain ones, and the same keys inside coupled ones.

    A coupled parameter (a name that is not a config field, with mapping values) stands for its
    fields; its values lose the replaced keys and repeat values are merged. One left with nothing
    is dropped, as is a nested ``parameters:`` block left empty.
    """
    names = set(field_names())
    out: dict[str, Any] = {}
    for name, spec in parameters.items():
        if name in fields:
            continue
        if name in names or not isinstance(spec, Mapping):
            out[name] = spec
            continue
        spec = dict(spec)
        if isinstance(spec.get("parameters"), Mapping):
            spec["parameters"] = {k: v for k, v in spec["parameters"].items() if k not in fields}
            if spec["parameters"]:
                out[name] = spec
            continue
        if isinstance(spec.get("value"), Mapping):
            spec["value"] = {k: v for k, v in spec["value"].items() if k not in fields}
            if spec["value"]:
                out[name] = spec
            continue
        if isinstance(spec.get("values"), list) and any(isinstance(v, Mapping) for v in spec["values"]):
            kept: list[Any] = []
            for value in spec["values"]:
                value = {k: v for k, v in value.items() if k not in fields} if isinstance(value, Mapping) else value
                if value not in kept and value != {}:
                    kept.append(value)
            if kept:
                # the zoom is a grid: a random search's probabilities no longer match merged values
                out[name] = {**{k: v for k, v in spec.items() if k != "probabilities"}, "values": kept}
            continue
        out[name] = spec
    return out


def _parse_list(text: str) -> Any:
    try:
        return list(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError):
        return text


def _read_base(base_yaml) -> dict[str, Any]:
    if base_yaml is None:
        return {}
    if isinstance(base_yaml, Mapping):
        return dict(base_yaml)
    return read_yaml_mapping(base_yaml, "base sweep YAML")


