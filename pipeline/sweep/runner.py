"""Run a W&B sweep YAML locally, offline, on one machine or many sharing a folder.

    python -m pipeline.sweep sweeps/lr_range.yaml                 # all points, as many at once as the machine takes
    python -m pipeline.sweep sweeps/lr_range.yaml --dry-run       # print the expanded commands, run nothing
    python -m pipeline.sweep sweeps/lr_range.yaml --workers 2     # two at a time
    python -m pipeline.sweep sweeps/lr_range.yaml --index 3       # only point 3 (a Slurm array task)
    python -m pipeline.sweep sweeps/lr_range.yaml --print-sbatch  # a Slurm job array script for this sweep

The same YAML runs unchanged under `wandb sweep` + `wandb agent`: points are expanded as W&B's
open-source engine does (`pipeline.sweep_grid`) and each command line is built with W&B's macro
semantics (wandb's own `create_sweep_command`/`create_sweep_command_args`, then the assembly of
`wandb_agent.Agent._command_run`). The runner is program-agnostic: it runs any `program`/`command`.

Each point gets the identity `wandb agent` would give it, through the environment:
WANDB_DIR (the sweep folder), WANDB_RUN_ID (`<sweep key>-<index>`, stable: a retry resumes the same
run), WANDB_RUN_GROUP (the sweep key), WANDB_TAGS (the sweep name), WANDB_MODE (offline unless told
otherwise), WANDB_RESUME=allow on retries, LRSCAN_SWEEP_INDEX. WANDB_SWEEP_ID is never set: offline,
no server-side sweep exists.

The sweep folder, `<out>/<sweep key>/` (the key is `<yaml stem>-<hash of method, parameters, program,
command>`, so an edited YAML is a new sweep):

    sweep.yaml         the YAML as given          sweep.json     key, name, method, points
    manifest.jsonl     one line per point: index, run_id, state, attempts, exit_code, timings, config
    claims/            who runs which point (`pipeline.sweep_claims`: exclusive, leased, NFS-safe)
    logs/              each attempt's stdout+stderr
    wandb/             the offline runs (`wandb sync <out>/<key>/wandb/offline-run-*`)
    checkpoints/       the trainer's checkpoints, `<run_id>.pt`

Several runners may share one folder (one machine or many on a shared filesystem): each claims
points atomically, renews a lease while its program runs, takes over a point whose worker vanished
(resuming its run from the checkpoint), and never runs a point twice at the same time. A worker
that died on this same host (killed runner, closed terminal) is seen dead at once and its points are
taken over without waiting out the lease; one on another host is waited for, and the runner says
for what and how long. Re-running a sweep skips finished points and retries failed, crashed and
killed ones; when points did not finish, the last line says why (the first one's last error line).

`${interpreter}` is W&B's literal `python`, which some machines lack, so lrscan's YAMLs say `python3`.
The runner puts the directory of its own interpreter first on the children's PATH, so `python3` (and
`python`) run the interpreter that runs the sweep, venv or not; under `wandb agent`, activate the
environment so `python3` is lrscan's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from pipeline import keys
from pipeline.errors import LrscanError, exit_with
from pipeline.fsutil import atomic_write_text
from pipeline.sweep import grid as sweep_grid
from pipeline.sweep.claims import (
    CRASHED,
    FAILED,
    FINISHED,
    KILLED,
    PENDING,
    RUNNING,
    Claim,
    ClaimStore,
    PointState,
    here,
)
from pipeline.yamlfile import read_yaml_text_and_mapping

PROG = "pipeline.sweep"
TRAINER_PROGRAM, TRAINER_MODULE = keys.TRAINER_PROGRAM, keys.TRAINER_MODULE
DEFAULT_OUT = "runs"
MANIFEST = "manifest.jsonl"

# top-level keys of W&B's sweep schema (sweeps/config/schema.json, additionalProperties: false)
SWEEP_KEYS = {"apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity",
              "project", "method", "command", "name", "run_cap", "metric", "metrics", "scheduler",
              "early_terminate", "parameters"}
SERVER_METHODS = ("bayes", "custom")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep YAML, checked and expanded."""

    path: str
    text: str                      # the YAML as written
    config: dict[str, Any]         # the YAML, parsed
    name: str                      # `name:` or the file stem: the runs' tag
    key: str                       # `<stem>-<hash>`: the runs' group and the folder name
    method: str
    program: str
    command: tuple[str, ...]       # the `command:` template, W&B's default if absent
    points: tuple[dict[str, Any], ...]
    seed: int = 0


# -- reading a sweep -----------------------------------------------------------------------------


def load_sweep(path: str | os.PathLike, count: int | None = None, seed: int = 0) -> Sweep:
    """Read, check and expand a sweep YAML. LrscanError, naming the problem, if anything is wrong."""
    path = str(path)
    if count is not None and count < 1:
        # a grid's `points[:count]` would quietly drop points from the end for count < 1
        raise LrscanError(f"count={count}: need at least 1 (grid: run its first N points; random: draw N points)")
    text, config = read_yaml_text_and_mapping(path, "sweep file")
    unknown = sorted(set(config) - SWEEP_KEYS)
    if unknown:
        raise LrscanError(f"{path}: unknown top-level key(s) {unknown}; W&B sweep keys are {sorted(SWEEP_KEYS)}")
    method = config.get("method")
    if method in SERVER_METHODS:
        raise LrscanError(f"{path}: method: {method} needs the W&B server's controller; run it with "
                          f"`wandb sweep {path}` and `wandb agent ENTITY/PROJECT/SWEEP_ID`, or use grid or random here")
    if method not in ("grid", "random"):
        raise LrscanError(f"{path}: method must be grid or random here (bayes needs the W&B server), got {method!r}")
    program = config.get("program", "")
    if not isinstance(program, str):
        raise LrscanError(f"{path}: program must be a string (a path such as {TRAINER_PROGRAM}), got {program!r}")
    command = config.get("command")
    if command is None:
        from wandb.sdk.launch.sweeps.utils import DEFAULT_SWEEP_COMMAND

        command = list(DEFAULT_SWEEP_COMMAND)
    if not isinstance(command, list) or not command or not all(isinstance(c, (str, int, float)) for c in command):
        raise LrscanError(f"{path}: command must be a non-empty list of strings, got {command!r}")
    command = [str(c) for c in command]
    if "${program}" in command and not program:
        raise LrscanError(f"{path}: command uses ${{program}} but the file has no program")
    metric = config.get("metric")
    if metric is not None and (not isinstance(metric, dict) or not isinstance(metric.get("name"), str)):
        raise LrscanError(f"{path}: metric must be a mapping with a name, e.g. {{name: dev_loss, goal: minimize}}")
    run_cap = config.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        raise LrscanError(f"{path}: run_cap must be a positive integer, got {run_cap!r}")
    name = config.get("name") or Path(path).stem
    if not isinstance(name, str):
        raise LrscanError(f"{path}: name must be a string, got {name!r}")

    parameters = config.get("parameters")
    if method == "grid":
        points = sweep_grid.grid_points(parameters)
        if run_cap is not None:
            points = points[:run_cap]
        if count is not None:
            points = points[:count]
    else:
        n = count if count is not None else run_cap
        if n is None:
            raise LrscanError(f"{path}: method: random runs forever under W&B; give run_cap in the file or --count here")
        points = sweep_grid.random_points(parameters, n, seed)

    identity = {"method": method, "parameters": parameters, "program": program, "command": command}
    if method == "random":
        identity.update(seed=seed, count=len(points))
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    key = f"{Path(path).stem[:40]}-{digest}"
    return Sweep(path=path, text=text, config=config, name=name, key=key, method=method, program=program,
                 command=tuple(command), points=tuple(points), seed=seed)


def run_id_for(sweep_key: str, index: int) -> str:
    """A point's wandb run id: stable, so a retry resumes the same run."""
    return f"{sweep_key}-{index:04d}"


def is_trainer(sweep: Sweep) -> bool:
    """Does this sweep run lrscan's own trainer (so its parameters must be TrainConfig fields)?"""
    cmd = list(sweep.command)
    by_module = any(a == "-m" and b == TRAINER_MODULE for a, b in zip(cmd, cmd[1:]))
    by_program = "${program}" in cmd and os.path.normpath(sweep.program) == os.path.normpath(TRAINER_PROGRAM)
    return by_module or by_program


def check_trainer_points(sweep: Sweep) -> None:
    """Parse every point exactly as the trainer will (its `${args}` through `parse_args`)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from pipeline.config import parse_args

    for index, point in enumerate(sweep.points):
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args"]
        try:
            parse_args(args)
        except LrscanError as e:
            raise LrscanError(f"{sweep.path}: point {index} {json.dumps(point)}: {e}") from None


# -- building a command, W&B's way ---------------------------------------------------------------


def build_command(template: Sequence[str], program: str, point: Mapping[str, Any], args_json_file: str) -> tuple[list[str], str]:
    """The argv `wandb agent` would run for this point, and the `${args_json}` text.

    `${envvar:NAME}` is expanded from this process' environment by wandb's own function; the rest
    copies `wandb_agent.Agent._command_run` (not importable on its own: it lives inside the method):
    a whole chunk `${name}` is replaced by its list of words, an unknown macro by nothing,
    `${interpreter}` by the literal `python`, `${env}` by /usr/bin/env.
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    expanded = create_sweep_command(list(template))
    sweep_vars: dict[str, Any] = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [program]
    sweep_vars["args_json_file"] = [args_json_file]
    if os.name != "nt":
        sweep_vars["env"] = ["/usr/bin/env"]
    argv: list[str] = []
    for chunk in expanded:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += sweep_vars.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv, sweep_vars["args_json"][0]


def child_path(environ: Mapping[str, str]) -> str:
    """PATH for the children: this interpreter's folder first, so `python3`/`python` mean this Python."""
    here = os.path.dirname(sys.executable)
    rest = [p for p in environ.get("PATH", os.defpath).split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])


def point_env(environ: Mapping[str, str], *, folder: str, sweep: Sweep, index: int, run_id: str, retry: bool,
              wandb_mode: str) -> dict[str, str]:
    """The environment of one point's process: what `wandb agent` sets, for an offline sweep."""
    env = dict(environ)
    env.pop("WANDB_SWEEP_ID", None)
    env.pop("WANDB_SWEEP_PARAM_PATH", None)
    env.pop("WANDB_RESUME", None)
    env.update({
        "PATH": child_path(environ),
        "WANDB_DIR": os.path.abspath(folder),
        "WANDB_RUN_ID": run_id,
        "WANDB_RUN_GROUP": sweep.key,
        "WANDB_TAGS": sweep.name,
        "WANDB_MODE": wandb_mode,
        "LRSCAN_SWEEP_INDEX": str(index),
    })
    if retry:
        env["WANDB_RESUME"] = "allow"
    return env


def check_launchable(sweep: Sweep, environ: Mapping[str, str]) -> None:
    """Fail before launching anything if the program or its interpreter cannot be found."""
    argv, _ = build_command(sweep.command, sweep.program, sweep.points[0] if sweep.points else {}, "args.json")
    words = list(argv)
    if words and os.path.basename(words[0]) == "env":
        words = words[1:]
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # env VAR=value ... prog
    if not words:
        raise LrscanError(f"{sweep.path}: command {list(sweep.command)} expands to nothing to run")
    exe = words[0]
    if not shutil.which(exe, path=child_path(environ)):
        hint = (" (W&B's ${interpreter} is the literal 'python'; write python3 in command)"
                if "${interpreter}" in sweep.command else "")
        raise LrscanError(f"{sweep.path}: command {exe!r} not found on PATH{hint}")
    if "${program}" in sweep.command and not os.path.isfile(sweep.program):
        raise LrscanError(f"{sweep.path}: program {sweep.program!r} does not exist (paths are relative to {os.getcwd()})")
    if os.path.basename(exe).startswith("python") and "-m" in words:
        i = words.index("-m")
        module = words[i + 1] if i + 1 < len(words) else ""
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise LrscanError(f"{sweep.path}: command runs module {module!r}, which does not exist")


def check_sweep(sweep: Sweep, environ: Mapping[str, str]) -> None:
    """Everything that can be checked before a process starts or a file is written."""
    if not sweep.points:
        raise LrscanError(f"{sweep.path}: the sweep has no points to run")
    check_launchable(sweep, environ)
    if is_trainer(sweep):
        check_trainer_points(sweep)


# -- the manifest --------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def manifest_rows(sweep: Sweep, states: Sequence[PointState]) -> list[dict[str, Any]]:
    rows = []
    for st in states:
        claim, end = st.claim, st.end
        rows.append({
            "index": st.index,
            "run_id": run_id_for(sweep.key, st.index),
            "state": st.state,
            "attempts": st.gen + 1,
            "exit_code": end.get("exit_code"),
            "started_at": claim.get("started_at"),
            "ended_at": end.get("ended_at"),
            "seconds": end.get("seconds"),
            "worker": claim.get("worker"),
            "log": claim.get("log"),
            "config": sweep.points[st.index],
        })
    return rows


def write_manifest(folder: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace the manifest atomically: a reader never sees half a file, even mid-Ctrl-C."""
    atomic_write_text(os.path.join(folder, MANIFEST), "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows))


def read_manifest(folder: str | os.PathLike):
    """A sweep folder's manifest as a DataFrame, one row per point (the `config` column holds dicts)."""
    import pandas as pd

    path = Path(folder) / MANIFEST
    if not path.exists():
        raise LrscanError(f"no {MANIFEST} in {str(folder)!r}: not a sweep folder, or the sweep never started")
    return pd.read_json(path, lines=True, dtype={"exit_code": "Int64"})


def sweep_folder(out: str, sweep: Sweep) -> str:
    return os.path.join(out, sweep.key)


def _prepare_folder(folder: str, sweep: Sweep) -> None:
    os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
    meta = {"key": sweep.key, "name": sweep.name, "method": sweep.method, "program": sweep.program,
            "command": list(sweep.command), "points": len(sweep.points), "seed": sweep.seed, "yaml": sweep.path}
    for name, text in (("sweep.yaml", sweep.text), ("sweep.json", json.dumps(meta, indent=1) + "\n")):
        target = os.path.join(folder, name)
        if not os.path.exists(target):
            atomic_write_text(target, text)


# -- running -------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    claim: Claim
    proc: subprocess.Popen
    log: Any
    started: float             # time.monotonic()
    started_at: float          # time.time()
    last_renew: float
    stop_sent: float | None = None  # monotonic time we sent SIGTERM, if we did


def _die_with_parent() -> Any:
    """A preexec_fn that makes the child die with SIGKILL when the runner dies (Linux), else None.

    Without it a SIGKILLed runner leaves its program running; the point's lease then expires, a taker
    resumes the same run, and two processes would write one run.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(1)

    return preexec


class Runner:
    """Drains the points of one sweep folder (or just the given indices) with a pool of processes."""

    def __init__(self, sweep: Sweep, folder: str, *, workers: int, lease_seconds: float, wandb_mode: str,
                 term_timeout_seconds: float = 30.0, poll_seconds: float = 0.5, indices: Sequence[int] | None = None,
                 max_attempts_per_point: int = 3, progress: bool = True, environ: Mapping[str, str] | None = None):
        self.sweep = sweep
        self.folder = folder
        self.workers = max(1, workers)
        self.wandb_mode = wandb_mode
        self.term_timeout_seconds = term_timeout_seconds
        self.poll_seconds = poll_seconds
        self.indices = list(range(len(sweep.points))) if indices is None else list(indices)
        self.max_attempts_per_point = max_attempts_per_point
        self.progress = progress
        self.environ = dict(os.environ if environ is None else environ)
        self.store = ClaimStore(folder, lease_seconds)
        self.jobs: dict[int, _Job] = {}
        self.started_here: dict[int, int] = {}   # attempts this runner started, per point
        self.retry_failed: set[int] = set()      # points that had failed before this runner started
        self.stop_signal: int | None = None
        self._last_manifest: list[tuple[int, str]] | None = None
        self._preexec = _die_with_parent()
        self._bar: Any = None
        self._waits_told: set[tuple[int, int]] = set()  # (index, gen) of claims we said we wait for

    # -- signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:
            for job in self.jobs.values():  # second signal: no more waiting
                _killpg(job.proc, signal.SIGKILL)
        self.stop_signal = signum

    # -- one point

    def _start(self, st: PointState) -> None:
        index = st.index
        run_id = run_id_for(self.sweep.key, index)
        gen = st.gen + 1
        log_rel = os.path.join("logs", f"{run_id}.g{gen}.log")
        json_file = os.path.join(os.path.abspath(self.folder), "wandb", f"sweep-{self.sweep.key}", f"config-{run_id}.json")
        argv, args_json = build_command(self.sweep.command, self.sweep.program, self.sweep.points[index], json_file)
        info = {"run_id": run_id, "started_at": _iso(time.time()), "log": log_rel, "command": argv}
        if st.state == RUNNING:  # its worker is gone (lease expired, or seen dead on this host)
            claim = self.store.take_over(st, info)
            if claim is not None:
                why = (f"its worker {st.claim.get('worker')} died (seen dead on this host)" if st.owner_dead else
                       f"no lease renewal from {st.claim.get('worker')} for {st.lease_age_seconds:.0f} s")
                self._say(f"{PROG}: point {index} ({run_id}): {why}; taking it over now (attempt {gen + 1})")
        else:
            claim = self.store.claim(index, gen, info)
        if claim is None:
            return  # another runner was faster
        if "${args_json_file}" in self.sweep.command:
            os.makedirs(os.path.dirname(json_file), exist_ok=True)
            Path(json_file).write_text(args_json)
        env = point_env(self.environ, folder=self.folder, sweep=self.sweep, index=index, run_id=run_id,
                        retry=gen > 0, wandb_mode=self.wandb_mode)
        log = open(os.path.join(self.folder, log_rel), "ab")
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    process_group=0, preexec_fn=self._preexec)
        except OSError as e:
            log.write(f"{PROG}: cannot start {argv!r}: {e}\n".encode())
            log.close()
            self.store.end(index, gen, {"state": FAILED, "exit_code": None, "ended_at": _iso(time.time()),
                                        "seconds": 0.0, "reason": f"cannot start: {e}"})
            self.started_here[index] = self.started_here.get(index, 0) + 1
            return
        self.store.note_program(claim, proc.pid)  # lets a runner on this host see when it is gone
        now = time.monotonic()
        self.jobs[index] = _Job(claim, proc, log, now, time.time(), now)
        self.started_here[index] = self.started_here.get(index, 0) + 1

    def _finish(self, index: int, rc: int, reason: str = "") -> None:
        job = self.jobs.pop(index)
        job.log.close()
        if rc == 0:
            state = FINISHED
        elif job.stop_sent is not None:
            state = KILLED
        elif rc > 0:
            state = FAILED
        else:
            state = CRASHED
        record = {"state": state, "exit_code": rc, "ended_at": _iso(time.time()),
                  "seconds": round(time.monotonic() - job.started, 3)}
        if reason:
            record["reason"] = reason
        self.store.end(index, job.claim.gen, record)

    def _reap(self) -> None:
        for index, job in list(self.jobs.items()):
            rc = job.proc.poll()
            if rc is not None:
                self._finish(index, rc)

    def _renew(self) -> None:
        now = time.monotonic()
        for index, job in list(self.jobs.items()):
            if now - job.last_renew < self.store.lease_seconds / 4:
                continue
            job.last_renew = now
            if not self.store.renew(job.claim):
                # the lease is gone (we were stalled past it): someone may run the point now, so stop ours
                _killpg(job.proc, signal.SIGKILL)
                job.proc.wait()
                job.stop_sent = now
                self._finish(index, job.proc.returncode, reason="lease lost")

    # -- policy

    def _claimable(self, st: PointState) -> bool:
        if st.index in self.jobs or self.started_here.get(st.index, 0) >= self.max_attempts_per_point:
            return False
        if st.state == PENDING:
            return True
        if st.state == RUNNING:
            return st.expired or st.owner_dead
        if st.state in (CRASHED, KILLED):
            return True
        if st.state == FAILED:
            # a failure from an earlier session is retried once; one that happened while we run is final
            return st.index in self.retry_failed and self.started_here.get(st.index, 0) == 0
        return False

    def _tell_waits(self, states: Sequence[PointState]) -> None:
        """One line per claim of another worker that keeps this runner waiting: for what, and how long."""
        for i in self.indices:
            st = states[i]
            if st.state != RUNNING or i in self.jobs or self._claimable(st) or (i, st.gen) in self._waits_told:
                continue
            if self.started_here.get(i, 0) >= self.max_attempts_per_point:
                continue  # we would not take it over anyway
            self._waits_told.add((i, st.gen))
            self._say(f"{PROG}: waiting for point {i} ({run_id_for(self.sweep.key, i)}): {self._wait_reason(st)}")

    def _wait_reason(self, st: PointState) -> str:
        worker = st.claim.get("worker") or "another runner"
        owner = st.claim.get("owner") or {}
        lapse = (f"its lease lapses unrenewed (in {max(0.0, self.store.lease_seconds - st.lease_age_seconds):.0f} s "
                 f"at the earliest; lease {self.store.lease_seconds:g} s)")
        if st.program_alive:
            return (f"its worker {worker} died, but the program it started still runs on this host; "
                    f"until that program exits, or {lapse}")
        if here(owner):
            return f"held by {worker}, alive on this host; until it ends, or {lapse}"
        if owner.get("host", worker.split(":")[0]) == socket.gethostname():
            return (f"held by {worker}, of another boot or PID namespace (not checkable from here); "
                    f"until it ends, or {lapse}")
        return f"held by {worker} on another host (not checkable from here); until it ends, or {lapse}"

    def _say(self, line: str) -> None:
        if self._bar is not None and hasattr(self._bar, "write"):
            self._bar.write(line, file=sys.stderr)  # tqdm: print above the bar
        else:
            print(line, file=sys.stderr, flush=True)

    def _settled(self, st: PointState) -> bool:
        """Nothing more will happen to this point in this session (as far as this runner knows)."""
        return st.state != RUNNING and st.state != PENDING and not self._claimable(st)

    # -- the loop

    def run(self) -> int:
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        bar = None
        try:
            states = self.store.states(len(self.sweep.points))
            self.retry_failed = {st.index for st in states if st.state == FAILED}
            if self.progress:
                from tqdm import tqdm

                tqdm.monitor_interval = 0  # no monitor thread: children are forked from this process
                initial = sum(states[i].state == FINISHED for i in self.indices)
                if sys.stderr.isatty():
                    bar = tqdm(total=len(self.indices), desc=self.sweep.key, unit="run", dynamic_ncols=True, initial=initial)
                else:
                    bar = _LineProgress(self.sweep.key, len(self.indices), initial)
                self._bar = bar
            while True:
                self._reap()
                if self.stop_signal is not None:
                    self._shutdown()
                    break
                self._renew()
                states = self.store.states(len(self.sweep.points))
                mine = [states[i] for i in self.indices]
                for st in mine:
                    if len(self.jobs) >= self.workers:
                        break
                    if self._claimable(st):
                        self._start(st)
                states = self.store.states(len(self.sweep.points))
                if len(self.jobs) < self.workers:  # idle slots: say what keeps them idle
                    self._tell_waits(states)
                self._write_manifest(states)
                if bar is not None:
                    self._show(bar, [states[i] for i in self.indices])
                if not self.jobs and all(self._settled(states[i]) for i in self.indices):
                    break
                time.sleep(self.poll_seconds)
            states = self.store.states(len(self.sweep.points))
            self._write_manifest(states, force=True)
            if bar is not None:
                self._show(bar, [states[i] for i in self.indices])
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            self._bar = None
            self.store.close()
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 0 if all(states[i].state == FINISHED for i in self.indices) else 1

    def _shutdown(self) -> None:
        """Ctrl-C / SIGTERM: ask every program to stop, wait a while, then kill; record them as killed."""
        now = time.monotonic()
        for job in self.jobs.values():
            job.stop_sent = now
            _killpg(job.proc, signal.SIGTERM)
        deadline = now + self.term_timeout_seconds
        while self.jobs and time.monotonic() < deadline:
            self._reap()
            self._renew_all_quietly()
            time.sleep(min(self.poll_seconds, 0.2))
        for index, job in list(self.jobs.items()):
            _killpg(job.proc, signal.SIGKILL)
            job.proc.wait()
            self._finish(index, job.proc.returncode)

    def _renew_all_quietly(self) -> None:
        # keep leases alive while programs save their checkpoints, so nobody takes them over meanwhile
        now = time.monotonic()
        for job in self.jobs.values():
            if now - job.last_renew >= self.store.lease_seconds / 4:
                job.last_renew = now
                self.store.renew(job.claim)

    def _write_manifest(self, states: Sequence[PointState], force: bool = False) -> None:
        snapshot = [(st.gen, st.state) for st in states]
        if force or snapshot != self._last_manifest:
            write_manifest(self.folder, manifest_rows(self.sweep, states))
            self._last_manifest = snapshot

    def _show(self, bar: Any, states: Sequence[PointState]) -> None:
        done = sum(st.state == FINISHED for st in states)
        running = sum(st.state == RUNNING for st in states)
        failed = sum(st.state in (FAILED, CRASHED, KILLED) for st in states)
        if done > bar.n:
            bar.update(done - bar.n)
        bar.set_postfix_str(f"running {running}, failed {failed}", refresh=True)


class _LineProgress:
    """The progress bar's stand-in when stderr is a file or a pipe (CI, nohup, Slurm): one line per change."""

    def __init__(self, desc: str, total: int, initial: int):
        self.desc, self.total, self.n, self.start_n = desc, total, initial, initial
        self.t0 = time.monotonic()
        self.last = ""

    def update(self, k: int) -> None:
        self.n += k

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        line = f"{self.n}/{self.total} done, {text}"
        if line == self.last:
            return
        self.last = line
        elapsed = time.monotonic() - self.t0
        done_here = self.n - self.start_n
        eta = f", ETA {elapsed / done_here * (self.total - self.n):.0f} s" if done_here and self.n < self.total else ""
        print(f"{self.desc}: {line} ({elapsed:.0f} s{eta})", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def default_workers() -> int:
    """What the machine (or the Slurm allocation) can take: one single-threaded run per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_sweep(sweep: Sweep, out: str = DEFAULT_OUT, *, workers: int | None = None, lease_seconds: float = 60.0,
              wandb_mode: str | None = None, indices: Sequence[int] | None = None, term_timeout_seconds: float = 30.0,
              poll_seconds: float = 0.5, progress: bool = True) -> int:
    """Run a checked sweep in `<out>/<key>/`; returns the exit code (0: every point finished)."""
    check_sweep(sweep, os.environ)
    for i in indices or ():
        if not 0 <= i < len(sweep.points):
            raise LrscanError(f"--index {i}: {sweep.path} has {len(sweep.points)} points (0..{len(sweep.points) - 1})")
    folder = sweep_folder(out, sweep)
    _prepare_folder(folder, sweep)
    runner = Runner(sweep, folder, workers=workers or default_workers(), lease_seconds=lease_seconds,
                    wandb_mode=wandb_mode or os.environ.get("WANDB_MODE") or "offline", indices=indices,
                    term_timeout_seconds=term_timeout_seconds, poll_seconds=poll_seconds, progress=progress)
    return runner.run()


# -- why points did not finish -------------------------------------------------------------------

_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_log_line(path: str | os.PathLike, tail_bytes: int = 65536, max_chars: int = 300) -> str:
    """The last non-empty line of a log (colours and \\r progress redraws removed); '' if none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):  # splitlines also splits at \r: a redrawn line's last state
        line = _TERMINAL_ESCAPES.sub("", line).strip()
        if line:
            return line if len(line) <= max_chars else line[: max_chars - 3] + "..."
    return ""


def _how_it_ended(end: Mapping[str, Any]) -> str:
    rc = end.get("exit_code")
    if isinstance(rc, int) and rc < 0:
        try:
            how = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"killed by signal {-rc}"
    elif isinstance(rc, int):
        how = f"exit code {rc}"
    else:
        how = "no exit code"
    return f"{how}, {end['reason']}" if end.get("reason") else how


def unfinished_message(out: str, sweep: Sweep, indices: Sequence[int] | None = None) -> str:
    """One line on the points of a sweep folder that did not finish, with the first one's cause; '' if none.

    The cause is the last non-empty line of that attempt's log (the program's stdout and stderr: a
    traceback ends with its exception), else how it ended (exit code, signal, lost lease).
    """
    folder = sweep_folder(out, sweep)
    store = ClaimStore(folder, lease_seconds=float("inf"))
    try:
        states = store.states(len(sweep.points))
    finally:
        store.close()
    wanted = range(len(sweep.points)) if indices is None else indices
    left = [states[i] for i in wanted if states[i].state != FINISHED]
    if not left:
        return ""
    counts: dict[str, int] = {}
    for st in left:
        counts[st.state] = counts.get(st.state, 0) + 1
    line = (f"{len(left)} of {len(wanted)} points did not finish ("
            + ", ".join(f"{n} {state}" for state, n in counts.items()) + ")")
    first = next((st for st in left if st.state in (FAILED, CRASHED, KILLED)), None)
    if first is not None:
        log = os.path.join(folder, first.claim["log"]) if first.claim.get("log") else ""
        error = last_log_line(log) if log else ""
        line += (f"; point {first.index} ({run_id_for(sweep.key, first.index)}) {first.state} "
                 f"({_how_it_ended(first.end)}, attempt {first.gen + 1})")
        line += f": {error}" if error else ""
        line += f" [log: {log}]" if log else ""
    return line + "; run the same command again to retry them"


# -- Slurm ---------------------------------------------------------------------------------------


def sbatch_script(sweep: Sweep, out: str, array_tasks: int = 0, lease_seconds: float = 60.0) -> str:
    """A Slurm job array for this sweep: one point per task (array_tasks=0), or K draining workers.

    The grid order is W&B's, so task i runs the same point everywhere. Paths are absolute: the
    compute nodes must see this checkout, this Python and `out` (a shared filesystem).
    """
    n = len(sweep.points)
    per_point = array_tasks <= 0
    tasks = n if per_point else min(array_tasks, n)
    which = '--index "$SLURM_ARRAY_TASK_ID"' if per_point else "--workers 1"
    cmd = " ".join([shlex.quote(sys.executable), "-m", PROG, shlex.quote(os.path.abspath(sweep.path)),
                    "--out", shlex.quote(os.path.abspath(out)), "--lease-seconds", f"{lease_seconds:g}",
                    "--no-progress", which])
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={sweep.key}",
        f"#SBATCH --array=0-{tasks - 1}",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=1",
        f"# {n} points; " + ("one point per array task" if per_point else f"{tasks} workers draining the points"),
        f"cd {shlex.quote(os.getcwd())}",
        f"exec {cmd}",
        "",
    ])


# -- command line --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with lrscan's one-line errors: `pipeline.sweep: error: ...`, exit 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Run a W&B sweep YAML locally (offline), on one or many machines.")
    p.add_argument("yaml", help="sweep file, e.g. sweeps/lr_range.yaml")
    p.add_argument("--workers", type=int, default=None, help="points run at once (default: usable cores)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded commands and exit")
    p.add_argument("--count", type=int, default=None,
                   help="random: number of runs (default run_cap); grid: first N points (N >= 1)")
    p.add_argument("--seed", type=int, default=0, help="random: seed of the draws")
    p.add_argument("--index", type=int, action="append", default=None,
                   help="run only this point (repeatable); Slurm: --index $SLURM_ARRAY_TASK_ID")
    p.add_argument("--out", default=DEFAULT_OUT, help="root of sweep folders; share it between machines (default: runs)")
    p.add_argument("--lease-seconds", type=float, default=60.0,
                   help="a point whose worker is silent this long is taken over (at once if it died on this host)")
    p.add_argument("--term-timeout", type=float, default=30.0, help="seconds a stopped program gets to save before SIGKILL")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="WANDB_MODE of the runs (default: $WANDB_MODE or offline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-sbatch", action="store_true", help="print a Slurm job array script for this sweep and exit")
    p.add_argument("--array-tasks", type=int, default=0,
                   help="with --print-sbatch: K draining workers instead of one task per point")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.workers is not None and args.workers < 1:
            raise LrscanError(f"--workers {args.workers}: need at least 1")
        if args.count is not None and args.count < 1:
            raise LrscanError(f"--count {args.count}: need at least 1 "
                              "(grid: run its first N points; random: draw N points)")
        if args.array_tasks < 0:
            raise LrscanError(f"--array-tasks {args.array_tasks}: must be >= 0 (0: one array task per point)")
        if not math.isfinite(args.lease_seconds) or args.lease_seconds <= 0:
            raise LrscanError(f"--lease-seconds {args.lease_seconds}: must be a finite number > 0")
        if not math.isfinite(args.term_timeout) or args.term_timeout < 0:
            raise LrscanError(f"--term-timeout {args.term_timeout}: must be a finite number >= 0")
        sweep = load_sweep(args.yaml, count=args.count, seed=args.seed)
        if args.print_sbatch:
            check_sweep(sweep, os.environ)
            print(sbatch_script(sweep, args.out, args.array_tasks, args.lease_seconds), end="")
            return
        if args.dry_run:
            check_sweep(sweep, os.environ)
            folder = os.path.abspath(sweep_folder(args.out, sweep))
            print(f"# {sweep.key}: {len(sweep.points)} points, method {sweep.method}, folder {folder}")
            lines = []
            for index, point in enumerate(sweep.points):
                run_id = run_id_for(sweep.key, index)
                json_file = os.path.join(folder, "wandb", f"sweep-{sweep.key}", f"config-{run_id}.json")
                argv_, _ = build_command(sweep.command, sweep.program, point, json_file)
                lines.append(f"[{index}] {run_id}: {shlex.join(argv_)}")
            try:
                print("\n".join(lines), flush=True)
            except BrokenPipeError:  # `| head`
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        code = run_sweep(sweep, args.out, workers=args.workers, lease_seconds=args.lease_seconds,
                         wandb_mode=args.wandb_mode, indices=args.index, term_timeout_seconds=args.term_timeout,
                         progress=not args.no_progress)
    except LrscanError as e:
        exit_with(e, PROG)
    folder = sweep_folder(args.out, sweep)
    if code == 1:
        print(f"{PROG}: {sweep.key}: {unfinished_message(args.out, sweep, args.index)}", file=sys.stderr)
    print(f"{PROG}: {sweep.key}: manifest {os.path.join(folder, MANIFEST)}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
