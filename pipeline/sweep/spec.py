"""A sweep YAML read, checked and expanded into points: the `Sweep` the rest of the room works from.

The file is a W&B sweep YAML, unchanged: the same file runs under `wandb sweep` + `wandb agent`.
Only its top-level keys are checked here (W&B's schema), then its `parameters` are expanded as W&B's
open-source engine does (`pipeline.sweep.grid`). A sweep's key, `<yaml stem>-<hash of method,
parameters, program, command>`, names its folder and its runs' group: an edited YAML is a new sweep,
a new comment is not.

A sweep that runs lrscan's own trainer (`is_trainer`) has every point parsed as the trainer will
parse it (`check_trainer_points`), so a misspelt parameter stops the sweep before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep import grid
from lrscan.pipeline.yamlfile import read_yaml_text_and_mapping

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
        raise LrscanError(f"{path}: program must be a string (a path such as {keys.TRAINER_PROGRAM}), got {program!r}")
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
        points = grid.grid_points(parameters)
        if run_cap is not None:
            points = points[:run_cap]
        if count is not None:
            points = points[:count]
    else:
        n = count if count is not None else run_cap
        if n is None:
            raise LrscanError(f"{path}: method: random runs forever under W&B; "
                              "give run_cap in the file or --count here")
        points = grid.random_points(parameters, n, seed)

    # the key follows what runs, so comments, key order and the name do not make a new sweep
    identity = {"method": method, "parameters": parameters, "program": program, "command": command}
    if method == "random":
        identity.update(seed=seed, count=len(points))
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    # the key names the sweep's folder, its runs' group and ids: the file's name with what a run id may not hold
    # (dots, spaces, punctuation) as "_", so a file such as "lr range v1.2.yaml" runs (a key that was valid before
    # is unchanged, so its sweep resumes)
    stem = re.sub(r"[^\w-]", "_", Path(path).stem)[:40]
    key = f"{stem}-{digest}"
    return Sweep(path=path, text=text, config=config, name=name, key=key, method=method, program=program,
                 command=tuple(command), points=tuple(points), seed=seed)


def is_trainer(sweep: Sweep) -> bool:
    """Does this sweep run lrscan's own trainer (so its parameters must be TrainConfig fields)?"""
    cmd = list(sweep.command)
    by_module = any(a == "-m" and b in keys.TRAINER_MODULES for a, b in zip(cmd, cmd[1:]))
    by_program = "${program}" in cmd and os.path.normpath(sweep.program) == os.path.normpath(keys.TRAINER_PROGRAM)
    return by_module or by_program


def check_trainer_points(sweep: Sweep) -> None:
    """Parse every point exactly as the trainer will (its `${args}` through `parse_args`)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from lrscan.pipeline.config import parse_args

    for index, point in enumerate(sweep.points):
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args"]
        try:
            parse_args(args)
        except LrscanError as e:
            raise LrscanError(f"{sweep.path}: point {index} {json.dumps(point)}: {e}") from None
