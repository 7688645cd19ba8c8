"""The local runner with a tiny fake program: expansion, identity, manifest, retries, signals, shared folders, Slurm."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline import sweep as sw

# Reads --k=v args and the environment, records every start (and every finish) under $WANDB_DIR/fake,
# holds while $FAKE_HOLD exists, fails on --fail=True unless $WANDB_DIR/fake/heal exists, and flags
# two concurrent processes of one run id (an flock per run id).
FAKE = textwrap.dedent('''
    import fcntl, json, os, signal, sys, time
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    out = os.path.join(os.environ["WANDB_DIR"], "fake")
    os.makedirs(out, exist_ok=True)
    rid = os.environ.get("WANDB_RUN_ID", "none")
    lock = open(os.path.join(out, rid + ".lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        open(os.path.join(out, "DUPLICATE-" + rid), "w").close()
        sys.exit(99)
    keys = ["WANDB_DIR", "WANDB_RUN_ID", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_MODE", "WANDB_RESUME",
            "WANDB_SWEEP_ID", "LRSCAN_SWEEP_INDEX"]
    rec = {"argv": sys.argv[1:], "args": args, "env": {k: os.environ.get(k) for k in keys}, "pid": os.getpid()}
    def note(kind):
        with open(os.path.join(out, rid + "." + kind + ".jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\\n")
    note("starts")
    def on_term(signum, frame):
        note("terms")
        sys.exit(130)
    signal.signal(signal.SIGTERM, on_term)
    hold = os.environ.get("FAKE_HOLD")
    while hold and os.path.exists(hold):
        time.sleep(0.05)
    if args.get("fail") == "True" and not os.path.exists(os.path.join(out, "heal")):
        sys.exit(3)
    note("done")
''')


def write_sweep(folder: Path, parameters: str, name: str = "fake", extra: str = "") -> Path:
    (folder / "fake.py").write_text(FAKE)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent("""\
        # a fake sweep for the runner's tests
        program: fake.py
        command:
          - ${env}
          - python3
          - ${program}
          - ${args}
        method: grid
        """) + extra + "parameters:\n" + textwrap.indent(textwrap.dedent(parameters), "  "))
    return path


def records(folder: Path, kind: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted((folder / "fake").glob(f"*.{kind}.jsonl")):
        out[path.name.split(".")[0]] = [json.loads(line) for line in path.read_text().splitlines()]
    return out


def manifest(folder: Path) -> pd.DataFrame:
    return sw.read_manifest(folder)[["index", "run_id", "state", "attempts", "exit_code"]]


def expected(key: str, states: list[str], attempts: list[int], codes: list) -> pd.DataFrame:
    return pd.DataFrame({
        "index": range(len(states)), "run_id": [sw.run_id_for(key, i) for i in range(len(states))],
        "state": states, "attempts": attempts, "exit_code": pd.array(codes, dtype="Int64"),
    })


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str, cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "pipeline.sweep", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, timeout_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- commands --------------------------------------------------------------------------------------


def test_every_macro_expands_as_wandb_agent_does(monkeypatch):
    monkeypatch.setenv("LRSCAN_TEST_PY", "python3")
    template = ["${env}", "${envvar:LRSCAN_TEST_PY}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}",
                "${args_no_boolean_flags}", "${args_json}", "${args_json_file}", "${no_such_macro}", "x${envvar:NOT_SET_X}"]
    point = {"decay_steps": [100000], "flag": False, "lre": -3.0, "on": True}
    argv, args_json = sw.build_command(template, "train.py", point, "/s/config-r.json")
    assert argv == [
        "/usr/bin/env", "python3", "python", "train.py",
        "--decay_steps=[100000]", "--flag=False", "--lre=-3.0", "--on=True",
        "decay_steps=[100000]", "flag=False", "lre=-3.0", "on=True",
        "--decay_steps=[100000]", "--lre=-3.0", "--on",
        '{"decay_steps": [100000], "flag": false, "lre": -3.0, "on": true}',
        "/s/config-r.json",
        "xNOT_SET_X",  # W&B leaves an unset ${envvar:...} as the variable's name; an unknown macro vanishes
    ]
    assert json.loads(args_json) == point


def test_dry_run_prints_commands_in_wandb_order_and_writes_nothing(in_tmp, capsys):
    path = write_sweep(in_tmp, """\
        lre_min: {values: [-3.0, -2.0]}
        seed: {values: [1, 2]}
        """)
    sweep = sw.load_sweep(path)
    sw.main([str(path), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"# {sweep.key}: 4 points, method grid")
    py = "python3"
    assert lines[1:] == [
        f"[0] {sweep.key}-0000: /usr/bin/env {py} fake.py --lre_min=-3.0 --seed=1",
        f"[1] {sweep.key}-0001: /usr/bin/env {py} fake.py --lre_min=-3.0 --seed=2",
        f"[2] {sweep.key}-0002: /usr/bin/env {py} fake.py --lre_min=-2.0 --seed=1",
        f"[3] {sweep.key}-0003: /usr/bin/env {py} fake.py --lre_min=-2.0 --seed=2",
    ]
    assert sorted(p.name for p in in_tmp.iterdir()) == ["fake.py", "fake.yaml"]


def test_sweep_key_follows_what_runs_not_comments_or_order(tmp_path):
    a = write_sweep(tmp_path, "x: {values: [1, 2]}\ny: {value: 3}\n", name="s")
    key = sw.load_sweep(a).key
    a.write_text("# another comment\n" + a.read_text().replace("x: {values: [1, 2]}\ny: {value: 3}", "y: {value: 3}\nx: {values: [1, 2]}"))
    assert sw.load_sweep(a).key == key and key.startswith("s-")
    a.write_text(a.read_text().replace("[1, 2]", "[1, 2, 3]"))
    assert sw.load_sweep(a).key != key


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ("method: grid\nparameters: {x: {values: [1, 2]\n", "not valid YAML at line 3"),
    ("method: grid\nprogram: pipeline/train.py\ncommand: [python3, -m, pipeline.train, '${args}']\n"
     "parameters: {lre_minn: {values: [-3.0]}}\n", "unknown config key 'lre_minn'"),
    ("method: grid\nprogram: pipeline/train.py\ncommand: [python3, -m, pipeline.train, '${args}']\n"
     "parameters: {steps: {values: [10, ten]}}\n", "point 1 .*--steps='ten': expected int"),
    ("method: grid\nprogram: pipeline/train.py\ncommand: [python3, -m, pipeline.train, '${args}']\n"
     "parameters: {lre_min: {values: [1.0]}, lre_max: {value: 0.0}}\n", "lre_min=1.0 > lre_max=0.0"),
    ("method: grid\nprogram: fake.py\nparameters: {x: {values: []}}\n", "empty grid"),
    ("method: grid\nprogram: fake.py\nparameters: {}\n", "empty grid"),
    ("method: grid\nprogram: nope.py\ncommand: [python3, '${program}', '${args}']\nparameters: {x: {values: [1]}}\n",
     "program 'nope.py' does not exist"),
    ("method: grid\nprogram: fake.py\ncommand: [no-such-exe-x, '${program}']\nparameters: {x: {values: [1]}}\n",
     "command 'no-such-exe-x' not found on PATH"),
    ("method: grid\ncommand: [python3, -m, no_such_module_x]\nparameters: {x: {values: [1]}}\n",
     "module 'no_such_module_x', which does not exist"),
    ("method: bayes\nprogram: fake.py\nparameters: {x: {min: 0.0, max: 1.0}}\n", "needs the W&B server"),
    ("method: random\nprogram: fake.py\nparameters: {x: {min: 0.0, max: 1.0}}\n", "give run_cap in the file or --count"),
    ("method: grid\nprogram: fake.py\nparameters: {x: {min: 0.0, max: 1.0}}\n", "disallowed type with grid search"),
    ("method: grid\nprogram: fake.py\nparamters: {x: {values: [1]}}\n", "unknown top-level key"),
])
def test_bad_input_is_one_error_line_and_nothing_is_written(in_tmp, capsys, body, message):
    (in_tmp / "fake.py").write_text(FAKE)
    (in_tmp / "bad.yaml").write_text(body)
    with pytest.raises(SystemExit) as exc:
        sw.main(["bad.yaml", "--out", "runs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pipeline.sweep: error: ")
    assert re.search(message, err), err
    assert not (in_tmp / "runs").exists()


# -- running ---------------------------------------------------------------------------------------


def test_every_point_runs_once_with_its_identity_and_lands_in_the_manifest(in_tmp):
    path = write_sweep(in_tmp, "lre_min: {values: [-3.0, -2.0]}\nseed: {values: [1, 2]}\n", extra="name: fakename\n")
    sweep = sw.load_sweep(path)
    code = sw.run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False)
    assert code == 0
    folder = in_tmp / "runs" / sweep.key
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 4, [1] * 4, [0] * 4))
    starts = records(folder, "starts")
    assert sorted(starts) == [sw.run_id_for(sweep.key, i) for i in range(4)]
    for i, point in enumerate(sweep.points):
        [rec] = starts[sw.run_id_for(sweep.key, i)]
        assert rec["argv"] == [f"--lre_min={point['lre_min']}", f"--seed={point['seed']}"]
        assert rec["env"] == {"WANDB_DIR": str(folder.resolve()), "WANDB_RUN_ID": sw.run_id_for(sweep.key, i),
                              "WANDB_RUN_GROUP": sweep.key, "WANDB_TAGS": "fakename", "WANDB_MODE": "offline",
                              "WANDB_RESUME": None, "WANDB_SWEEP_ID": None, "LRSCAN_SWEEP_INDEX": str(i)}
    rows = sw.read_manifest(folder)
    assert rows["config"].tolist() == list(sweep.points)
    assert (rows["seconds"] >= 0).all() and rows["started_at"].notna().all() and rows["ended_at"].notna().all()
    assert (folder / "sweep.yaml").read_text() == path.read_text()
    assert json.loads((folder / "sweep.json").read_text())["points"] == 4


def test_rerun_skips_finished_points_and_retries_failed_ones_resuming_the_same_run(in_tmp):
    path = write_sweep(in_tmp, "fail: {values: [false, true]}\n")
    sweep = sw.load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    assert sw.run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False) == 1
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished", "failed"], [1, 1], [0, 3]))
    (folder / "fake" / "heal").touch()
    assert sw.run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False) == 0
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished", "finished"], [1, 2], [0, 0]))
    starts = records(folder, "starts")
    assert len(starts[sw.run_id_for(sweep.key, 0)]) == 1  # the finished point did not run again
    first, retry = starts[sw.run_id_for(sweep.key, 1)]
    assert first["env"]["WANDB_RESUME"] is None and retry["env"]["WANDB_RESUME"] == "allow"
    assert retry["env"]["WANDB_RUN_ID"] == first["env"]["WANDB_RUN_ID"]


def test_a_failure_during_a_session_is_not_retried_in_that_session(in_tmp):
    path = write_sweep(in_tmp, "fail: {values: [true]}\n")
    sweep = sw.load_sweep(path)
    assert sw.run_sweep(sweep, "runs", workers=1, poll_seconds=0.05, progress=False) == 1
    assert len(records(in_tmp / "runs" / sweep.key, "starts")[sw.run_id_for(sweep.key, 0)]) == 1


@pytest.mark.slow
def test_sigterm_stops_the_programs_and_leaves_a_consistent_manifest_then_rerun_resumes(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sweep = sw.load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    proc = cli(str(path), "--workers", "2", "--term-timeout", "20", cwd=in_tmp, env={"FAKE_HOLD": str(hold)})
    wait_for(lambda: len(records(folder, "starts")) == 2 if (folder / "fake").exists() else False)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["killed", "killed", "pending"], [1, 1, 0], [130, 130, None]))
    terms = records(folder, "terms")
    assert sorted(terms) == [sw.run_id_for(sweep.key, 0), sw.run_id_for(sweep.key, 1)]  # each got SIGTERM and saved
    assert not any(alive(r["pid"]) for recs in records(folder, "starts").values() for r in recs)
    hold.unlink()
    proc = cli(str(path), "--workers", "2", "--no-progress", cwd=in_tmp)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 3, [2, 2, 1], [0, 0, 0]))
    assert [r["env"]["WANDB_RESUME"] for r in records(folder, "starts")[sw.run_id_for(sweep.key, 0)]] == [None, "allow"]


@pytest.mark.slow
def test_runners_sharing_a_folder_finish_every_point_once_and_take_over_a_killed_one(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3, 4, 5]}\n")
    sweep = sw.load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    args = (str(path), "--workers", "1", "--lease-seconds", "2", "--no-progress")
    runners = [cli(*args, cwd=in_tmp, env={"FAKE_HOLD": str(hold)}) for _ in range(3)]
    wait_for(lambda: (folder / "fake").exists() and len(records(folder, "starts")) == 3)
    claims = {json.loads(p.read_text())["worker"].split(":")[1]: json.loads(p.read_text())["index"]
              for p in (folder / "claims").glob("*.claim")}
    victim = runners[0]
    victim_index = claims[str(victim.pid)]
    victim_run = sw.run_id_for(sweep.key, victim_index)
    [victim_start] = records(folder, "starts")[victim_run]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    wait_for(lambda: not alive(victim_start["pid"]), 10)  # its program died with it
    hold.unlink()
    for r in runners[1:]:
        _, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
    done = records(folder, "done")
    assert sorted(done) == [sw.run_id_for(sweep.key, i) for i in range(5)]
    assert all(len(v) == 1 for v in done.values())                     # every point finished exactly once
    assert not list((folder / "fake").glob("DUPLICATE-*"))              # and never ran twice at a time
    first, second = records(folder, "starts")[victim_run]
    assert first["env"]["WANDB_RESUME"] is None and second["env"]["WANDB_RESUME"] == "allow"
    m = manifest(folder)
    assert m["state"].tolist() == ["finished"] * 5
    assert m.set_index("index")["attempts"].to_dict() == {i: 2 if i == victim_index else 1 for i in range(5)}
    attempts = sw.ClaimStore(str(folder), 2).attempts(victim_index)
    assert [a["state"] for a in attempts] == ["crashed", "finished"] and "lease expired" in attempts[0]["reason"]


# -- Slurm -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sbatch_script_runs_one_point_per_array_task(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sweep = sw.load_sweep(path)
    sw.main([str(path), "--print-sbatch", "--out", "shared"])
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-2" in script and '--index "$SLURM_ARRAY_TASK_ID"' in script
    (in_tmp / "array.sh").write_text(script)
    # what Slurm does for each task: the same script, with the array variables set (run concurrently)
    tasks = [subprocess.Popen(["bash", str(in_tmp / "array.sh")], cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_JOB_ID": "77",
                                   "SLURM_JOB_ID": str(78 + i), "SLURM_ARRAY_TASK_COUNT": "3"})
             for i in range(3)]
    for t in tasks:
        _, err = t.communicate(timeout=120)
        assert t.returncode == 0, err
    folder = in_tmp / "shared" / sweep.key
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 3, [1] * 3, [0] * 3))
    assert {r[0]["env"]["LRSCAN_SWEEP_INDEX"] for r in records(folder, "starts").values()} == {"0", "1", "2"}
    with pytest.raises(SystemExit) as exc:  # an array larger than the grid
        sw.main([str(path), "--out", "shared", "--index", "3", "--no-progress"])
    assert exc.value.code == 2 and "has 3 points (0..2)" in capsys.readouterr().err


def test_draining_workers_variant_of_the_script(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sw.main([str(path), "--print-sbatch", "--array-tasks", "2"])
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script and "--workers 1" in script and "--index" not in script


def _slurm_up() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "idle" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not _slurm_up(), reason="no Slurm controller with an idle node here (see .ci/run: slurmctld + slurmd)")
def test_real_sbatch_array(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    sweep = sw.load_sweep(path)
    sw.main([str(path), "--print-sbatch", "--out", str(in_tmp / "shared")])
    (in_tmp / "array.sh").write_text(capsys.readouterr().out)
    done = subprocess.run(["sbatch", "--parsable", "--wait", "array.sh"], cwd=in_tmp, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr + "".join(p.read_text() for p in in_tmp.glob("slurm-*.out"))
    folder = in_tmp / "shared" / sweep.key
    pd.testing.assert_frame_equal(manifest(folder), expected(sweep.key, ["finished"] * 3, [1] * 3, [0] * 3))
