"""The local runner with a tiny fake program: expansion, identity, manifest, retries, signals, shared folders, Slurm."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import LrscanError
from pipeline.sweep import runner as sw
from pipeline.sweep.claims import ClaimStore
from tests.conftest import REPO

# Reads --k=v args and the environment, records every start (and every finish) under $WANDB_DIR/fake,
# holds while $FAKE_HOLD exists, fails on --fail=True (with an error line) unless $WANDB_DIR/fake/heal
# exists, dies silently by SIGKILL on --crash=True, and flags two concurrent processes of one run id
# (an flock per run id).
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
    if args.get("crash") == "True":
        os.kill(os.getpid(), signal.SIGKILL)
    if args.get("fail") == "True" and not os.path.exists(os.path.join(out, "heal")):
        print("working on it ...")
        print("FakeError: asked to fail (x=" + args.get("x", "-") + ")", file=sys.stderr)
        print("", file=sys.stderr)
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


def wandb_run_args(yaml_path: Path, point: dict) -> dict:
    """The `args` of the run command W&B's server sends the agent for this point, built from the YAML as
    `wandb sweep` reads it (wandb's own loader): the engine names plain parameters in sorted order and
    puts the YAML's own value objects into the run's config (grid_search's value_hash_lookup)."""
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    params = load_sweep_config(str(yaml_path))["parameters"]
    assert not any("parameters" in spec for spec in params.values())  # plain names only, as here
    return {name: {"value": params[name]["value"] if "value" in params[name] else
                   next(v for v in params[name]["values"] if v == point[name])} for name in sorted(params)}


def test_a_mapping_value_is_launched_in_the_yaml_key_order_as_wandb_renders_it():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    path = REPO / "sweeps" / "lr_range_pairs.yaml"
    sweep = sw.load_sweep(path)
    assert len(sweep.points) > 1
    for point in sweep.points:
        argv, _ = sw.build_command(sweep.command, sweep.program, point, "unused.json")
        theirs = create_sweep_command_args({"args": wandb_run_args(path, point)})["args"]
        assert argv[argv.index(sw.TRAINER_MODULE) + 1:] == theirs
    first, _ = sw.build_command(sweep.command, sweep.program, sweep.points[0], "unused.json")
    assert "--lre_range={'lre_min': -3.0, 'lre_max': 0.0}" in first  # as written in the YAML, not sorted


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
    ("method: grid\nprogram: pipeline/train/__main__.py\ncommand: [python3, -m, pipeline.train, '${args}']\n"
     "parameters: {lre_minn: {values: [-3.0]}}\n", "unknown config key 'lre_minn'"),
    ("method: grid\nprogram: pipeline/train/__main__.py\ncommand: [python3, -m, pipeline.train, '${args}']\n"
     "parameters: {steps: {values: [10, ten]}}\n", "point 1 .*--steps='ten': expected int"),
    ("method: grid\nprogram: pipeline/train/__main__.py\ncommand: [python3, -m, pipeline.train, '${args}']\n"
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


@pytest.mark.parametrize("count", ["0", "-1"])
@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--print-sbatch"]])
def test_a_count_below_one_is_refused_not_a_slice(in_tmp, capsys, count, mode):
    # `points[:-1]` would quietly drop the last point under the same sweep key
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    with pytest.raises(SystemExit) as exc:
        sw.main([str(path), "--count", count, "--out", "runs", *mode])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"pipeline.sweep: error: --count {count}: need at least 1 "
                                    "(grid: run its first N points; random: draw N points)")
    assert captured.out == "" and not (in_tmp / "runs").exists()
    with pytest.raises(LrscanError, match=f"count={count}: need at least 1"):
        sw.load_sweep(path, count=int(count))
    assert len(sw.load_sweep(path, count=2).points) == 2 and len(sw.load_sweep(path, count=9).points) == 3


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: yaml"),
    (["s.yaml", "--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["s.yaml", "--count"], "argument --count: expected one argument"),
    (["s.yaml", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["s.yaml", "--wandb-mode", "cloud"], "argument --wandb-mode: invalid choice: 'cloud'"),
    (["s.yaml", "--array-tasks", "-2", "--print-sbatch"], "--array-tasks -2: must be >= 0"),
])
def test_flag_errors_are_one_line_without_the_usage_block(in_tmp, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        sw.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("pipeline.sweep: error: ") and message in err, err
    assert "usage:" not in err


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


def test_points_that_did_not_finish_are_named_with_the_first_ones_last_error_line(in_tmp, capsys):
    path = write_sweep(in_tmp, "fail: {values: [false, true]}\nx: {values: [1, 2]}\n")
    sweep = sw.load_sweep(path)
    with pytest.raises(SystemExit) as exc:
        sw.main([str(path), "--workers", "2", "--no-progress", "--out", "runs"])
    assert exc.value.code == 1
    log = os.path.join("runs", sweep.key, "logs", f"{sw.run_id_for(sweep.key, 2)}.g0.log")
    assert capsys.readouterr().err.splitlines()[-2:] == [
        f"pipeline.sweep: {sweep.key}: 2 of 4 points did not finish (2 failed); "
        f"point 2 ({sw.run_id_for(sweep.key, 2)}) failed (exit code 3, attempt 1): FakeError: asked to fail (x=1) "
        f"[log: {log}]; run the same command again to retry them",
        f"pipeline.sweep: {sweep.key}: manifest {os.path.join('runs', sweep.key, 'manifest.jsonl')}",
    ]
    (in_tmp / "runs" / sweep.key / "fake" / "heal").touch()
    assert sw.run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False) == 0
    assert sw.unfinished_message("runs", sweep) == ""


def test_a_point_that_died_silently_is_named_with_how_it_ended(in_tmp):
    path = write_sweep(in_tmp, "crash: {values: [true]}\n")
    sweep = sw.load_sweep(path)
    assert sw.run_sweep(sweep, "runs", workers=1, poll_seconds=0.05, progress=False) == 1
    # a crash is retried in the same session (up to 3 attempts): the message names the last one
    log = os.path.join("runs", sweep.key, "logs", f"{sw.run_id_for(sweep.key, 0)}.g2.log")
    assert sw.unfinished_message("runs", sweep) == (
        f"1 of 1 points did not finish (1 crashed); "
        f"point 0 ({sw.run_id_for(sweep.key, 0)}) crashed (killed by SIGKILL, attempt 3) "
        f"[log: {log}]; run the same command again to retry them")


def test_the_last_log_line_skips_blank_lines_colours_and_progress_redraws(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"step 1\n\x1b[31mwandb: ERROR\x1b[0m api_key not configured (no-tty)\r\n  \n\n")
    assert sw.last_log_line(log) == "wandb: ERROR api_key not configured (no-tty)"
    log.write_bytes(b"10%\r50%\r100%")
    assert sw.last_log_line(log) == "100%"
    log.write_bytes(b"")
    assert sw.last_log_line(log) == "" and sw.last_log_line(tmp_path / "missing.log") == ""
    log.write_bytes(b"x" * 1000 + b"\n")
    assert len(sw.last_log_line(log)) == 300


@pytest.mark.slow
def test_a_killed_runners_points_are_taken_over_at_once_on_the_same_host(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2]}\n")
    sweep = sw.load_sweep(path)
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
        first, retry = sw.ClaimStore(str(folder), 3600).attempts(i)
        assert first["state"] == "crashed"
        assert first["reason"] == f"its worker {host}:{victim.pid} died (seen dead on this host)"
        assert f"pipeline.sweep: point {i} ({sw.run_id_for(sweep.key, i)}): its worker {host}:{victim.pid} died " \
               "(seen dead on this host); taking it over now (attempt 2)" in err.splitlines()
        starts = records(folder, "starts")[sw.run_id_for(sweep.key, i)]
        assert [r["env"]["WANDB_RESUME"] for r in starts] == [None, "allow"]
    assert "waiting for" not in err


@pytest.mark.slow
def test_a_runner_that_must_wait_says_for_what_and_how_long(in_tmp):
    hold = in_tmp / "hold"
    hold.touch()
    path = write_sweep(in_tmp, "x: {values: [1, 2]}\n")
    sweep = sw.load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    lease = ("--lease-seconds", "3600", "--no-progress")
    # point 0: claimed by a worker on another host (a claim as that worker writes it; it cannot be checked from here)
    foreign = ClaimStore(str(folder), 3600)
    foreign._owner = {"host": "node-elsewhere", "boot_id": "0" * 32, "pid_ns": "pid:[1]", "pid": 4242, "start_ticks": 7}
    assert foreign.claim(0, 0, {"run_id": sw.run_id_for(sweep.key, 0)}) is not None
    # point 1: held by a live runner on this host
    owner = cli(str(path), "--index", "1", *lease, cwd=in_tmp, env={"FAKE_HOLD": str(hold)})
    wait_for(lambda: (folder / "fake").exists() and len(records(folder, "starts")) == 1)
    err_path = in_tmp / "waiter.err"
    with open(err_path, "w") as err_file:
        waiter = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", str(path), *lease], cwd=in_tmp,
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
        rf"pipeline\.sweep: waiting for point 0 \({sweep.key}-0000\): held by node-elsewhere:4242 on another host "
        r"\(not checkable from here\); until it ends, or its lease lapses unrenewed "
        r"\(in \d+ s at the earliest; lease 3600 s\)", lines[0]), lines[0]
    assert re.fullmatch(
        rf"pipeline\.sweep: waiting for point 1 \({sweep.key}-0001\): held by {re.escape(host)}:{owner.pid}, "
        r"alive on this host; until it ends, or its lease lapses unrenewed "
        r"\(in \d+ s at the earliest; lease 3600 s\)", lines[1]), lines[1]
    assert manifest(folder)["state"].tolist() == ["finished", "finished"]


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
    assert [a["state"] for a in attempts] == ["crashed", "finished"]
    # on one host the killed runner is seen dead; across hosts its lease would lapse first (the next test)
    assert attempts[0]["reason"] == f"its worker {socket.gethostname()}:{victim.pid} died (seen dead on this host)"


def test_a_claim_from_another_host_is_taken_over_once_its_lease_lapses(in_tmp, capsys):
    path = write_sweep(in_tmp, "x: {values: [1]}\n")
    sweep = sw.load_sweep(path)
    folder = in_tmp / "runs" / sweep.key
    foreign = ClaimStore(str(folder), 5.0)
    foreign._owner = {"host": "node-elsewhere", "boot_id": "0" * 32, "pid_ns": "pid:[1]", "pid": 4242, "start_ticks": 7}
    claim = foreign.claim(0, 0, {})
    old = time.time() - 60  # its worker stopped renewing a minute ago: the lease lapsed
    os.utime(claim.path, (old, old))
    assert sw.run_sweep(sweep, "runs", workers=1, lease_seconds=5.0, poll_seconds=0.05, progress=False) == 0
    first, retry = ClaimStore(str(folder), 5.0).attempts(0)
    assert first["state"] == "crashed" and re.fullmatch(r"lease expired after \d+ s", first["reason"])
    assert retry["state"] == "finished"
    assert re.fullmatch(rf"pipeline\.sweep: point 0 \({sweep.key}-0000\): no lease renewal from node-elsewhere:4242 "
                        r"for \d+ s; taking it over now \(attempt 2\)", capsys.readouterr().err.strip())


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
