"""A W&B sweep server's side of `wandb agent`, in a folder that agents of several processes (Slurm jobs) share.

The real `wandb` command line runs, its `wandb agent` included; only the calls that would reach the W&B
server are answered here, as tests/pipeline/sweep/test_agent.py does in-process: fetching the sweep (our
YAML), registering the agent, and the heartbeat. The heartbeat follows the server's rules as W&B documents
them: an agent with a run going gets no new command; a run that ended with a non-zero exit code after
`run.mark_preempting()` goes back to the sweep's queue and the next agent that asks is handed it as a
`resume` command under its own run id; otherwise the next point, then `exit` once nothing is left. Whether
a run was marked preempting is read from its newest offline `.wandb` file (its `preempting` record).

`wandb_command(bin_dir, server)` writes a `wandb` executable that does all this in front of the real CLI.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from tests.conftest import REPO

STATE = "state.json"
POLL_SECONDS = 0.5  # instead of the agent's 5 s between heartbeats


def write_server(folder: Path, yaml_path: Path, commands: list[dict]) -> Path:
    """A server folder for the sweep made from `yaml_path`, handing out `commands` ({program, args}) in order."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.yaml").write_text(yaml_path.read_text())
    (folder / STATE).write_text(json.dumps({"points": commands, "next": 0, "issued": {}, "queue": [], "log": []}))
    return folder


def read_log(folder: Path) -> list[list]:
    """What the server did, in order: [event, run id, agent id, detail]."""
    return json.loads((folder / STATE).read_text())["log"]


def wandb_command(bin_dir: Path, server: Path) -> Path:
    """A `wandb` executable in bin_dir: the real wandb CLI with its server calls answered from `server`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "wandb"
    path.write_text(f"#!{sys.executable}\n"
                    "import sys\n"
                    f"sys.path.insert(0, {str(REPO)!r})\n"
                    "from tests.pipeline.sweep.agent_server import serve\n"
                    f"serve({str(server)!r})\n"
                    "from wandb.cli.cli import cli\n"
                    "cli(prog_name='wandb')\n")
    path.chmod(0o755)
    return path


def serve(folder: str) -> None:
    """Answer this process' `wandb agent` server calls from `folder` (called before the CLI runs)."""
    import wandb
    import wandb.apis.public.sweeps as wandb_sweeps
    from wandb import wandb_agent
    from wandb.sdk import wandb_login

    config = (Path(folder) / "sweep.yaml").read_text()
    agent_id = f"agent-{os.getpid()}"
    # wandb 0.31 asks through `wandb.apis.public.sweeps`' helpers; older releases (down to lrscan's oldest
    # supported) through the InternalApi the agent builds, after the CLI asked whether it is logged in
    server = SimpleNamespace(
        is_authenticated=True, sweep=lambda sweep_id, specs, **kw: {"config": config},
        register_agent=lambda host, **kw: {"id": agent_id},
        agent_heartbeat=lambda agent_id, metrics, run_states: heartbeat(
            Path(folder), agent_id, run_states, Path(os.environ["WANDB_DIR"])))
    if hasattr(wandb_sweeps, "_sweep_with_runs"):
        wandb_sweeps._sweep_with_runs = lambda api, sweep_id, specs, **kw: server.sweep(sweep_id, specs)
        wandb_sweeps._register_agent = lambda api, host, **kw: server.register_agent(host)
        wandb_sweeps._agent_heartbeat = lambda api, *args: server.agent_heartbeat(*args)
    else:
        import wandb.cli.cli as wandb_cli

        wandb.apis.InternalApi = lambda *a, **k: server
        wandb_cli._get_cling_api = lambda *a, **k: server
    wandb_login._login = lambda *a, **k: True
    wandb.Api = lambda *a, **k: object()  # the real one logs in to the server
    wandb_agent.Agent.POLL_INTERVAL = POLL_SECONDS


def heartbeat(folder: Path, agent_id: str, run_states: dict, wandb_dir: Path) -> list[dict]:
    with open(folder / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads((folder / STATE).read_text())
        commands = _next_commands(state, agent_id, run_states, wandb_dir)
        (folder / STATE).write_text(json.dumps(state))
    return commands


def _next_commands(state: dict, agent_id: str, run_states: dict, wandb_dir: Path) -> list[dict]:
    # runs that ended: this agent's that it no longer runs, and any whose newest segment has its exit (the real
    # server hears that from the run itself: an agent that stopped, or reached --count, heartbeats no more)
    for run_id, owner in list(state["issued"].items()):
        exit_code, preempting = run_end(wandb_dir, run_id)
        if run_id in run_states or (owner != agent_id and exit_code is None):
            continue
        del state["issued"][run_id]
        if preempting and exit_code not in (0, None):
            state["queue"].append(run_id)
            state["log"].append(["requeued", run_id, owner, exit_code])
        else:
            state["log"].append(["ended", run_id, owner, exit_code])
    if run_states:
        return []
    if state["queue"]:
        run_id, kind = state["queue"].pop(0), "resume"
        point = state["points"][int(run_id.removeprefix("agentrun"))]
    elif state["next"] < len(state["points"]):
        run_id, kind = f"agentrun{state['next']}", "run"
        point = state["points"][state["next"]]
        state["next"] += 1
    elif not state["issued"]:
        state["log"].append(["exit", "", agent_id, None])
        return [{"type": "exit"}]
    else:
        return []
    state["issued"][run_id] = agent_id
    state["log"].append([kind, run_id, agent_id, None])
    return [{"type": kind, "run_id": run_id, **point}]


def run_end(wandb_dir: Path, run_id: str) -> tuple[int | None, bool]:
    """The exit code of a run's newest offline segment, and whether it was marked preempting."""
    from lrscan.pipeline.runlog import read_run_file
    from lrscan.pipeline.runlog.framing import HEADER, Scan, record_class, scan

    segments = sorted(wandb_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    if not segments:
        return None, False
    preempting = False
    for payload in scan(segments[-1].read_bytes(), len(HEADER), Scan([], [], 0, False), True).others:
        record = record_class()()
        record.ParseFromString(payload)
        preempting |= record.WhichOneof("record_type") == "preempting"
    return read_run_file(segments[-1]).exit_code, preempting
