"""`python -m pipeline.pack`: real processes, SIGKILL and the same command again; bad input in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lrscan.pipeline import keys
from lrscan.pipeline.pack.__main__ import main
from lrscan.pipeline.pack.loop import train_pack
from lrscan.pipeline.pack.members import Point
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.train import checkpoint
from tests.conftest import train_argv
from tests.support.pack_resume import (
    assert_resumed_as_uninterrupted,
    kill,
    pack_command,
    rerun_resumes_every_member,
    start_and_freeze,
)

STEPS = 20000


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _loaded(path: Path) -> dict | None:
    try:
        return checkpoint.load(path)
    except Exception:  # not there yet
        return None


@pytest.mark.slow
def test_sigkill_then_the_same_command_resumes_every_unfinished_member(words_file, tmp_path):
    base = train_argv(words_file, "--schedule=step", f"--steps={STEPS}", "--ckpt_every_steps=1000",
                      "--log_chunk_steps=100")
    points = {"k-0": ["--seed=1", "--lr=0.1", "--decay_steps=[10000]", "--decay_lrs=[0.01]"],
              "k-1": ["--seed=2", "--lr=0.3", "--decay_steps=[5000]", "--decay_lrs=[0.03]"],
              "k-2": ["--seed=3", "--lr=0.05", "--decay_steps=[15000]", "--decay_lrs=[0.005]"],
              "k-div": ["--seed=4", "--lr=1e37", "--decay_steps=[10000]", "--decay_lrs=[0.01]"]}  # stops at once
    cmd = pack_command(tmp_path, base, points)
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    ckpts = {r: tmp_path / "checkpoints" / f"{r}.pt" for r in points}

    # the pack, killed for real (its whole process group, as a runner or Slurm does) once every member has
    # a checkpoint; frozen first, so that the kill cannot land after its end
    proc = start_and_freeze(cmd, env, tmp_path, lambda: all(_loaded(p) is not None for p in ckpts.values()),
                            "every member's first checkpoint")
    at = {r: checkpoint.load(p) for r, p in ckpts.items()}
    assert at["k-div"]["finished"] and not any(at[r]["finished"] for r in ("k-0", "k-1", "k-2"))
    kill(proc)
    assert not (tmp_path / "ends" / "k-0.json").exists()
    assert json.loads((tmp_path / "ends" / "k-div.json").read_text())["state"] == "finished"

    again = rerun_resumes_every_member(cmd, env, tmp_path, {r: at[r]["step"] for r in ("k-0", "k-1", "k-2")}, 600)
    assert "run k-div already finished" in again.stdout

    # the uninterrupted reference: the same points packed under other run ids, in this process
    resumed = assert_resumed_as_uninterrupted(tmp_path / "wandb", base, points, ["k-0", "k-1", "k-2"], STEPS)
    for segments in resumed.values():
        assert segments[0].exit_code == 1 and segments[1].summary[keys.FINAL_STEP] == STEPS - 1


@pytest.mark.parametrize("argv_of, message", [
    (lambda d, t: [*train_argv(d, "--run_id=a", "--steps=10"), "--", *train_argv(d, "--run_id=b", "--steps=20")],
     "points a and b cannot share a pack: steps differ"),
    (lambda d, t: [*train_argv(d, "--run_id=a"), "--", *train_argv(d, "--run_id=a", "--seed=3")],
     "run id(s) a given twice"),
    (lambda d, t: train_argv(d, "--steps=10"), "a point without a run id"),
    (lambda d, t: [str(_write(t / "p.json", "{\"points\": 3}"))], "expected a non-empty list of points"),
    (lambda d, t: [str(_write(t / "p.json", "[{\"run_id\": \"a\", \"args\": \"--seed=1\"}]"))], "point 0 must be"),
    (lambda d, t: [str(t / "missing.json")], "cannot read it"),
    (lambda d, t: [*train_argv(d, "--run_id=a"), "--", *train_argv(d, "--run_id=b", "--no_such=1")],
     "unknown config key 'no_such'"),
    (lambda d, t: train_argv(d, "--run_id=a", "--task=mytask.py:make"),
     "point a trains its own task (mytask.py:make): a pack stacks the makemore MLP"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(words_file, tmp_path, capsys, argv_of, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv_of(words_file, tmp_path))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("pipeline.pack: error: ")
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "checkpoints").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.slow
def test_sigterm_checkpoints_every_member_and_each_resumes_alone_or_in_a_pack(words_file, tmp_path):
    base = train_argv(words_file, "--schedule=constant", f"--steps={STEPS}", "--ckpt_every_steps=1000",
                      "--log_chunk_steps=100")
    points = [{"run_id": r, "args": [*base, f"--seed={s}"], "end_file": str(tmp_path / f"{r}.end.json")}
              for r, s in (("t-0", 1), ("t-1", 2))]
    (tmp_path / "points.json").write_text(json.dumps(points))
    cmd = [sys.executable, "-m", "lrscan.pipeline.pack", str(tmp_path / "points.json")]
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = [tmp_path / "checkpoints" / "t-0.pt", tmp_path / "checkpoints" / "t-1.pt"]
    _wait_for(lambda: all(_loaded(p) is not None for p in ckpts), 300, "every member's first checkpoint")
    os.kill(proc.pid, signal.SIGSTOP)  # frozen, so that the signal lands mid-run
    proc.send_signal(signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "pipeline.pack: stopped" in err and "run the same command to continue" in err
    states = [checkpoint.load(p) for p in ckpts]
    assert not any(s["finished"] for s in states) and states[0]["step"] == states[1]["step"]
    for p in points:
        end = json.loads(Path(p["end_file"]).read_text())
        assert (end["state"], end["exit_code"]) == ("killed", 130)
        [run] = (tmp_path / "wandb").glob(f"offline-run-*-{p['run_id']}/*.wandb")
        rf = read_run_file(run)
        # the run ended (exit code 130) with its history through the checkpoint's step
        assert rf.exit_code == 130 and rf.history["step"][-1] >= states[0]["step"] - 1
    # a member's checkpoint is the single trainer's: one member resumes alone, the other in a pack
    alone = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", *points[0]["args"], "--run_id=t-0",
                            "--resume"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr
    assert f"resuming run t-0 at step {states[0]['step']}" in alone.stdout
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "run t-0 already finished" in again.stdout
    assert f"resuming run t-1 at step {states[1]['step']}" in again.stdout
    for p in points:
        segments = [read_run_file(f) for f in sorted((tmp_path / "wandb").glob(f"offline-run-*-{p['run_id']}/*.wandb"))]
        steps = np.concatenate([s.history["step"] for s in segments])
        assert sorted(steps.tolist()) == list(range(STEPS)), f"{p['run_id']}: a lost or repeated step"


def test_a_member_whose_checkpoint_is_at_its_last_step_ends_at_once(words_file, tmp_path):
    args = train_argv(words_file, "--schedule=constant", "--steps=200")
    train_pack([Point.parse("last", args)])
    path = tmp_path / "checkpoints" / "last.pt"
    state = checkpoint.load(path)
    checkpoint.save(path, {**{k: v for k, v in state.items() if k != "format_version"}, "finished": False})
    [summary] = train_pack([Point.parse("last", args)]).values()
    assert summary[keys.FINAL_STEP] == 199 and checkpoint.load(path)["finished"]
