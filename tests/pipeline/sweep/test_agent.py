"""The real `wandb agent` (wandb.wandb_agent.Agent) runs our sweep YAML offline, its server calls patched.

As wandb's own unit tests do (tests/unit_tests/test_wandb_agent): only the calls that would reach the
W&B server are replaced: fetching the sweep (`_sweep_with_runs`, which returns our YAML), registering
the agent, the heartbeat (which hands out our grid points, one run command at a time), and the
`wandb.Api()` the agent rebuilds after each run. Everything else is real: the agent writes the sweep
parameter file, sets WANDB_SWEEP_ID/WANDB_RUN_ID/WANDB_SWEEP_PARAM_PATH, expands the YAML's command
with W&B's macros and spawns `python -m pipeline.train`, which writes an offline `.wandb` file.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import wandb
import wandb.apis.public.sweeps as wandb_sweeps
from wandb import wandb_agent

from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.runner import run_sweep
from lrscan.pipeline.sweep.spec import load_sweep
from tests.conftest import REPO
from tests.pipeline.sweep.fakes import wandb_run_args

pytestmark = pytest.mark.slow


class Heartbeat:
    """The server side of `agentHeartbeat`: hands out every point at the first call (they run side by side)."""

    def __init__(self, points: list[dict], program: str):
        self.commands = [{"type": "run", "run_id": f"agentrun{i}", "program": program,
                          "args": {k: {"value": v} for k, v in point.items()}} for i, point in enumerate(points)]
        self.calls = 0

    def __call__(self, api, agent_id, metrics, run_states):
        self.calls += 1
        commands, self.commands = self.commands, []
        return commands


def serve_the_sweep(monkeypatch, config: str, heartbeat: Heartbeat) -> SimpleNamespace:
    """The W&B server's three answers to the agent: the sweep (our YAML), an agent id, each heartbeat's commands.

    wandb 0.31 asks through `wandb.apis.public.sweeps`' helpers; older releases (down to lrscan's oldest
    supported) through the InternalApi the agent is handed and rebuilds after each run. Both are served.
    """
    server = SimpleNamespace(sweep=lambda sweep_id, specs, **kw: {"config": config},
                             register_agent=lambda host, **kw: {"id": "agent1"},
                             agent_heartbeat=lambda agent_id, metrics, run_states:
                             heartbeat(None, agent_id, metrics, run_states))
    if hasattr(wandb_sweeps, "_sweep_with_runs"):
        monkeypatch.setattr(wandb_sweeps, "_sweep_with_runs", lambda api, sweep_id, specs, **kw: {"config": config})
        monkeypatch.setattr(wandb_sweeps, "_register_agent", lambda api, host, **kw: {"id": "agent1"})
        monkeypatch.setattr(wandb_sweeps, "_agent_heartbeat", heartbeat)
    else:
        monkeypatch.setattr(wandb.apis, "InternalApi", lambda *a, **k: server)
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: object())  # the real one logs in to the server
    return server


def test_wandb_agent_runs_the_sweep_yaml_and_each_run_gets_exactly_its_parameters(tmp_path, words_file, monkeypatch):
    yaml_path = REPO / "sweeps" / "demo.yaml"
    sweep = load_sweep(yaml_path, count=2)
    points = list(sweep.points)

    # a machine without `python`: only a python3 (W&B's ${interpreter} would fail here; our YAMLs do not use it)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/bin:/usr/bin")
    monkeypatch.setenv("LRSCAN_DATA", str(words_file))
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")  # what `wandb agent ENTITY/PROJECT/sweep123` sets first
    for var in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # the agent sets these in os.environ: restore them after
        monkeypatch.setenv(var, "unset")
    monkeypatch.chdir(tmp_path)

    heartbeat = Heartbeat(points, sweep.program)
    config = yaml_path.read_text()
    server = serve_the_sweep(monkeypatch, config, heartbeat)
    monkeypatch.setattr(wandb_agent.Agent, "POLL_INTERVAL", 0.2)   # instead of 5 s between heartbeats

    agent = wandb_agent.Agent(server, multiprocessing.Queue(), sweep_id="sweep123", count=len(points))
    agent.run()

    assert agent._finished == len(points) and agent._failed == 0
    for i, point in enumerate(points):
        run_id = f"agentrun{i}"
        # the agent's parameter file, as `wandb agent` writes it
        assert (tmp_path / "wandb" / "sweep-sweep123" / f"config-{run_id}.yaml").is_file()
        [path] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
        rf = read_run_file(path)
        assert rf.run_id == run_id and rf.sweep_id == "sweep123" and rf.exit_code == 0
        assert {k: rf.config[k] for k in point} == point        # exactly the sweep's parameters
        assert rf.config["run_id"] == run_id
        np.testing.assert_array_equal(rf.history["step"], np.arange(point["steps"]))


# a program that only records the argv it was started with, under $REC_DIR/$WANDB_RUN_ID
RECORDER = ("import json, os, sys\n"
            "path = os.path.join(os.environ['REC_DIR'], os.environ['WANDB_RUN_ID'])\n"
            "open(path, 'w').write(json.dumps(sys.argv[1:]))\n")


def test_wandb_agent_and_the_local_runner_launch_the_same_command_lines(tmp_path, monkeypatch):
    """lr_range_pairs.yaml (a mapping-valued parameter) with its command pointed at a recorder: the argv
    each point's program gets from the real agent equals the one it gets from `pipeline.sweep`."""
    text = (REPO / "sweeps" / "lr_range_pairs.yaml").read_text()
    assert "  - -m\n  - lrscan.pipeline.train\n" in text
    yaml_path = tmp_path / "pairs.yaml"
    yaml_path.write_text(text.replace("  - -m\n  - lrscan.pipeline.train\n", "  - record.py\n"))
    (tmp_path / "record.py").write_text(RECORDER)
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    monkeypatch.setenv("REC_DIR", str(rec_dir))
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    for var in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.setenv(var, "unset")
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(yaml_path)
    assert len(sweep.points) > 1

    # the agent, handed each point as W&B's server would (built from the YAML as wandb reads it)
    heartbeat = Heartbeat([], sweep.program)
    heartbeat.commands = [{"type": "run", "run_id": f"agentrun{i}", "program": sweep.program,
                           "args": wandb_run_args(yaml_path, point)} for i, point in enumerate(sweep.points)]
    config = yaml_path.read_text()
    server = serve_the_sweep(monkeypatch, config, heartbeat)
    monkeypatch.setattr(wandb_agent.Agent, "POLL_INTERVAL", 0.2)
    agent = wandb_agent.Agent(server, multiprocessing.Queue(), sweep_id="sweep123", count=len(sweep.points))
    agent.run()
    assert agent._finished == len(sweep.points) and agent._failed == 0

    # the local runner
    assert run_sweep(sweep, "runs", workers=2, poll_seconds=0.05, progress=False) == 0

    for i in range(len(sweep.points)):
        by_agent = json.loads((rec_dir / f"agentrun{i}").read_text())
        by_runner = json.loads((rec_dir / run_id_for(sweep.key, i)).read_text())
        assert by_runner == by_agent
    assert json.loads((rec_dir / "agentrun0").read_text())[0] == "--lre_range={'lre_min': -3.0, 'lre_max': 0.0}"
