"""How a point is launched: its argv (W&B's macros), environment and run id, and the checks before anything starts.

Each command line is built with W&B's macro semantics (wandb's own `create_sweep_command` and
`create_sweep_command_args`, then the assembly of `wandb_agent.Agent._command_run`), so a point runs
the same argv here as under `wandb agent`. Nothing here knows what the program is: any
`program`/`command` runs.

Each point gets the identity `wandb agent` would give it, through the environment: WANDB_DIR (the
sweep folder), WANDB_RUN_ID (`<sweep key>-<index>`, stable: a retry resumes the same run),
WANDB_RUN_GROUP (the sweep key), WANDB_TAGS (the sweep name), WANDB_MODE (offline unless told
otherwise), WANDB_RESUME=allow on retries, LRSCAN_SWEEP_INDEX. WANDB_SWEEP_ID is never set: offline,
no server-side sweep exists. A pack's process (`pack_env`) gets the same without the per-point ones.

`${interpreter}` is W&B's literal `python`, which some machines lack, so lrscan's YAMLs say `python3`.
The children's PATH has the directory of the runner's own interpreter first, so `python3` (and
`python`) run the interpreter that runs the sweep, venv or not; under `wandb agent`, activate the
environment so `python3` is lrscan's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep.spec import Sweep, check_trainer_points, is_trainer


def run_id_for(sweep_key: str, index: int) -> str:
    """A point's wandb run id: stable, so a retry resumes the same run."""
    return f"{sweep_key}-{index:04d}"


def args_json_path(folder: str, sweep_key: str, run_id: str) -> str:
    """A point's `${args_json_file}`: where `wandb agent` puts it under WANDB_DIR (here the sweep folder)."""
    return os.path.join(os.path.abspath(folder), "wandb", f"sweep-{sweep_key}", f"config-{run_id}.json")


def build_command(template: Sequence[str], program: str, point: Mapping[str, Any],
                  args_json_file: str) -> tuple[list[str], str]:
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
    # inherited from a `wandb agent` above us, these would tie the run to a server-side sweep that is not this
    # one; a resume is asked for on retries only
    env.pop("WANDB_SWEEP_ID", None)
    env.pop("WANDB_SWEEP_PARAM_PATH", None)
    env.pop("WANDB_RESUME", None)
    # a wandb service of the process above us (a notebook's, a test's) would hold the point's run: a point
    # killed and resumed would find its run id "in use" there. wandb agent drops it for its children too
    env.pop("WANDB_SERVICE", None)
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


def pack_env(environ: Mapping[str, str], *, folder: str, sweep: Sweep, wandb_mode: str) -> dict[str, str]:
    """The environment of a pack's process: a point's, without what names one point (the pack's points file
    gives each member its run id; a pack continues every member that has a checkpoint)."""
    env = point_env(environ, folder=folder, sweep=sweep, index=0, run_id="", retry=False, wandb_mode=wandb_mode)
    for name in ("WANDB_RUN_ID", "LRSCAN_SWEEP_INDEX", "WANDB_RESUME"):
        env.pop(name, None)
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
        raise LrscanError(f"{sweep.path}: program {sweep.program!r} does not exist "
                          f"(paths are relative to {os.getcwd()})")
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
