"""The pack's one logging process: K real offline runs, each its own, a member ending early, a killed logger."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.logger import PackLogger
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.train.tracking import InitArgs, Launch, RunInfo

pytestmark = pytest.mark.slow


def _init(tmp_path: Path, run_id: str, **over) -> InitArgs:
    fields = dict(run_id=run_id, mode="offline", project="p", entity="", group="grp", name=f"name-{run_id}",
                  tags=("packed",), job_type="train", config={"seed": int(run_id[-1])}, resume=False,
                  define_lre_axis=False, lock_path=str(tmp_path / f"{run_id}.lock"),
                  launch=Launch("-m lrscan.pipeline.train", (f"--seed={run_id[-1]}",)))
    return InitArgs(**{**fields, **over})


def _run_file(tmp_path: Path, run_id: str):
    return read_run_file(next((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")))


def test_k_runs_in_one_process_each_get_their_own_rows_summary_and_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    ids = ["pk0", "pk1", "pk2"]
    pack = PackLogger([_init(tmp_path, i) for i in ids], ack_timeout_s=120)
    opened = pack.start()
    assert [type(r) for r in opened] == [RunInfo] * 3
    assert [r.run_id for r in opened] == ids and [r.config["seed"] for r in opened] == [0, 1, 2]
    members = [pack.member(k) for k in range(3)]
    for start in range(0, 300, 100):
        steps = np.arange(start, start + 100)
        for k, m in enumerate(members):
            if k == 1 and start >= 200:
                continue  # member 1 stopped at step 199: its run ends while the others go on
            m.log_steps(steps, {keys.LOSS: steps * (k + 1.0), keys.LR: np.full(100, 0.1 * (k + 1))},
                        extra={start + 99: {keys.DEV_LOSS: 2.0 + k}})
        if start == 100:
            members[1].summary({keys.STOP_STEP: 199})
            members[1].finish(0)
    for k in (0, 2):
        members[k].summary({keys.FINAL_STEP: 299})
    pack.close(0)
    assert pack.finish_errors == {}
    for k, run_id in enumerate(ids):
        rf = _run_file(tmp_path, run_id)
        n = 200 if k == 1 else 300
        assert rf.history["step"].tolist() == list(range(n))
        np.testing.assert_array_equal(rf.history[keys.LOSS], np.arange(n) * (k + 1.0))
        dev = rf.history[keys.DEV_LOSS]
        assert np.isnan(dev[98]) and dev[99] == 2.0 + k  # the extra value at its own step only
        assert rf.exit_code == 0 and rf.group == "grp"
    assert _run_file(tmp_path, "pk1").summary[keys.STOP_STEP] == 199
    assert _run_file(tmp_path, "pk2").summary[keys.FINAL_STEP] == 299


def test_a_killed_logging_process_is_said_with_its_signal_and_nothing_waits_on_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    pack = PackLogger([_init(tmp_path, i) for i in ("kd0", "kd1")], ack_timeout_s=120)
    try:
        pack.start()
        pack.member(0).log_steps(np.arange(10), {keys.LOSS: np.ones(10)})
        pack.flush()
        os.kill(pack.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while pack._proc.poll() is None:  # reaped here: its exit status is known
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(LrscanError, match=r"died \(signal SIGKILL\)|exited with signal SIGKILL"):
            for start in range(10, 10_000, 10):  # until the closed socket is seen
                pack.member(1).log_steps(np.arange(start, start + 10), {keys.LOSS: np.ones(10)})
            pack.close(0)
        assert time.monotonic() - t0 < 60
        pack.close(1)  # said once already: closing again neither hangs nor raises
    finally:
        if pack._proc.poll() is None:
            pack._proc.kill()
            pack._proc.wait(timeout=60)
