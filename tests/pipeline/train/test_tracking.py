"""The trainer's side of logging: the logger process gets every chunk in order, every wait bounded."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lrscan.pipeline import keys
from lrscan.pipeline.config import parse_args
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.train.tracking import (
    KILL_WAIT_SECONDS,
    InitArgs,
    NoLogger,
    RunLogger,
    finish_after_error,
    open_logger,
    spawn_run_logger,
)


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
        logger.log_steps(steps, {keys.LOSS: steps * 0.5, keys.LR: np.full(100, 0.1)},
                         extra={start + 99: {keys.DEV_LOSS: 1.5}})
    logger.summary({"dev_loss": 1.25})
    logger.finish(0)
    rf = read_run_file(next((tmp_path / "wandb").glob("offline-run-*-chunks1/run-chunks1.wandb")))
    assert rf.history["step"].tolist() == list(range(1000))
    np.testing.assert_array_equal(rf.history[keys.LOSS], np.arange(1000) * 0.5)
    assert rf.summary["dev_loss"] == 1.25 and rf.exit_code == 0 and rf.group == "grp"


def _started_logger(tmp_path: Path, run_id: str, **bounds) -> RunLogger:
    init = InitArgs(run_id=run_id, mode="offline", project="p", entity="", group="", name="", tags=(), job_type="train",
                    config={}, resume=False, define_lre_axis=False, lock_path=str(tmp_path / f"{run_id}.lock"))
    logger = RunLogger(init, queue_chunks=1, **bounds)
    logger.start()
    return logger


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True


def _wait_until_dead(pid: int, timeout_s: float = 60) -> None:
    # a killed child stays a zombie until its parent (the RunLogger) reaps it: that state is "dead"
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not die"
        time.sleep(0.05)


def _kill_if_running(logger: RunLogger) -> None:
    # a failed assertion must not leave a stopped logger process behind
    if logger._proc.poll() is None:
        logger._proc.kill()
        logger._proc.wait(timeout=60)


def _chunk(start: int) -> tuple:
    steps = np.arange(start, start + 10)
    return steps, {keys.LOSS: steps * 0.5}


@pytest.mark.slow
@pytest.mark.parametrize("chunk_steps", [
    10,         # the queue fills up: the trainer waits for an acknowledgement
    2_000_000,  # one chunk larger than the socket's buffer: the trainer waits inside the send
])
def test_a_logger_that_stops_taking_steps_is_killed_not_waited_for(tmp_path, chunk_steps):
    # a run id per case: a wandb service shared through WANDB_SERVICE (this process started one) keeps a
    # killed logger's run registered
    logger = _started_logger(tmp_path, f"hang{chunk_steps}", ack_timeout_s=2)
    try:
        os.kill(logger.pid, signal.SIGSTOP)  # alive, and silent
        t0 = time.monotonic()
        with pytest.raises(LrscanError, match="took no steps for 2 s and was killed"):
            for start in range(0, 3 * chunk_steps, chunk_steps):
                steps = np.arange(start, start + chunk_steps)
                logger.log_steps(steps, {keys.LOSS: steps * 0.5})
        assert time.monotonic() - t0 < 60 and _gone(logger.pid)
        logger.finish(1)  # the failure was raised already: finishing neither hangs nor raises it again
    finally:
        _kill_if_running(logger)


@pytest.mark.slow
def test_a_logger_that_cannot_finish_is_killed_within_the_bound(tmp_path):
    logger = _started_logger(tmp_path, "hang2", ack_timeout_s=2, finish_timeout_s=2)
    try:
        logger.log_steps(*_chunk(0))
        logger.flush()  # taken: what hangs now is the finish itself
        os.kill(logger.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(LrscanError, match="did not finish the run within 2 s and was killed"):
            logger.finish(0)
        assert time.monotonic() - t0 < 60 and _gone(logger.pid)
    finally:
        _kill_if_running(logger)


@pytest.mark.slow
def test_a_training_error_is_not_hidden_by_a_run_that_cannot_finish(tmp_path):
    logger = _started_logger(tmp_path, "dead1")
    os.kill(logger.pid, signal.SIGKILL)
    _wait_until_dead(logger.pid)
    try:
        parse_args(["--steps=abc"])  # a real training error, raised while the run is open
    except LrscanError as error:
        finish_after_error(logger, 1, error)
        caught = error
    assert str(caught) == "--steps='abc': expected int"  # still the error reported
    assert len(caught.__notes__) == 1 and "W&B run could not be finished" in caught.__notes__[0]
    assert "SIGKILL" in caught.__notes__[0]


def test_the_logging_processes_import_no_torch():
    # torch is ~2.5 s of start-up: the logger process (runwriter.py, pack/logger.py) must not pay it
    code = ("import sys; import lrscan.pipeline.train.runwriter, lrscan.pipeline.pack.logger; "
            "print(sorted(m for m in ('torch', 'lrscan.pipeline.train.loop') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_a_logging_process_started_ahead_logs_the_run_it_is_then_given(tmp_path):
    # the command line starts it before torch's import; the run's InitArgs come later, the rows as usual
    spawned = spawn_run_logger()
    time.sleep(0.5)  # the trainer imports torch meanwhile
    logger = open_logger(_overlapped_init(tmp_path, "ahead1", "offline"), spawned=spawned)
    assert isinstance(logger, RunLogger) and logger.pid == spawned.proc.pid
    logger.start(wait=False)
    for start in range(0, 300, 10):
        logger.log_steps(*_chunk(start))
    spawned.close()  # taken by the run: closing it is the run's business, this does nothing
    logger.finish(0)
    rf = read_run_file(next((tmp_path / "wandb").glob("offline-run-*-ahead1/run-ahead1.wandb")))
    assert rf.history["step"].tolist() == list(range(300)) and rf.exit_code == 0


def test_a_logging_process_no_run_took_is_gone_at_once_and_wrote_nothing(tmp_path):
    spawned = spawn_run_logger()
    t0 = time.monotonic()
    spawned.close()
    assert spawned.proc.returncode is not None and time.monotonic() - t0 < KILL_WAIT_SECONDS
    spawned.close()  # idempotent
    # W&B disabled: open_logger closes the process it was given
    disabled = spawn_run_logger()
    assert isinstance(open_logger(_overlapped_init(tmp_path, "off1", "disabled"), spawned=disabled), NoLogger)
    assert disabled.proc.returncode is not None
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_a_logging_process_whose_trainer_ends_before_its_run_exits_quietly():
    # the trainer failed (or died) before it sent the run: the process sees its socket close and ends, 0
    spawned = spawn_run_logger()
    spawned.taken = True  # as a trainer that died holds it: no kill, only the socket's end
    spawned.conn.close()
    assert spawned.proc.wait(timeout=60) == 0


def _overlapped_init(tmp_path: Path, run_id: str, mode: str) -> InitArgs:
    return InitArgs(run_id=run_id, mode=mode, project="p", entity="", group="", name="", tags=(), job_type="train",
                    config={"steps": 300}, resume=False, define_lre_axis=False,
                    lock_path=str(tmp_path / f"{run_id}.lock"), overlapped=True)


@pytest.mark.slow
def test_a_run_not_waiting_for_wandb_init_buffers_its_rows_and_loses_none(tmp_path):
    logger = RunLogger(_overlapped_init(tmp_path, "early1", "offline"), queue_chunks=2)
    t0 = time.monotonic()
    info = logger.start(wait=False)
    assert time.monotonic() - t0 < 0.5  # no wait on the logger process
    assert info.run_id == "early1" and info.config == {"steps": 300} and info.logged_through_step == -1
    for start in range(0, 300, 10):  # 30 chunks, the queue holds 2: the trainer waits for wandb.init, bounded
        logger.log_steps(*_chunk(start))
    logger.finish(0)
    rf = read_run_file(next((tmp_path / "wandb").glob("offline-run-*-early1/run-early1.wandb")))
    assert rf.history["step"].tolist() == list(range(300)) and rf.exit_code == 0


@pytest.mark.slow
def test_an_online_init_that_fails_after_training_began_keeps_every_row_offline_and_fails_in_one_line(tmp_path):
    # no API key (conftest): wandb.init online fails; the rows handed over meanwhile go to an offline run
    logger = RunLogger(_overlapped_init(tmp_path, "early2", "online"))
    logger.start(wait=False)
    handed = 0
    with pytest.raises(LrscanError) as caught:  # at the first chunk after the answer, or at the finish
        for start in range(0, 100_000, 10):
            logger.log_steps(*_chunk(start))
            handed = start + 10
            time.sleep(0.01)
        logger.finish(0)
    logger.finish(1)  # the trainer's error path: the run ends with what it was handed
    message = str(caught.value)
    assert "\n" not in message and message.startswith("wandb.init failed (") and "`wandb sync " in message
    assert handed < 100_000  # said while training, not after
    folder = message.split("`wandb sync ")[1].split("`")[0]
    rf = read_run_file(Path(folder) / "run-early2.wandb")
    assert rf.history["step"].tolist() == list(range(handed))
    np.testing.assert_array_equal(rf.history[keys.LOSS], np.arange(handed) * 0.5)


@pytest.mark.slow
def test_an_init_failure_without_a_fallback_is_one_line_at_the_first_wait(tmp_path):
    # wandb.init refuses the run itself (a tag over 64 characters), offline too: nothing to fall back on, the
    # run fails at the trainer's first wait on the logger
    init = dataclasses.replace(_overlapped_init(tmp_path, "early3", "online"), tags=("x" * 100,))
    logger = RunLogger(init, queue_chunks=1)
    logger.start(wait=False)
    with pytest.raises(LrscanError, match=r"^wandb\.init failed: .*64 characters") as caught:
        for start in range(0, 100, 10):
            logger.log_steps(*_chunk(start))
    assert "\n" not in str(caught.value)
    logger.finish(1)  # raised already: not again


@pytest.mark.slow
def test_a_config_wandb_hands_out_after_training_began_is_refused_in_one_line(tmp_path, monkeypatch):
    # a sweep agent's locked config reaching a run that did not wait for it (in Python, without config_from_wandb)
    params = tmp_path / "config-early4.yaml"
    params.write_text(yaml.safe_dump({"wandb_version": 1, "steps": {"value": 40}}))
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))  # the logger process inherits both
    logger = RunLogger(_overlapped_init(tmp_path, "early4", "offline"), queue_chunks=1)
    logger.start(wait=False)
    with pytest.raises(LrscanError, match=r"^wandb\.init gave the run another config \(steps differ\)"):
        for start in range(0, 100_000, 10):
            logger.log_steps(*_chunk(start))
        logger.finish(0)
    logger.finish(1)
