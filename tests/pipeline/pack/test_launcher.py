"""The packs' fork server: each forked pack is the command `python -m lrscan.pipeline.pack SPEC` would be (its
environment, its log, its exit code, its runs), a kill is seen as the signal, and the server ends when closed."""

from __future__ import annotations

import json
import os
import signal
import time

from lrscan.pipeline.pack.launcher import PackLauncher
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
        # the pack's runs are where its own environment put them, not where the test's is
        assert sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "own" / "wandb").glob("offline-run-*")) == \
            ["a", "b"]
    finally:
        launcher.close()


def test_a_killed_pack_is_seen_as_its_signal_and_the_server_ends_when_closed(words_file, tmp_path):
    launcher = PackLauncher()
    spec = _spec(tmp_path, words_file, "long", ["k"], "--wandb_mode=disabled", steps=10_000_000)
    pid = launcher.start(spec, tmp_path / "long.log", dict(os.environ))
    deadline = time.monotonic() + 120
    while "pack of 1 run(s)" not in (tmp_path / "long.log").read_text():
        assert time.monotonic() < deadline, "the pack never started"
        time.sleep(0.05)
    assert launcher.wait(pid, 0.2) is None  # still training: a bounded wait says so
    launcher.kill(pid, signal.SIGKILL)
    assert launcher.wait(pid, 60) == -signal.SIGKILL
    server = launcher._proc
    launcher.close()
    assert server.poll() is not None
