"""Slurm job arrays for a sweep: the sbatch script, and how an array task maps to the sweep's points or packs.

    python -m pipeline.sweep sweeps/decay_grid.yaml --out /shared/runs --print-sbatch > decay.sbatch

Two shapes. One unit per array task (the default): without packing (`--pack 1`, or points that cannot
be packed), task i runs `--index i`, point i of the sweep; with packing, task t runs pack t of
`pipeline.sweep.packs.pack_plan`: the sweep's points in W&B's order, grouped by pack key in order of
first appearance, `--pack` at a time (the script lists each task's points and passes them as
`--index a --index b ...`; the runner packs the given points among themselves). The grid order is
W&B's, so task t runs the same points on every machine and in every re-submission. Or K draining
workers (`--array-tasks K`): each task is a one-worker runner that claims whatever is free, a pack
of up to `--pack` compatible points at a time, so K tasks drain any number of points. Either way the
runners share `--out` and coordinate through the sweep folder's claims (one per point), so a task
that dies has its points taken over by the next runner of that sweep.

A cluster's own lines (partition, GPUs, time limit, account, memory, ...) come in as `SbatchOptions`,
shared with the `wandb agent` script (pipeline/sweep/agent_sbatch.py):

    python -m pipeline.sweep sweeps/decay_grid.yaml --print-sbatch --partition gpu --gpus 1 --time 2:00:00 \
        --sbatch=--account=abc --sbatch=--mem=8G
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep.packs import pack_keys, pack_plan
from lrscan.pipeline.sweep.spec import Sweep

# sbatch's one-letter options, by their long names: an extra line `-p gpu` is the partition too
_SHORT = {"-A": "--account", "-a": "--array", "-c": "--cpus-per-task", "-G": "--gpus", "-J": "--job-name",
          "-n": "--ntasks", "-N": "--nodes", "-o": "--output", "-e": "--error", "-p": "--partition", "-q": "--qos",
          "-t": "--time"}
# Slurm's time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]
_TIME = re.compile(r"(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)")


@dataclass(frozen=True)
class SbatchOptions:
    """What a cluster adds to a generated script: `#SBATCH` lines for the partition, the GPUs, the time
    limit, and any other sbatch option as written on sbatch's command line (`--account=abc`, `--mem=8G`,
    `--gres=gpu:1`, `-q long`). An extra line replaces the script's own line for the same option."""

    partition: str = ""
    gpus: str = ""            # --gpus: a count, or type:count ("a100:2")
    time: str = ""            # --time, in Slurm's format ("90", "4:00:00", "1-12")
    extra: tuple[str, ...] = ()

    def lines(self) -> list[tuple[str, str]]:
        """(option name, #SBATCH line) for each option given, in order: partition, gpus, time, extra."""
        named = [("--partition", self.partition), ("--gpus", self.gpus), ("--time", self.time)]
        return ([(name, f"#SBATCH {name}={value}") for name, value in named if value]
                + [(option_name(line), f"#SBATCH {line}") for line in self.extra])


GPU_OPTIONS = ("--gpus", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket")


def asks_for_gpus(options: SbatchOptions) -> bool:
    """Do these lines ask Slurm for GPUs (--gpus and its kin, or a gpu --gres)?"""
    return any(name in GPU_OPTIONS or (name == "--gres" and "gpu" in line) for name, line in options.lines())


def cpu_only_note(yaml_path: str, devices: set[str]) -> str:
    """A note for a job that asks for GPUs while every run of its sweep trains on the CPU ("" otherwise)."""
    if devices != {"cpu"}:
        return ""
    return (f"note: the job asks for GPUs, but {yaml_path} trains on the CPU (the trainer's device defaults to cpu): "
            "add `device: {value: cuda}` (or auto) to its parameters")


def option_name(line: str) -> str:
    """The long name of the sbatch option an extra line sets: `--mem=8G` -> --mem, `-p gpu` -> --partition."""
    head = line.split("=", 1)[0].split(None, 1)[0]
    if not head.startswith("--") and len(head) > 2:  # `-pgpu`
        head = head[:2]
    return _SHORT.get(head, head)


def time_seconds(text: str) -> int:
    """A Slurm time limit in seconds; LrscanError naming the formats if it is not one."""
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise LrscanError(f"--time {text!r}: not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)")
    days, d_hours, d_minutes, d_seconds, minutes, m_seconds, m_third = m.groups()
    if days is not None:
        return ((int(days) * 24 + int(d_hours)) * 60 + int(d_minutes or 0)) * 60 + int(d_seconds or 0)
    if m_third is not None:  # HH:MM:SS
        return (int(minutes) * 60 + int(m_seconds)) * 60 + int(m_third)
    return int(minutes) * 60 + int(m_seconds or 0)


def check_options(options: SbatchOptions, owned: dict[str, str]) -> None:
    """One line naming what is wrong: a value that is not one line, an extra line that is not an option,
    an option given twice, or one the script must set itself (`owned`: option -> why)."""
    for name, value in (("--partition", options.partition), ("--gpus", options.gpus), ("--time", options.time)):
        if value and (not value.strip() or any(c.isspace() for c in value)):
            raise LrscanError(f"{name} {value!r}: one word, no spaces")
    if options.time:
        time_seconds(options.time)
    seen: dict[str, str] = {}
    for name, line in options.lines():
        text = line.removeprefix("#SBATCH ")
        if "\n" in text or "\r" in text or not text.startswith("-") or name in ("-", "--"):
            raise LrscanError(f"--sbatch {text!r}: an sbatch option on one line, as on sbatch's command line "
                              "(e.g. --sbatch=--account=abc)")
        if name in owned:
            raise LrscanError(f"--sbatch {text!r}: {owned[name]}")
        if name in seen:
            raise LrscanError(f"{name} given twice ({seen[name]!r} and {text!r})")
        seen[name] = text


def with_options(own: list[str], options: SbatchOptions) -> list[str]:
    """The script's own `#SBATCH` lines, each replaced by the user's line for the same option, then the
    user's other lines."""
    theirs = dict(options.lines())
    out = [theirs.pop(option_name(line.removeprefix("#SBATCH ")), line) for line in own]
    return out + list(theirs.values())


ARRAY_OWNED = {"--array": "the array is the sweep's (one task per point or pack; --array-tasks K for K workers)"}


def sbatch_script(sweep: Sweep, out: str, array_tasks: int = 0, lease_seconds: float = 60.0, pack: int = 1,
                  options: SbatchOptions = SbatchOptions()) -> str:
    """A Slurm job array for this sweep: one point or pack per task (array_tasks=0), or K draining workers.

    The grid order is W&B's, so task t runs the same points everywhere. Paths are absolute: the
    compute nodes must see this checkout, this Python and `out` (a shared filesystem). `options`: the
    cluster's lines (checked with `check_options` first).
    """
    check_options(options, ARRAY_OWNED)
    n = len(sweep.points)
    per_unit = array_tasks <= 0
    plan = pack_plan(pack_keys(sweep).keys, pack) if pack > 1 else [[i] for i in range(n)]
    packed = any(len(p) > 1 for p in plan)
    if per_unit:
        tasks = len(plan)
        which = '--workers 1 "${INDEX[@]}"' if packed else '--index "$SLURM_ARRAY_TASK_ID"'
    else:
        tasks = min(array_tasks, n)
        which = "--workers 1"
    cmd = " ".join([shlex.quote(sys.executable), "-m", "lrscan.pipeline.sweep",
                    shlex.quote(os.path.abspath(sweep.path)),
                    "--out", shlex.quote(os.path.abspath(out)), "--lease-seconds", f"{lease_seconds:g}",
                    "--pack", str(pack), "--no-progress", which])
    lines = ["#!/bin/bash", *with_options([
        f"#SBATCH --job-name={sweep.key}",
        f"#SBATCH --array=0-{tasks - 1}",
        "#SBATCH --ntasks=1",
        # a pack's process trains, its logging process writes the runs: two busy processes
        f"#SBATCH --cpus-per-task={2 if packed else 1}",
    ], options)]
    if per_unit and packed:
        packs = f"{len(plan)} pack{'s' if len(plan) != 1 else ''}"
        lines += [f"# {n} points in {packs} of up to {pack}; array task t runs pack t, these points:",
                  "PACKS=(" + " ".join("'" + " ".join(map(str, p)) + "'" for p in plan) + ")",
                  "INDEX=()",
                  'for i in ${PACKS[$SLURM_ARRAY_TASK_ID]}; do INDEX+=(--index "$i"); done']
    elif per_unit:
        lines.append(f"# {n} points; one point per array task")
    else:
        lines.append(f"# {n} points; {tasks} workers draining them" + (f", up to {pack} per pack" if pack > 1 else ""))
    lines += [f"cd {shlex.quote(os.getcwd())}", f"exec {cmd}", ""]
    return "\n".join(lines)
