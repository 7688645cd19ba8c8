"""The packs' fork server: each forked pack is the command `python -m lrscan.pipeline.pack SPEC` would be (its
environment, its log, its exit code, its runs, logged by a logging process forked from the pack), a kill is seen as
the signal and the forked logging process still ends the run, and the server ends when closed."""

from __future__ import annotations

import json
import os
import signal
import time

from lrscan.pipeline.pack.launcher import PackLauncher
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.train import checkpoint
from tests.conftest import train_argv


def _spec(tmp_path, words_file, name: str, run_ids: list[str], *extra: str, steps: int = 200):
    points = [{"run_id": r, "args": [*train_argv(words_file, f"--steps={steps}", f"--seed={i + 1}", "--lr=0.1",
                                                 f"--ckpt_dir={tmp_path / 'ckpt'}", f"--run_id={r}", *extra)]}
              for i, r in enumerate(run_ids)]
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps({"points": points}))
    return spec


def test_a_forked_pack_trains_its_runs_with_its_own_environment_and_log(words_file, tmp_path):
    launcher = PackLauncher()
    try:
        spec = _spec(tmp_path, words_file, "good", ["a", "b"])
        env = {**os.environ, "WANDB_DIR": str(tmp_path / "own"), "WANDB_MODE": "offline"}
        (tmp_path / "own").mkdir()
        bad = tmp_path / "missing.json"
        good_pid = launcher.start(spec, tmp_path / "good.log", env)
        bad_pid = launcher.start(bad, tmp_path / "bad.log", env)
        assert launcher.wait(bad_pid, 120) == 2  # bad input: the command's exit code and its one line
        assert f"{bad}: cannot read it" in (tmp_path / "bad.log").read_text()
        assert launcher.wait(good_pid, 300) == 0
        log = (tmp_path / "good.log").read_text()
        assert "pack of 2 run(s)" in log and "run a:" in log and "run b:" in log
        for run_id in ("a", "b"):
            assert checkpoint.load(tmp_path / "ckpt" / f"{run_id}.pt")["finished"]
        # the pack's runs are where its own environment put them, not where the test's is, every step logged
        runs = sorted((tmp_path / "own" / "wandb").glob("offline-run-*"))
        assert [p.name.rsplit("-", 1)[-1] for p in runs] == ["a", "b"]
        for run in runs:
            logged = read_run_file(next(run.glob("*.wandb")), keys=["loss"])
            assert logged.state == "finished" and list(logged.history["step"]) == list(range(200))
    finally:
        launcher.close()


def test_a_killed_pack_is_seen_as_its_signal_and_the_server_ends_when_closed(words_file, tmp_path):
    launcher = PackLauncher()
    spec = _spec(tmp_path, words_file, "long", ["k"], steps=10_000_000)
    pid = launcher.start(spec, tmp_path / "long.log", {**os.environ, "WANDB_MODE": "offline"})
    try:
        deadline = time.monotonic() + 120
        log = tmp_path / "long.log"  # the forked child creates it
        while not (log.exists() and "pack of 1 run(s)" in log.read_text()):
            assert time.monotonic() < deadline, "the pack never started"
            time.sleep(0.05)
        assert launcher.wait(pid, 0.2) is None  # still training: a bounded wait says so
        launcher.kill(pid, signal.SIGKILL)
        assert launcher.wait(pid, 60) == -signal.SIGKILL
        # the forked logging process sees its trainer gone and ends the run with what it was handed (exit code 1), also
        # when the trainer died before the run's start was answered
        deadline = time.monotonic() + 60
        while True:
            files = list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
            logged = read_run_file(files[0], keys=["loss"]) if files else None
            if logged is not None and logged.state != "running":
                break
            assert time.monotonic() < deadline, "the killed pack's run never ended"
            time.sleep(0.2)
        assert logged.exit_code == 1
    finally:
        launcher.kill(pid, signal.SIGKILL)  # a failed check leaves no pack training
    server = launcher._proc
    launcher.close()
    assert server.poll() is not None
