"""A pack process frozen and killed mid-run (SIGKILL to its group), then its members' resumed runs checked against
an uninterrupted pack: the resume tests of `python -m pipeline.pack` for the MLP and for a task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lrscan.pipeline import keys
from lrscan.pipeline.pack.loop import train_pack
from lrscan.pipeline.pack.members import Point
from lrscan.pipeline.runlog import read_run_file


def pack_command(tmp_path: Path, base: list[str], points: dict[str, list[str]]) -> list[str]:
    """`python -m pipeline.pack POINTS.json` for the points (base arguments, then each one's), each member's end
    file at tmp_path/ends/RUN_ID.json."""
    points_file = tmp_path / "points.json"
    points_file.write_text(json.dumps({"points": [{"run_id": r, "args": [*base, *a],
                                                   "end_file": str(tmp_path / "ends" / f"{r}.json")}
                                                  for r, a in points.items()]}))
    return [sys.executable, "-m", "lrscan.pipeline.pack", str(points_file)]


def start_and_freeze(cmd: list[str], env: dict, cwd: Path, ready: Callable[[], bool], what: str,
                     timeout_s: float = 300) -> subprocess.Popen:
    """The pack started in a process group of its own, and frozen (SIGSTOP) once ready() holds, so that a kill
    cannot land after its end; still alive, for the caller to look at its checkpoints, then `kill`."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline and proc.poll() is None, f"timed out waiting for {what}"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None, "the pack ended before it could be stopped mid-run"
    return proc


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL to the frozen pack's whole process group, as a runner or Slurm kills it."""
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def rerun_resumes_every_member(cmd: list[str], env: dict, cwd: Path, steps_at: dict[str, int],
                               timeout_s: float = 900) -> subprocess.CompletedProcess:
    """The killed pack's command run again: it exits 0, each member in `steps_at` says it resumes at its
    checkpoint's step, and its end file says finished. The run, for what the caller checks more."""
    again = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert again.returncode == 0, again.stderr
    for r, step in steps_at.items():
        assert f"resuming run {r} at step {step}" in again.stdout
        assert json.loads((cwd / "ends" / f"{r}.json").read_text())["state"] == "finished"
    return again


def assert_resumed_as_uninterrupted(wandb_dir: Path, base: list[str], points: dict[str, list[str]],
                                    resumed: list[str], steps: int) -> dict[str, list]:
    """The same points packed again in this process under run ids ref-RUN_ID, uninterrupted; each resumed run's two
    segments (killed, resumed) against it: every step once, losses and lrs within rtol 1e-5, the same dev loss.
    Returns each resumed run's segments."""
    train_pack([Point.parse(f"ref-{r}", [*base, *a]) for r, a in points.items()])
    out = {}
    for r in resumed:
        segments = [read_run_file(p) for p in sorted(wandb_dir.glob(f"offline-run-*-{r}/run-{r}.wandb"))]
        assert len(segments) == 2 and segments[1].state == "finished"
        seen = np.concatenate([s.history["step"] for s in segments])
        assert sorted(seen.tolist()) == list(range(steps)), f"{r}: a lost or repeated step"
        [ref_path] = wandb_dir.glob(f"offline-run-*-ref-{r}/run-ref-{r}.wandb")
        ref = read_run_file(ref_path)
        order = np.argsort(seen)
        for k in (keys.LOSS, keys.LR):
            np.testing.assert_allclose(np.concatenate([s.history[k] for s in segments])[order], ref.history[k],
                                       rtol=1e-5, err_msg=f"{r} {k}")
        assert segments[1].summary[keys.DEV_LOSS] == pytest.approx(ref.summary[keys.DEV_LOSS], rel=1e-5)
        out[r] = segments
    return out
