"""Every YAML in sweeps/ is a valid W&B sweep for lrscan's trainer, and runs where `python` is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrscan.pipeline import keys
from lrscan.pipeline.config import field_names
from lrscan.pipeline.sweep.command import build_command
from lrscan.pipeline.sweep.grid import flatten, grid_size
from lrscan.pipeline.sweep.spec import check_trainer_points, is_trainer, load_sweep
from tests.conftest import REPO

YAMLS = sorted((REPO / "sweeps").glob("*.yaml"))
# what the trainer logs per step or writes to the summary: a sweep's metric must be one of these
LOGGED = {keys.LR, keys.LRE, keys.LOSS, keys.LOG10_LOSS, keys.SMOOTH_LOSS, keys.DEV_LOSS, keys.TRAIN_LOSS,
          keys.TEST_LOSS, keys.BEST_SMOOTH_LOSS, keys.FINAL_STEP, keys.STOP_STEP, keys.DIVERGED_AT_STEP}


def test_the_sweeps_folder_holds_yaml_only_and_the_expected_files():
    names = {p.name for p in (REPO / "sweeps").iterdir()}
    assert {"lr_range.yaml", "decay_grid.yaml", "demo.yaml"} <= names
    assert all(n.endswith(".yaml") for n in names), names  # never a Python package named `sweeps`


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_yaml_is_a_valid_sweep_of_the_trainer(path: Path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, "the first line says what question the sweep answers"
    config = yaml.safe_load(text)
    sweep = load_sweep(path)  # parses, checks the W&B keys, expands

    # the real entrypoint, run as a module (works from the repo root whether or not lrscan is installed)
    assert config["program"] == keys.TRAINER_PROGRAM and (REPO / config["program"]).is_file()
    assert is_trainer(sweep) and "-m" in config["command"] and keys.TRAINER_MODULE in config["command"]
    assert "${interpreter}" not in config["command"]  # W&B's ${interpreter} is the literal `python`

    # every parameter is a TrainConfig field, and every point parses as the trainer will parse it
    # (or a coupled parameter: every value a mapping of fields, e.g. hand-picked lre_min/lre_max pairs)
    leaves = flatten(config["parameters"])
    for p in leaves:
        if p.name not in field_names():
            values = config["parameters"][p.name]["values"]
            assert all(isinstance(v, dict) and set(v) <= set(field_names()) for v in values), p.name
    check_trainer_points(sweep)

    assert config["metric"]["name"] in LOGGED

    # the size the file announces in its `# points: N` line
    announced = int(re.search(r"^# points: (\d+)", text, re.M).group(1))
    if config["method"] == "grid":
        assert grid_size(config["parameters"]) == announced == len(sweep.points)
    else:
        assert config["method"] == "random" and config["run_cap"] == announced == len(sweep.points)


def test_all_sweeps_share_one_command():
    commands = {tuple(yaml.safe_load(p.read_text())["command"]) for p in YAMLS}
    assert commands == {("${env}", "python3", "-m", "lrscan.pipeline.train", "${args}")}


@pytest.mark.slow
def test_the_command_runs_where_only_python3_is_on_path(tmp_path):
    """A machine without `python` (Debian's default): PATH holds only a python3, as `wandb agent` would see it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a wrapper, not a symlink: a symlink outside the venv would lose the venv's site-packages
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    sweep = load_sweep(REPO / "sweeps" / "demo.yaml")
    argv, _ = build_command(sweep.command, sweep.program, {}, "unused.json")
    env = {"PATH": f"{bin_dir}:/bin:/usr/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run([*argv, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--lre_min" in done.stdout
    # W&B's default command would not start on that machine: its ${interpreter} is `python`
    default, _ = build_command(["${env}", "${interpreter}", "${program}", "${args}"], keys.TRAINER_PROGRAM, {}, "x")
    if not shutil.which("python", path=env["PATH"]):  # (some machines do have /usr/bin/python)
        failed = subprocess.run(default, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert failed.returncode == 127 and "python" in failed.stderr
