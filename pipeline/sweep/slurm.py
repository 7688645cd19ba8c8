"""Slurm job arrays for a sweep: the sbatch script, and how an array task maps to the sweep's points.

    python -m pipeline.sweep sweeps/decay_grid.yaml --out /shared/runs --print-sbatch > decay.sbatch

Two shapes. One point per array task (the default): task i runs `--index i`, point i of the sweep,
and the grid order is W&B's, so task i runs the same point on every machine and in every
re-submission. Or K draining workers (`--array-tasks K`): each task is a one-worker runner that
claims whatever point is free, so K tasks drain any number of points. Either way the runners share
`--out` and coordinate through the sweep folder's claims, so a task that dies has its point taken
over by the next runner of that sweep. When packed sweeps (issue 15) come, a pack is the unit an
array task runs: `--index` will name a pack, and this mapping is where that is said.
"""

from __future__ import annotations

import os
import shlex
import sys

from pipeline.sweep.runner import PROG
from pipeline.sweep.spec import Sweep


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
