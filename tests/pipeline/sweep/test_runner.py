"""The process pool with a tiny fake program: identity, retries, why points did not finish, signals, shared folders."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from lrscan.pipeline.sweep.claims import ClaimStore
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.manifest import read_manifest
from lrscan.pipeline.sweep.runner import run_sweep
from lrscan.pipeline.sweep.spec import load_sweep
from tests.pipeline.sweep.fakes import alive, cli, expected, manifest, records, wait_for, write_sweep


def test_every_point_runs_once_with_its_identity_and_lands_in_the_manifest(in_tmp):
    path = write_sweep(in_tmp, "lre_min: {values: [-3.0, -2.0]}\nseed: {values: [1, 2]}\n", extra="name: fakename\n")
    sweep = load_sweep(path)
    code = run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False)
    assert code == 0
    folder = in_tmp / "runs" / sweep.key
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 4, [1] * 4, [0] * 4))
    starts = records(folder, "starts")
    assert sorted(starts) == [run_id_for(sweep.key, i) for i in range(4)]
    for i, point in enumerate(sweep.points):
        [rec] = starts[run_id_for(sweep.key, i)]
        assert rec["argv"] == [f"--lre_min={point['lre_min']}", f"--seed={point['seed']}"]
        assert rec["env"] == {"WANDB_DIR": str(folder.resolve()), "WANDB_RUN_ID": run_id_for(sweep.key, i),
                              "WANDB_RUN_GROUP": sweep.key, "WANDB_TAGS": "fakename", "WANDB_MODE": "offline",
                              "WANDB_RESUME": None, "WANDB_SWEEP_ID": None, "LRSCAN_SWEEP_INDEX": str(i)}
    rows = read_manifest(folder)
    assert rows["config"].tolist() == list(sweep.points)
    assert (rows["seconds"] >= 0).all() and rows["started_at"].notna().all() and rows["ended_at"].notna().all()
    assert (folder / "sweep.yaml").read_text() == path.read_text()
    assert json.loads((folder / "sweep.json").read_text())["points"] == 4


def test_rerun_skips_finished_points_and_retries_failed_ones_resuming_the_same_run(in_tmp):
    path = write_sweep(in_tmp, "fail: {values: [false, true]}\n")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    assert run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False) == 1
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished", "failed"], [1, 1], [0, 3]))
    (folder / "fake" / "heal").touch()
    assert run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False) == 0
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished", "finished"], [1, 2], [0, 0]))
    starts = records(folder, "starts")
    assert len(starts[run_id_for(sweep.key, 0)]) == 1  # the finished point did not run again
    first, retry = starts[run_id_for(sweep.key, 1)]
    assert first["env"]["WANDB_RESUME"] is None and retry["env"]["WANDB_RESUME"] == "allow"
    assert retry["env"]["WANDB_RUN_ID"] == first["env"]["WANDB_RUN_ID"]


def test_a_failure_during_a_session_is_not_retried_in_that_session(in_tmp):
    path = write_sweep(in_tmp, "fail: {values: [true]}\n")
    sweep = load_sweep(path)
    assert run_sweep(sweep, "runs", workers=1, poll_seconds=0.05, progress=False) == 1
    assert len(records(in_tmp / "runs" / sweep.key, "starts")[run_id_for(sweep.key, 0)]) == 1


@pytest.mark.slow
def test_a_killed_runners_points_are_taken_over_at_once_on_the_same_host(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2]}\n")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    # a lease far longer than this test's bound: a runner that waited it out would fail the test
    args = (str(path), "--workers", "2", "--lease-seconds", "3600", "--no-progress")
    victim = cli(*args, cwd=in_tmp, env={"FAKE_HOLD": str(hold)})
    wait_for(lambda: (folder / "fake").exists() and len(records(folder, "starts")) == 2)
    programs = [recs[0]["pid"] for recs in records(folder, "starts").values()]
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    wait_for(lambda: not any(alive(pid) for pid in programs), 10)  # they died with it
    hold.unlink()
    rerun = cli(*args, cwd=in_tmp)
    try:
        _, err = rerun.communicate(timeout=120)
    finally:
        rerun.kill()
    assert rerun.returncode == 0, err
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 2, [2, 2], [0, 0]))
    host = socket.gethostname()
    for i in range(2):
        first, retry = ClaimStore(str(folder), 3600).attempts(i)
        assert first["state"] == "crashed"
        assert first["reason"] == f"its worker {host}:{victim.pid} died (seen dead on this host)"
        assert f"lrscan sweep: point {i} ({run_id_for(sweep.key, i)}): its worker {host}:{victim.pid} died " \
               "(seen dead on this host); taking it over now (attempt 2)" in err.splitlines()
        starts = records(folder, "starts")[run_id_for(sweep.key, i)]
        assert [r["env"]["WANDB_RESUME"] for r in starts] == [None, "allow"]
    assert "waiting for" not in err


@pytest.mark.slow
def test_a_runner_that_must_wait_says_for_what_and_how_long(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2]}\n")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    lease = ("--lease-seconds", "3600", "--no-progress")
    # point 0: claimed by a worker on another host (a claim as that worker writes it; it cannot be checked from here)
    foreign = ClaimStore(str(folder), 3600)
    foreign._owner = {"host": "node-elsewhere", "boot_id": "0" * 32, "pid_ns": "pid:[1]", "pid": 4242, "start_ticks": 7}
    assert foreign.claim(0, 0, {"run_id": run_id_for(sweep.key, 0)}) is not None
    # point 1: held by a live runner on this host
    owner = cli(str(path), "--index", "1", *lease, cwd=in_tmp, env={"FAKE_HOLD": str(hold)})
    wait_for(lambda: (folder / "fake").exists() and len(records(folder, "starts")) == 1)
    err_path = in_tmp / "waiter.err"
    with open(err_path, "w") as err_file:
        waiter = subprocess.Popen([sys.executable, "-m", "lrscan.pipeline.sweep", str(path), *lease], cwd=in_tmp,
                                  stdout=subprocess.DEVNULL, stderr=err_file, text=True)
    try:
        wait_for(lambda: err_path.read_text().count("waiting for point") == 2)
        # the other host's worker finishes its point; ours is released
        assert foreign.end(0, 0, {"state": "finished", "exit_code": 0})
        hold.unlink()
        assert waiter.wait(timeout=60) == 0, err_path.read_text()
        _, owner_err = owner.communicate(timeout=60)
        assert owner.returncode == 0, owner_err
    finally:
        waiter.kill()
        owner.kill()
    lines = [line for line in err_path.read_text().splitlines() if "waiting for point" in line]
    host = socket.gethostname()
    assert len(lines) == 2, lines
    assert re.fullmatch(
        rf"lrscan sweep: waiting for point 0 \({sweep.key}-0000\): held by node-elsewhere:4242 on another host "
        r"\(not checkable from here\); until it ends, or its lease lapses unrenewed "
        r"\(in \d+ s at the earliest; lease 3600 s\)", lines[0]), lines[0]
    assert re.fullmatch(
        rf"lrscan sweep: waiting for point 1 \({sweep.key}-0001\): held by {re.escape(host)}:{owner.pid}, "
        r"alive on this host; until it ends, or its lease lapses unrenewed "
        r"\(in \d+ s at the earliest; lease 3600 s\)", lines[1]), lines[1]
    assert manifest(folder)["state"].tolist() == ["finished", "finished"]


@pytest.mark.slow
def test_sigterm_stops_the_programs_and_leaves_a_consistent_manifest_then_rerun_resumes(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    proc = cli(str(path), "--workers", "2", "--term-timeout", "20", cwd=in_tmp, env={"FAKE_HOLD": str(hold)})
    wait_for(lambda: len(records(folder, "starts")) == 2 if (folder / "fake").exists() else False)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    pd.testing.assert_frame_equal(manifest(folder),
                                  expected(sweep.key, ["killed", "killed", "pending"], [1, 1, 0], [130, 130, None]))
    terms = records(folder, "terms")
    assert sorted(terms) == [run_id_for(sweep.key, 0), run_id_for(sweep.key, 1)]  # each got SIGTERM and saved
    assert not any(alive(r["pid"]) for recs in records(folder, "starts").values() for r in recs)
    hold.unlink()
    proc = cli(str(path), "--workers", "2", "--no-progress", cwd=in_tmp)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 3, [2, 2, 1], [0, 0, 0]))
    assert [r["env"]["WANDB_RESUME"] for r in records(folder, "starts")[run_id_for(sweep.key, 0)]] == [None, "allow"]


@pytest.mark.slow
def test_runners_sharing_a_folder_finish_every_point_once_and_take_over_a_killed_one(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3, 4, 5]}\n")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    args = (str(path), "--workers", "1", "--lease-seconds", "2", "--no-progress")
    runners = [cli(*args, cwd=in_tmp, env={"FAKE_HOLD": str(hold)}) for _ in range(3)]
    wait_for(lambda: (folder / "fake").exists() and len(records(folder, "starts")) == 3)
    claims = {json.loads(p.read_text())["worker"].split(":")[1]: json.loads(p.read_text())["index"]
              for p in (folder / "claims").glob("*.claim")}
    victim = runners[0]
    victim_index = claims[str(victim.pid)]
    victim_run = run_id_for(sweep.key, victim_index)
    [victim_start] = records(folder, "starts")[victim_run]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    wait_for(lambda: not alive(victim_start["pid"]), 10)  # its program died with it
    hold.unlink()
    for r in runners[1:]:
        _, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
    done = records(folder, "done")
    assert sorted(done) == [run_id_for(sweep.key, i) for i in range(5)]
    assert all(len(v) == 1 for v in done.values())                     # every point finished exactly once
    assert not list((folder / "fake").glob("DUPLICATE-*"))              # and never ran twice at a time
    first, second = records(folder, "starts")[victim_run]
    assert first["env"]["WANDB_RESUME"] is None and second["env"]["WANDB_RESUME"] == "allow"
    m = manifest(folder)
    assert m["state"].tolist() == ["finished"] * 5
    assert m.set_index("index")["attempts"].to_dict() == {i: 2 if i == victim_index else 1 for i in range(5)}
    attempts = ClaimStore(str(folder), 2).attempts(victim_index)
    assert [a["state"] for a in attempts] == ["crashed", "finished"]
    # on one host the killed runner is seen dead; across hosts its lease would lapse first (the next test)
    assert attempts[0]["reason"] == f"its worker {socket.gethostname()}:{victim.pid} died (seen dead on this host)"


def test_a_claim_from_another_host_is_taken_over_once_its_lease_lapses(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1]}\n")
    sweep = load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    foreign = ClaimStore(str(folder), 5.0)
    foreign._owner = {"host": "node-elsewhere", "boot_id": "0" * 32, "pid_ns": "pid:[1]", "pid": 4242, "start_ticks": 7}
    claim = foreign.claim(0, 0, {})
    old = time.time() - 60  # its worker stopped renewing a minute ago: the lease lapsed
    os.utime(claim.path, (old, old))
    assert run_sweep(sweep, "runs", workers=1, lease_seconds=5.0, poll_seconds=0.05, progress=False) == 0
    first, retry = ClaimStore(str(folder), 5.0).attempts(0)
    assert first["state"] == "crashed" and re.fullmatch(r"lease expired after \d+ s", first["reason"])
    assert retry["state"] == "finished"
    assert re.fullmatch(rf"lrscan sweep: point 0 \({sweep.key}-0000\): no lease renewal from node-elsewhere:4242 "
                        r"for \d+ s; taking it over now \(attempt 2\)", capsys.readouterr().err.strip())
