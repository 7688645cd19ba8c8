"""What the sweep room's tests share: a tiny fake program, sweep YAMLs that run it, and ways to look at what ran."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.manifest import read_manifest

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
    """A grid sweep of FAKE (written beside it) over `parameters`, a YAML block; `extra` adds top-level keys."""
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
    """What FAKE recorded in a sweep folder, per run id: its "starts", "terms" or "done" in order."""
    out: dict[str, list[dict]] = {}
    for path in sorted((folder / "fake").glob(f"*.{kind}.jsonl")):
        out[path.name.split(".")[0]] = [json.loads(line) for line in path.read_text().splitlines()]
    return out


def manifest(folder: Path) -> pd.DataFrame:
    """The manifest's columns a test can predict exactly (no timings, workers or logs)."""
    return read_manifest(folder)[["index", "run_id", "state", "attempts", "exit_code"]]


def expected(key: str, states: list[str], attempts: list[int], codes: list) -> pd.DataFrame:
    """`manifest(folder)` as it should be."""
    return pd.DataFrame({
        "index": range(len(states)), "run_id": [run_id_for(key, i) for i in range(len(states))],
        "state": states, "attempts": attempts, "exit_code": pd.array(codes, dtype="Int64"),
    })


def cli(*args: str, cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    """`python -m pipeline.sweep ARGS` as its own process (one a test can signal or kill), output piped."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "lrscan.pipeline.sweep", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, timeout_seconds: float = 60.0) -> None:
    """Wait until predicate() holds; fail the test past the bound."""
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Is this process running (not gone, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wandb_run_args(yaml_path: Path, point: dict) -> dict:
    """The `args` of the run command W&B's server sends the agent for this point, built from the YAML as
    `wandb sweep` reads it (wandb's own loader): the engine names plain parameters in sorted order and
    puts the YAML's own value objects into the run's config (grid_search's value_hash_lookup)."""
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    params = load_sweep_config(str(yaml_path))["parameters"]
    assert not any("parameters" in spec for spec in params.values())  # plain names only, as here
    return {name: {"value": params[name]["value"] if "value" in params[name] else
                   next(v for v in params[name]["values"] if v == point[name])} for name in sorted(params)}


NO_SLURM = "no Slurm controller with an idle node here (see .ci/run: slurmctld + slurmd)"


def need_slurm() -> None:
    """Skip the calling test unless `slurm_up()`. Asked when such a test runs, not as a skipif mark: a mark is
    evaluated at collection, where `sinfo` waiting ~9 s on a controller that is down held every xdist worker
    (twice each) before the first test started."""
    if not slurm_up():
        pytest.skip(NO_SLURM)


@functools.cache
def slurm_up() -> bool:
    """A Slurm controller with an idle node answers here (.ci/run starts a one-node one where it can); asked once
    per process."""
    if not all(shutil.which(tool) for tool in ("sbatch", "sinfo", "scontrol")):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "idle" in out.stdout
