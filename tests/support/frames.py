"""Synthetic frames shaped like `analysis.load_runs`'s output, with curves whose answer is known.

Ids as categoricals, config fields, step/lr/lre/loss/log10_loss: what the analysis tests share.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from lrscan.pipeline.config import TrainConfig

ID_COLUMNS = ["run_id", "run_name", "group", "sweep"]


def range_history(seed: int, lre_min: float = -3.0, lre_max: float = 0.0, steps: int = 1000, *,
                  best_lre: float = -1.2, noise: float = 0.05, stop_lre: float | None = None) -> pd.DataFrame:
    """A range test whose loss is a parabola in lre with its minimum at `best_lre`, plus noise."""
    rng = np.random.default_rng(seed)
    lre = np.linspace(lre_min, lre_max, steps)
    loss = 2.0 + (lre - best_lre) ** 2 + rng.normal(0.0, noise, steps)
    hist = pd.DataFrame({"step": np.arange(steps, dtype="int64"), "lr": 10.0 ** lre, "lre": lre, "loss": loss})
    return hist if stop_lre is None else hist.loc[hist["lre"] <= stop_lre]


def decay_history(seed: int, decay_step: int, decay_lr: float, steps: int = 6000, lr: float = 0.1) -> pd.DataFrame:
    """Step-decay training: the loss falls from ln(27) to a floor set by the lr in use, and keeps
    settling after the drop, so an earlier drop to a lower lr ends lowest."""
    rng = np.random.default_rng(seed * 7919 + decay_step + int(decay_lr * 1e6))
    step = np.arange(steps, dtype="int64")
    current = np.where(step < decay_step, lr, decay_lr)
    floor = 2.1 + 0.5 * current + 0.05 * np.exp(-np.maximum(step - decay_step, 0) / 1000)
    loss = floor + 1.2 * np.exp(-step / 800) + rng.normal(0.0, 0.02, steps)
    return pd.DataFrame({"step": step, "lr": current, "lre": np.log10(current), "loss": loss})


def make_loaded(runs: list[tuple[dict, pd.DataFrame]], summaries: dict[int, dict] | None = None) -> SimpleNamespace:
    """Frames like `load_runs` returns for (config, history) pairs: run i gets id ``run{i:03d}``.

    Checked against the real loader in tests/analysis/test_main.py (same columns, same dtypes kinds).

    The config's ``lr`` stays out of `steps` (the logged lr takes that name there) and lives in `runs`.
    """
    summaries = summaries or {}
    step_frames, run_rows = [], []
    for i, (config, hist) in enumerate(runs):
        cfg = {k: (str(v) if isinstance(v, list) else v) for k, v in TrainConfig.from_mapping(config).to_dict().items()
               if k != "run_id"}
        ids = {"run_id": f"run{i:03d}", "run_name": f"run-{i}", "group": "g", "sweep": ""}
        frame = pd.DataFrame({**ids, **{k: v for k, v in cfg.items() if k != "lr"}}, index=hist.index)
        with np.errstate(divide="ignore", invalid="ignore"):  # a test may log a zero or NaN loss on purpose
            log10_loss = np.log10(hist["loss"].to_numpy()).astype("float32")
        logged = hist.assign(loss=hist["loss"].astype("float32"), log10_loss=log10_loss)
        step_frames.append(pd.concat([frame, logged], axis=1))
        tail = hist["loss"].iloc[-200:].mean()
        run_rows.append({**ids, "state": "finished", "n_steps": len(hist), **cfg,
                         "train_loss": tail, "dev_loss": tail + 0.05, "test_loss": tail + 0.06,
                         "final_step": int(hist["step"].max()), **summaries.get(i, {})})
    steps = pd.concat(step_frames, ignore_index=True)
    # as the loader: of the config fields only those that tell the runs apart stay, and schedule and seed
    runs_frame = pd.DataFrame(run_rows)
    shared = [k for k in cfg if k in steps.columns and k not in ("schedule", "seed", "lr")  # lr: the logged one
              and runs_frame[k].astype(str).nunique(dropna=False) == 1]
    steps = steps.drop(columns=shared)
    # ids and config fields are categoricals (their values repeat on every row of a run)
    per_run = [c for c in steps.columns if c not in ("step", "lr", "lre", "loss", "log10_loss")]
    steps[per_run] = steps[per_run].astype("category")
    if shared:
        steps.attrs["lrscan_config_in_runs"] = shared  # analysis.runconfig.CONFIG_IN_RUNS, as the loader marks it
    return SimpleNamespace(steps=steps, runs=runs_frame, skipped_records=0, problems=[])


def range_loaded(seeds=(1, 2, 3, 4, 5), **kwargs) -> SimpleNamespace:
    return make_loaded([({"seed": s, "schedule": "range", "steps": 1000}, range_history(s, **kwargs)) for s in seeds])


def decay_loaded(seeds=(1, 2), decay_steps=(2000, 4000), decay_lrs=(0.01, 0.001), steps=6000) -> SimpleNamespace:
    runs = [({"seed": s, "schedule": "step", "steps": steps, "decay_steps": [d], "decay_lrs": [lr]},
             decay_history(s, d, lr, steps)) for s in seeds for d in decay_steps for lr in decay_lrs]
    return make_loaded(runs)


def one_run(values: np.ndarray, steps: np.ndarray | None = None, **config) -> pd.DataFrame:
    steps = np.arange(len(values), dtype="int64") if steps is None else steps
    return pd.DataFrame({"run_id": pd.Categorical(["a"] * len(values)), "step": steps,
                         "log10_loss": np.asarray(values, dtype="float32"), **config})


# -- load_runs(SPECS runs, group="A").steps, by hand -------------------------------------------------


def cat(values: Sequence[Any], categories: Sequence[Any], dtype: Any = None) -> pd.Categorical:
    return pd.Categorical(values, dtype=pd.CategoricalDtype(pd.Index(categories, dtype=dtype)))


def expected_group_a_steps() -> pd.DataFrame:
    """load_runs(group="A").steps, written out by hand."""
    a1, a2 = 5 * ["a1"], 3 * ["a2"]
    lre = [-3.0, -2.25, -1.5, -0.75, 0.0, -2.0, -1.0, 0.5]
    loss = [2.0, 2.25, 2.5, 2.75, 3.0, 2.0, 2.25, 2.5]
    return pd.DataFrame({
        "run_id": cat(a1 + a2, ["a1", "a2"]),
        "run_name": cat(5 * ["alpha-1"] + 3 * ["alpha-2"], ["alpha-1", "alpha-2"]),
        "group": cat(8 * ["A"], ["A"]),
        "sweep": cat(8 * [""], [""]),
        "steps": cat(5 * [5] + 3 * [3], [3, 5], np.int64),
        "schedule": cat(8 * ["range"], ["range"]),
        "lre_min": cat(5 * [-3.0] + 3 * [-2.0], [-3.0, -2.0], np.float64),
        "lre_max": cat(5 * [0.0] + 3 * [0.5], [0.0, 0.5], np.float64),
        "decay_steps": cat(5 * ["[100000]"] + 3 * ["[100000, 150000]"], ["[100000, 150000]", "[100000]"]),
        "stop_on_climb": cat(5 * [True] + 3 * [False], [False, True], bool),
        "step": np.array([0, 1, 2, 3, 4, 0, 1, 2], np.int64),
        "lr": 10.0 ** np.array(lre),
        "lre": np.array(lre),
        "loss": np.array(loss, np.float32),
        "log10_loss": np.log10(np.array(loss)).astype(np.float32),
        "smooth_loss": np.array([2.0, 2.1, 2.2, 2.3, 2.4, np.nan, np.nan, np.nan], np.float32),
        "dev_loss": np.array([np.nan] * 7 + [1.5], np.float32),
    })
