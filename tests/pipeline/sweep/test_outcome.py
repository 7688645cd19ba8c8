"""pipeline.sweep.outcome: the one line that names the points that did not finish, with the first one's cause."""

from __future__ import annotations

import os

import pytest

from lrscan.pipeline.sweep.__main__ import main
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.outcome import last_log_line, unfinished_message
from lrscan.pipeline.sweep.runner import run_sweep
from lrscan.pipeline.sweep.spec import load_sweep
from tests.pipeline.sweep.fakes import write_sweep


def test_points_that_did_not_finish_are_named_with_the_first_ones_last_error_line(in_tmp, capsys):
    path = write_sweep(in_tmp, "fail: {values: [false, true]}\nx: {values: [1, 2]}\n")
    sweep = load_sweep(path)
    with pytest.raises(SystemExit) as exc:
        main([str(path), "--workers", "2", "--no-progress", "--out", "runs"])
    assert exc.value.code == 1
    log = os.path.join("runs", sweep.key, "logs", f"{run_id_for(sweep.key, 2)}.g0.log")
    assert capsys.readouterr().err.splitlines()[-2:] == [
        f"lrscan sweep: {sweep.key}: 2 of 4 points did not finish (2 failed); "
        f"point 2 ({run_id_for(sweep.key, 2)}) failed (exit code 3, attempt 1): FakeError: asked to fail (x=1) "
        f"[log: {log}]; run the same command again to retry them",
        f"lrscan sweep: {sweep.key}: manifest {os.path.join('runs', sweep.key, 'manifest.jsonl')}",
    ]
    (in_tmp / "runs" / sweep.key / "fake" / "heal").touch()
    assert run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False) == 0
    assert unfinished_message("runs", sweep) == ""


def test_a_point_that_died_silently_is_named_with_how_it_ended(in_tmp):
    path = write_sweep(in_tmp, "crash: {values: [true]}\n")
    sweep = load_sweep(path)
    assert run_sweep(sweep, "runs", workers=1, poll_seconds=0.05, progress=False) == 1
    # a crash is retried in the same session (up to 3 attempts): the message names the last one
    log = os.path.join("runs", sweep.key, "logs", f"{run_id_for(sweep.key, 0)}.g2.log")
    assert unfinished_message("runs", sweep) == (
        f"1 of 1 points did not finish (1 crashed); "
        f"point 0 ({run_id_for(sweep.key, 0)}) crashed (killed by SIGKILL, attempt 3) "
        f"[log: {log}]; run the same command again to retry them")


def test_the_last_log_line_skips_blank_lines_colours_and_progress_redraws(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"step 1\n\x1b[31mwandb: ERROR\x1b[0m api_key not configured (no-tty)\r\n  \n\n")
    assert last_log_line(log) == "wandb: ERROR api_key not configured (no-tty)"
    log.write_bytes(b"10%\r50%\r100%")
    assert last_log_line(log) == "100%"
    log.write_bytes(b"")
    assert last_log_line(log) == "" and last_log_line(tmp_path / "missing.log") == ""
    log.write_bytes(b"x" * 1000 + b"\n")
    assert len(last_log_line(log)) == 300
