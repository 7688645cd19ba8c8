"""The same points run alone, then as one pack in the same places: the pack tests' comparison of the two."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from lrscan.analysis import load_runs
from lrscan.pipeline import keys
from lrscan.pipeline.config import parse_args
from lrscan.pipeline.pack.loop import train_pack
from lrscan.pipeline.pack.members import Point
from lrscan.pipeline.train.loop import train
from lrscan.pipeline.train.tracking import Launch

# fields that say how fast a run went, not what it computed
TIMING = ("steps_per_second",)


def train_alone(tmp_path: Path, monkeypatch, points: dict[str, list[str]]) -> Path:
    """Each point run by the single trainer with WANDB_DIR=tmp_path/w, then that folder moved to tmp_path/alone
    (returned): a pack run next writes to the same places, so run ids, configs and checkpoint folders match."""
    work = tmp_path / "w"
    monkeypatch.setenv("WANDB_DIR", str(work))
    # what the sweep runner sets for every point of a sweep: the runs' group and tag come from here
    monkeypatch.setenv("WANDB_RUN_GROUP", "grp-1")
    monkeypatch.setenv("WANDB_TAGS", "packtest")
    for run_id, args in points.items():
        train(parse_args([*args, f"--run_id={run_id}"]), launch=Launch("-m lrscan.pipeline.train", tuple(args)))
    shutil.move(work, tmp_path / "alone")
    return tmp_path / "alone"


def alone_then_packed(tmp_path: Path, monkeypatch, points: dict[str, list[str]]) -> tuple[Path, Path]:
    """The points alone, then as one pack: the two WANDB_DIR folders (alone, packed)."""
    alone = train_alone(tmp_path, monkeypatch, points)
    summaries = train_pack([Point.parse(run_id, args) for run_id, args in points.items()])
    assert sorted(summaries) == sorted(points)
    return alone, tmp_path / "w"


def assert_same_runs(alone: Path, packed: Path, n_runs: int, *, log10_atol: float = 0.0) -> pd.DataFrame:
    """Every packed run as if it had run alone, read back through the analysis from the two WANDB_DIR folders:
    identity, config, summary, and every step's history (losses within rtol 1e-5). Returns the packed runs.

    log10_atol: an absolute tolerance for log10_loss too, where losses near 1 make its rtol meaningless."""
    a_all, p_all = load_runs(alone / "wandb"), load_runs(packed / "wandb")
    runs_a = a_all.runs.set_index("run_id").sort_index()
    runs_p = p_all.runs.set_index("run_id").sort_index()
    assert len(runs_p) == n_runs and list(runs_p.index) == list(runs_a.index)
    same = [c for c in runs_a.columns if c not in TIMING and c != "path" and c != keys.LOG10_LOSS]
    pd.testing.assert_frame_equal(runs_p[same], runs_a[same], check_exact=False, rtol=1e-5)
    if keys.LOG10_LOSS in runs_a:
        np.testing.assert_allclose(runs_p[keys.LOG10_LOSS].to_numpy(float), runs_a[keys.LOG10_LOSS].to_numpy(float),
                                   rtol=1e-5, atol=log10_atol, err_msg="the summaries' log10_loss")
    assert (runs_p["state"] == "finished").all() and (runs_p["group"] == "grp-1").all()
    assert all("packtest" in t for t in runs_p["tags"])
    for run_id, a in a_all.steps.groupby("run_id"):
        p = p_all.steps[p_all.steps["run_id"] == run_id]
        assert p["step"].tolist() == a["step"].tolist(), f"{run_id}: other steps"
        for k in (keys.LR, keys.LRE):
            np.testing.assert_array_equal(p[k].to_numpy(), a[k].to_numpy())
        for k in (keys.LOSS, keys.SMOOTH_LOSS, keys.DEV_LOSS):
            if k in a:
                np.testing.assert_allclose(p[k].to_numpy(), a[k].to_numpy(), rtol=1e-5, err_msg=f"{run_id} {k}")
        np.testing.assert_allclose(p[keys.LOG10_LOSS].to_numpy(), a[keys.LOG10_LOSS].to_numpy(), rtol=1e-5,
                                   atol=log10_atol, err_msg=f"{run_id} log10_loss")
    return runs_p
