"""The logger process and its fast history path, against wandb's own `run.log`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import wandb

from analysis.wandb_file import read_run_file
from pipeline import keys
from pipeline.tracking import InitArgs, RunLogger, _json_number, history_writer

ROWS = [{keys.LR: 0.001 * (i + 1), keys.LRE: -3.0 + i, keys.LOSS: l, keys.LOG10_LOSS: math.log10(l) if l > 0 and math.isfinite(l) else float("nan")}
        for i, l in enumerate([3.3, 2.0, 1.0, float("inf"), float("nan"), 7.0])]


def _offline_run(tmp_path: Path, run_id: str):
    return wandb.init(mode="offline", dir=tmp_path, id=run_id, settings=wandb.Settings(console="off", x_disable_stats=True))


def _finish(run) -> None:
    run.finish()
    wandb.teardown()  # finish() may return before wandb-core has written the file


def test_fast_path_writes_what_run_log_writes(tmp_path):
    runs = {}
    for run_id, use_fast in (("viaLog", False), ("viaFast", True)):
        run = _offline_run(tmp_path, run_id)
        rows = [(step * 10, row) for step, row in enumerate(ROWS)]
        if use_fast:
            history_writer(run)(rows[:2])
            history_writer(run)(rows[2:])
        else:
            for step, row in rows:
                run.log(row, step=step)
        _finish(run)
        [path] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
        runs[run_id] = read_run_file(path).history
    a, b = runs["viaLog"], runs["viaFast"]
    assert a["step"].tolist() == b["step"].tolist() == [0, 10, 20, 30, 40, 50]
    for k in (keys.LR, keys.LRE, keys.LOSS, keys.LOG10_LOSS):
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


@pytest.mark.slow
def test_logger_process_logs_every_chunk_in_order_and_the_summary(tmp_path):
    init = InitArgs(run_id="chunks1", mode="offline", project="p", entity="", group="grp", name="n1", tags=("a",),
                    job_type="train", config={"steps": 1000}, resume=False, define_lre_axis=True,
                    lock_path=str(tmp_path / "chunks1.lock"))
    logger = RunLogger(init, queue_chunks=2)  # a small queue: the trainer must wait, never drop
    info = logger.start()
    assert info.run_id == "chunks1" and info.config["steps"] == 1000 and info.logged_through_step == -1
    for start in range(0, 1000, 100):
        steps = np.arange(start, start + 100)
        logger.log_steps(steps, {keys.LOSS: steps * 0.5, keys.LR: np.full(100, 0.1)}, extra={start + 99: {keys.DEV_LOSS: 1.5}})
    logger.summary({"dev_loss": 1.25})
    logger.finish(0)
    rf = read_run_file(next((tmp_path / "wandb").glob("offline-run-*-chunks1/run-chunks1.wandb")))
    assert rf.history["step"].tolist() == list(range(1000))
    np.testing.assert_array_equal(rf.history[keys.LOSS], np.arange(1000) * 0.5)
    assert rf.summary["dev_loss"] == 1.25 and rf.exit_code == 0 and rf.group == "grp"
