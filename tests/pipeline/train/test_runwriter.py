"""The logging process' side: its fast history path writes what wandb's own `run.log` writes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import wandb

from pipeline import keys
from pipeline.runlog import read_run_file
from pipeline.train.runwriter import _json_column, _json_number, history_writer

ROWS = [{keys.LR: 0.001 * (i + 1), keys.LRE: -3.0 + i, keys.LOSS: loss,
         keys.LOG10_LOSS: math.log10(loss) if loss > 0 and math.isfinite(loss) else float("nan")}
        for i, loss in enumerate([3.3, 2.0, 1.0, float("inf"), float("nan"), 7.0])]


def _offline_run(tmp_path: Path, run_id: str):
    return wandb.init(mode="offline", dir=tmp_path, id=run_id,
                      settings=wandb.Settings(console="off", x_disable_stats=True))


def _finish(run) -> None:
    run.finish()
    wandb.teardown()  # finish() may return before wandb-core has written the file


def test_fast_path_writes_what_run_log_writes(tmp_path):
    runs = {}
    for run_id, use_fast in (("viaLog", False), ("viaFast", True)):
        run = _offline_run(tmp_path, run_id)
        rows = [(step * 10, row) for step, row in enumerate(ROWS)]
        extra = {20: {keys.DEV_LOSS: 2.5}, 50: {keys.DEV_LOSS: float("nan")}}  # an eval step's extra value
        if use_fast:
            write = history_writer(run)
            for chunk in (rows[:2], rows[2:]):
                steps = np.array([step for step, _ in chunk])
                columns = {k: np.array([row[k] for _, row in chunk]) for k in ROWS[0]}
                write(steps, columns, {s: e for s, e in extra.items() if s in steps})
        else:
            for step, row in rows:
                run.log({**row, **extra.get(step, {})}, step=step)
        _finish(run)
        [path] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
        runs[run_id] = read_run_file(path).history
    a, b = runs["viaLog"], runs["viaFast"]
    assert a["step"].tolist() == b["step"].tolist() == [0, 10, 20, 30, 40, 50]
    for k in (keys.LR, keys.LRE, keys.LOSS, keys.LOG10_LOSS, keys.DEV_LOSS):
        np.testing.assert_array_equal(a[k], b[k])


def test_fast_path_is_in_use_with_this_wandb(tmp_path):
    run = _offline_run(tmp_path, "probe1")
    try:
        # the fallback around run.log is write_slow
        assert history_writer(run).__name__ == "write"
    finally:
        run.finish()


@pytest.mark.parametrize("v, text", [(0.1, "0.1"), (-1.0, "-1.0"), (float("nan"), "NaN"), (float("inf"), "Infinity"),
                                     (float("-inf"), "-Infinity"), (3, "3")])
def test_json_numbers_in_wandbs_dialect(v, text):
    assert _json_number(v) == text


def test_json_columns_match_the_numbers_one_by_one():
    values = np.array([0.1, -1.0, float("nan"), float("inf"), float("-inf"), 1e-300, 2.0 ** 70])
    assert _json_column(values) == [_json_number(v) for v in values.tolist()]
    assert _json_column(np.array([3, 4])) == ["3", "4"]
