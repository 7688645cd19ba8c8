"""A point's command line, as `wandb agent` builds it, and its environment."""

from __future__ import annotations

import json
import os
import sys

from lrscan.pipeline import keys
from lrscan.pipeline.sweep.command import build_command, child_path, point_env, run_id_for
from lrscan.pipeline.sweep.spec import load_sweep
from tests.conftest import REPO
from tests.pipeline.sweep.fakes import wandb_run_args, write_sweep


def test_every_macro_expands_as_wandb_agent_does(monkeypatch):
    monkeypatch.setenv("LRSCAN_TEST_PY", "python3")
    template = ["${env}", "${envvar:LRSCAN_TEST_PY}", "${interpreter}", "${program}", "${args}",
                "${args_no_hyphens}", "${args_no_boolean_flags}", "${args_json}", "${args_json_file}",
                "${no_such_macro}", "x${envvar:NOT_SET_X}"]
    point = {"decay_steps": [100000], "flag": False, "lre": -3.0, "on": True}
    argv, args_json = build_command(template, "train.py", point, "/s/config-r.json")
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


def test_a_mapping_value_is_launched_in_the_yaml_key_order_as_wandb_renders_it():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    path = REPO / "sweeps" / "lr_range_pairs.yaml"
    sweep = load_sweep(path)
    assert len(sweep.points) > 1
    for point in sweep.points:
        argv, _ = build_command(sweep.command, sweep.program, point, "unused.json")
        theirs = create_sweep_command_args({"args": wandb_run_args(path, point)})["args"]
        assert argv[argv.index(keys.TRAINER_MODULE) + 1:] == theirs
    first, _ = build_command(sweep.command, sweep.program, sweep.points[0], "unused.json")
    assert "--lre_range={'lre_min': -3.0, 'lre_max': 0.0}" in first  # as written in the YAML, not sorted


def test_a_points_environment_is_its_identity_with_no_server_sweep_and_this_python_first(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "x: {values: [1, 2]}\n", extra="name: fakename\n"))
    here = os.path.dirname(sys.executable)
    # what a shell inside a `wandb agent` run would pass on: a server sweep, a resume, this Python later on PATH,
    # and the wandb service of a process that called wandb.init (a notebook)
    outer = {"HOME": "/home/me", "PATH": f"/usr/bin{os.pathsep}{here}{os.pathsep}/bin", "WANDB_SWEEP_ID": "abc",
             "WANDB_SWEEP_PARAM_PATH": "/x/config.yaml", "WANDB_RESUME": "must", "WANDB_MODE": "online",
             "WANDB_SERVICE": "3-123-unix-/tmp/wandb-123.sock"}
    run_id = run_id_for(sweep.key, 1)
    env = point_env(outer, folder="runs/f", sweep=sweep, index=1, run_id=run_id, retry=False, wandb_mode="offline")
    assert env == {"HOME": "/home/me", "PATH": os.pathsep.join([here, "/usr/bin", "/bin"]),
                   "WANDB_DIR": os.path.abspath("runs/f"), "WANDB_RUN_ID": f"{sweep.key}-0001",
                   "WANDB_RUN_GROUP": sweep.key, "WANDB_TAGS": "fakename", "WANDB_MODE": "offline",
                   "LRSCAN_SWEEP_INDEX": "1"}
    retry = point_env(outer, folder="runs/f", sweep=sweep, index=1, run_id=run_id, retry=True, wandb_mode="offline")
    assert retry == {**env, "WANDB_RESUME": "allow"}
    assert child_path({}).split(os.pathsep)[0] == here  # no PATH at all: still this Python first
